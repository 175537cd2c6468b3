"""The on-disk format of an expert trajectory (one file per expert).

A trajectory is what an expert network went through while training on real data: its
parameters at initialisation (epoch 0) and after every epoch, stored as one *flat* vector per
snapshot, plus everything needed to use it safely later:

=================  =========================================================================
key                meaning
=================  =========================================================================
format, version    ``"lit-distill/trajectory"``, ``1``
arch, arch_kwargs  registered architecture name and its keyword arguments (``build_model``)
num_classes        classifier outputs
image_shape        ``[channels, height, width]`` of the network input
dataset            dataset name (``ImageDataModule.name``) and ``zca`` (whether inputs were
                   ZCA-whitened)
param_names        parameter names, in the order they are concatenated in ``params``
param_shapes       their shapes
buffer_names/...   same for floating-point buffers (BatchNorm running statistics), may be empty
epochs             epoch of each stored snapshot: ``0..M`` (full) or ``[0, M]`` (convex)
num_epochs         ``M``, the number of epochs the expert was trained for
params             ``(S, P)`` tensor, one row per stored snapshot (float32, float16 or bfloat16)
buffers            ``(S, B)`` tensor (float32) or ``None``
test_accuracy      real-test accuracy after each epoch ``1..M`` (``None`` where not measured)
line_position      MCT's constants: per epoch ``0..M``, the projection of the SGD snapshot onto
                   the straight line from epoch 0 to epoch M (``0`` ... ``1``); empty if unknown
line_distance      per epoch, the distance of the SGD snapshot from that line
line_length        the distance between the first and last snapshots
seed, recipe       how the expert was trained
checksum           CRC32 of the raw bytes of ``params`` (and ``buffers``): detects corruption
=================  =========================================================================

Files are written atomically (temporary file, fsync, rename): a crash never leaves a truncated
file under the final name. Reading uses ``torch.load(weights_only=True)``: no code is executed.
It memory-maps the file (``mmap=True``): a folder of experts is never read into memory whole,
only the snapshots a distillation iteration uses are copied out (and to the accelerator).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lit_distill.errors import TrajectoryCorruptError, TrajectoryMismatchError
from lit_distill.fileio import checksum, write_atomic
from lit_distill.models import model_options
from lit_distill.trajectory.convex import LineConstants, line_constants

FORMAT = "lit-distill/trajectory"
VERSION = 1
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def named_state(module: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Parameters and floating-point buffers of ``module`` by name (integer counters skipped)."""
    params = dict(module.named_parameters())
    buffers = {k: b for k, b in module.named_buffers() if b.is_floating_point()}
    return params, buffers


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one detached float32 vector on the CPU."""
    if not tensors:
        return torch.zeros(0)
    return torch.cat([t.detach().reshape(-1).float().cpu() for t in tensors])


@dataclass
class Trajectory:
    """One expert's trajectory: flat parameter snapshots plus the metadata that produced them."""

    arch: str
    arch_kwargs: dict[str, Any]
    num_classes: int
    image_shape: list[int]
    dataset: str
    param_names: list[str]
    param_shapes: list[list[int]]
    epochs: list[int]
    num_epochs: int
    params: Tensor
    buffer_names: list[str] = field(default_factory=list)
    buffer_shapes: list[list[int]] = field(default_factory=list)
    buffers: Tensor | None = None
    test_accuracy: list[float | None] = field(default_factory=list)
    line_position: list[float] = field(default_factory=list)
    line_distance: list[float] = field(default_factory=list)
    line_length: float | None = None
    zca: bool = False
    seed: int = 0
    recipe: dict[str, Any] = field(default_factory=dict)

    @property
    def num_snapshots(self) -> int:
        return self.params.shape[0]

    @property
    def num_params(self) -> int:
        return self.params.shape[1]

    @property
    def convex(self) -> bool:
        """Whether only the first and last snapshots are kept (what MCT needs)."""
        return self.epochs == [0, self.num_epochs] and self.num_epochs > 1

    def line(self) -> LineConstants:
        """MCT's constants: stored ones, or computed from the snapshots of a full file."""
        if self.line_position:
            return LineConstants(self.line_position, self.line_distance, self.line_length)
        if self.epochs != list(range(self.num_epochs + 1)):
            raise ValueError("this convex trajectory was stored without its line constants")
        return line_constants(self.params)

    def describe(self, data: bool = True) -> str:
        kwargs = ", ".join(f"{k}={v}" for k, v in sorted(self.arch_kwargs.items()))
        facts = f" on {self.dataset}{' (ZCA)' if self.zca else ''}, {self.num_classes} classes, "
        facts += f"input {tuple(self.image_shape)}"
        return f"{self.arch}({kwargs})" + (facts if data else "")

    # ------------------------------------------------------------------ writing / reading
    def save(self, path: str | Path) -> Path:
        """Write atomically to ``path`` (parent folders are created)."""
        payload = {"format": FORMAT, "version": VERSION, **asdict(self)}
        payload["checksum"] = checksum(self.params, self.buffers)
        return write_atomic(Path(path), lambda f: torch.save(payload, f))

    @classmethod
    def load(cls, path: str | Path) -> Trajectory:
        """Read and verify a trajectory file; raise :class:`TrajectoryCorruptError` if unusable.

        The snapshots stay memory-mapped: they are read from disk (or the page cache) when used.
        """
        path = Path(path)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except FileNotFoundError:
            raise
        except Exception as err:  # truncated zip, garbage, foreign pickle...
            raise TrajectoryCorruptError(
                f"{path} is not a readable lit-distill trajectory ({type(err).__name__}: {err}). "
                "Delete it and train the expert again (completed experts are skipped)."
            ) from err
        return cls._from_payload(payload, path)

    @classmethod
    def _from_payload(cls, payload: Any, path: Path) -> Trajectory:
        def corrupt(why: str) -> TrajectoryCorruptError:
            return TrajectoryCorruptError(
                f"{path}: {why}. Delete it and train the expert again (completed experts are "
                "skipped)."
            )

        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise corrupt("not a lit-distill trajectory file")
        if payload.get("version") != VERSION:
            raise corrupt(f"format version {payload.get('version')}, this release reads {VERSION}")
        stored_checksum = payload.pop("checksum", None)
        payload = {k: v for k, v in payload.items() if k not in ("format", "version")}
        try:
            traj = cls(**payload)
        except TypeError as err:
            raise corrupt(f"unexpected fields ({err})") from err
        if stored_checksum != checksum(traj.params, traj.buffers):
            raise corrupt("checksum mismatch: the stored parameters were altered or damaged")
        traj._check_consistent(corrupt)
        return traj

    def _check_consistent(self, corrupt) -> None:
        sizes = [int(torch.Size(s).numel()) for s in self.param_shapes]
        if len(sizes) != len(self.param_names) or sum(sizes) != self.num_params:
            raise corrupt("parameter names/shapes do not match the stored vectors")
        if len(self.epochs) != self.num_snapshots:
            raise corrupt(f"{len(self.epochs)} epochs listed for {self.num_snapshots} snapshots")
        buffer_sizes = sum(int(torch.Size(s).numel()) for s in self.buffer_shapes)
        stored = 0 if self.buffers is None else self.buffers.shape[1]
        if buffer_sizes != stored:
            raise corrupt("buffer names/shapes do not match the stored buffers")

    # ------------------------------------------------------------------ using
    def check_compatible(
        self,
        model: nn.Module,
        *,
        dataset: str | None = None,
        num_classes: int | None = None,
        image_shape: Sequence[int] | None = None,
        zca: bool | None = None,
        arch: str | None = None,
        arch_kwargs: dict[str, Any] | None = None,
        source: str = "trajectory",
        fix: str = "",
    ) -> None:
        """Raise :class:`TrajectoryMismatchError` unless this trajectory fits ``model`` and data.

        With ``arch``, the architecture is compared by name and every option (normalisation,
        width, depth, ...), not only by parameter shapes: experts of a ConvNet with instance
        norm have the same shapes as a ConvNet-BN, yet they are not its trajectories.
        """
        problems = []
        if arch is not None and not self._same_architecture(arch, arch_kwargs or {}):
            kwargs = ", ".join(f"{k}={v}" for k, v in sorted((arch_kwargs or {}).items()))
            problems.append(f"architecture {self.describe(data=False)}, expected {arch}({kwargs})")
        if dataset is not None and dataset != self.dataset:
            problems.append(f"dataset {self.dataset!r}, expected {dataset!r}")
        if num_classes is not None and num_classes != self.num_classes:
            problems.append(f"{self.num_classes} classes, expected {num_classes}")
        if image_shape is not None and list(image_shape) != list(self.image_shape):
            problems.append(f"input {tuple(self.image_shape)}, expected {tuple(image_shape)}")
        if zca is not None and zca != self.zca:
            problems.append(f"zca={self.zca}, expected zca={zca}")
        params, buffers = named_state(model)
        expected = [[n, list(p.shape)] for n, p in params.items()]
        stored = [[n, list(s)] for n, s in zip(self.param_names, self.param_shapes, strict=True)]
        if not problems and sorted(expected) != sorted(stored):
            missing = {n for n, _ in expected} ^ {n for n, _ in stored}
            detail = f" (differing: {sorted(missing)[:4]})" if missing else " (shapes differ)"
            problems.append(f"architecture {self.describe()} does not match the model{detail}")
        if problems:
            hint = f" {fix}" if fix else ""
            raise TrajectoryMismatchError(f"{source}: " + "; ".join(problems) + "." + hint)

    def _same_architecture(self, arch: str, arch_kwargs: dict[str, Any]) -> bool:
        try:
            return model_options(self.arch, **self.arch_kwargs) == model_options(
                arch, **arch_kwargs
            )
        except (ValueError, TypeError):  # a network registered elsewhere: compare as given
            return (self.arch, self.arch_kwargs) == (arch, arch_kwargs)

    def snapshot(self, index: int) -> Tensor:
        """Flat float32 parameter vector of stored snapshot ``index`` (negative counts from end)."""
        return self.params[index].float()

    def state_dict_at(self, index: int) -> dict[str, Tensor]:
        """``{name: tensor}`` of snapshot ``index`` (parameters and buffers), for a state dict."""
        state = unflatten(self.snapshot(index), self.param_names, self.param_shapes)
        if self.buffers is not None:
            state.update(unflatten(self.buffers[index], self.buffer_names, self.buffer_shapes))
        return state


def unflatten(vector: Tensor, names: Sequence[str], shapes: Sequence[Sequence[int]]) -> dict:
    """Split a flat vector into named views with the given shapes (no copy)."""
    sizes = [int(torch.Size(s).numel()) for s in shapes]
    pieces = vector.split(sizes)
    return {n: p.view(*s) for n, p, s in zip(names, pieces, shapes, strict=True)}
