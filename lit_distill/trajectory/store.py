"""Folders of expert trajectories, and lazy access to their snapshots.

A folder holds ``expert_000.pt``, ``expert_001.pt``, ... one per expert. The files are opened
once, memory-mapped; :class:`SnapshotBank` copies out the snapshots an iteration uses (a copy of a
few hundred thousand floats, instead of a ``torch.load`` per iteration).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from lit_distill.errors import TrajectoryMismatchError, TrajectoryNotFoundError
from lit_distill.trajectory.format import Trajectory, named_state, unflatten

_EXPERT_FILE = re.compile(r"^expert_(\d{3,})\.pt$")


def expert_path(directory: str | Path, index: int) -> Path:
    """Where expert ``index`` of a trajectory folder is stored."""
    return Path(directory) / f"expert_{index:03d}.pt"


def list_experts(directory: str | Path) -> list[Path]:
    """The expert files present in ``directory``, by index."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _EXPERT_FILE.match(p.name)]
    return sorted(found, key=lambda p: int(_EXPERT_FILE.match(p.name).group(1)))


def load_trajectories(
    directory: str | Path, count: int | None = None, fix: str = ""
) -> list[Trajectory]:
    """Load (and verify) the first ``count`` trajectories of ``directory`` (all when ``None``).

    Raises:
        TrajectoryNotFoundError: fewer than ``count`` (or no) expert files; ``fix`` says how to
            train them.
    """
    paths = list_experts(directory)
    if count is not None:
        paths = paths[:count]
    wanted = count or 1
    if len(paths) < wanted:
        hint = f" Train them with: {fix}" if fix else ""
        raise TrajectoryNotFoundError(
            f"{len(paths)} expert trajectories in {directory}, {wanted} needed.{hint}"
        )
    return [Trajectory.load(p) for p in paths]


class SnapshotBank:
    """The snapshots of several trajectories, read lazily: only those an iteration uses are
    copied out of the (memory-mapped) files, as float32, to the bank's device.

    A 100-expert CIFAR-10 folder is 6.5 GB (CIFAR-100: 10 GB): it is never held in memory twice
    nor moved to the accelerator whole; one snapshot is 1.28 MB (ConvNet-3).

    Args:
        trajectories: trajectories of the same architecture and stored epochs.
        device: where the snapshots an iteration asks for are copied.
    """

    def __init__(self, trajectories: Sequence[Trajectory], device: torch.device | str = "cpu"):
        first = trajectories[0]
        for traj in trajectories[1:]:
            if traj.param_names != first.param_names or traj.epochs != first.epochs:
                raise TrajectoryMismatchError(
                    "trajectories of one folder must share architecture and stored epochs; "
                    f"found {first.describe()} epochs {first.epochs[-1]} and "
                    f"{traj.describe()} epochs {traj.epochs[-1]}"
                )
        self.trajectories = list(trajectories)
        self.epochs = list(first.epochs)
        self.param_names, self.param_shapes = first.param_names, first.param_shapes
        self.buffer_names, self.buffer_shapes = first.buffer_names, first.buffer_shapes
        self.device = torch.device(device)

    def to(self, device: torch.device | str) -> SnapshotBank:
        """Copy later snapshots to ``device`` (in place; returns the bank)."""
        self.device = torch.device(device)
        return self

    @property
    def num_trajectories(self) -> int:
        return len(self.trajectories)

    @property
    def num_snapshots(self) -> int:
        return len(self.epochs)

    @property
    def num_epochs(self) -> int:
        """Epochs the experts were trained for (the last snapshot's epoch)."""
        return self.epochs[-1]

    @property
    def full(self) -> bool:
        """Whether every epoch ``0..M`` is stored (not only the convex end points)."""
        return self.epochs == list(range(self.num_epochs + 1))

    def vector(self, trajectory: int, snapshot: int) -> Tensor:
        """The flat float32 parameter vector of one stored snapshot, on :attr:`device`."""
        stored = self.trajectories[trajectory].params[snapshot]
        return stored.to(device=self.device, dtype=torch.float32, non_blocking=True)

    def index_of(self, epoch: int) -> int:
        """The stored snapshot of ``epoch`` (a ValueError when it is not stored)."""
        try:
            return self.epochs.index(epoch)
        except ValueError:
            raise ValueError(f"epoch {epoch} is not stored (stored: {self.epochs})") from None

    @torch.no_grad()
    def load_into(self, net: nn.Module, trajectory: int, snapshot: int) -> nn.Module:
        """Copy one snapshot's parameters (and buffers) into ``net``, matching by name."""
        params, buffers = named_state(net)
        _copy(params, self.param_names, self.param_shapes, self.vector(trajectory, snapshot))
        stored = self.trajectories[trajectory].buffers
        if stored is not None:
            _copy(buffers, self.buffer_names, self.buffer_shapes, stored[snapshot])
        return net


def _copy(targets: dict[str, Tensor], names, shapes, vector: Tensor) -> None:
    for name, piece in unflatten(vector, names, shapes).items():
        targets[name].copy_(piece)
