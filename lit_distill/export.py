"""The on-disk format of a distilled (synthetic) dataset, and the one-line loader.

A file holds the *stored* synthetic images (compact and exact; multi-formation is applied on
loading) and everything needed to train on them and to know what they are:

=================  =========================================================================
key                meaning
=================  =========================================================================
format, version    ``"lit-distill/synthetic"``, ``1``
images             ``(num_classes * ipc, C, H, W)`` float32 pixels, class-major (class 0's
                   ``ipc`` images first); in [0, 1] for methods that clamp pixels (TGDD), possibly
                   outside for methods optimising network inputs (DM, MTT, DATM, ...), whose
                   images are mapped back to pixels (un-normalised or un-whitened) on export
labels             ``(num_classes * ipc,)`` int64, the class of each stored image
label_logits       ``(num_classes * ipc, num_classes)`` float32 learned soft labels (targets are
                   their softmax) or ``None`` for hard labels
lr                 learned student learning rate (trajectory matching) or ``None``
factor             multi-formation factor: each stored image decodes into ``factor**2``
ipc, num_classes   stored images per class, number of classes
class_names        the ``num_classes`` class names
dataset            dataset name (``ImageDataModule.name``), e.g. ``"cifar10"``
image_shape        ``[channels, height, width]``
zca                whether the networks consumed ZCA-whitened inputs during distillation (the
                   stored images are always un-whitened pixels; whiten them the same way)
method             ``"tgdd"``, ``"dm"``, ``"mtt"``, ``"random_real"``, ...
iteration          distillation iteration the set was taken at
config             the run's hyper-parameters (plain Python types)
checksum           CRC32 of the raw bytes of ``images`` and ``label_logits``: detects damage
=================  =========================================================================

Files are written atomically (temporary file, fsync, rename) and read with
``torch.load(weights_only=True)``: no code is executed. A PNG grid of the stored images is
written next to the file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torchvision
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from lit_distill.data.images import LabeledImages
from lit_distill.errors import SyntheticSetError, SyntheticSetNotFoundError
from lit_distill.fileio import checksum, write_atomic
from lit_distill.multiformation import decode_per_class
from lit_distill.synthetic import SyntheticSet

FORMAT = "lit-distill/synthetic"
VERSION = 1
_PLAIN = (str, int, float, bool, type(None))


@dataclass
class SyntheticData:
    """A distilled dataset as exported: everything needed to train on it and to know what it is."""

    images: Tensor
    labels: Tensor
    label_logits: Tensor | None
    lr: float | None
    factor: int
    ipc: int
    num_classes: int
    class_names: list[str]
    dataset: str
    image_shape: list[int]
    zca: bool
    method: str
    iteration: int = 0
    config: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        factor = f", factor {self.factor}" if self.factor > 1 else ""
        return (
            f"{self.method} set of {self.dataset}{' (ZCA)' if self.zca else ''}: "
            f"{self.ipc} images per class{factor}, {self.num_classes} classes, "
            f"input {tuple(self.image_shape)}"
        )

    def decoded(self) -> tuple[Tensor, Tensor]:
        """Training images (multi-formation applied, class-major) and their targets.

        Targets are int64 labels, or the logits ``(n, num_classes)`` with soft labels.
        """
        targets = self.labels if self.label_logits is None else self.label_logits
        return decode_per_class(self.images, targets, self.factor, self.ipc)

    def as_dataset(self) -> Dataset:
        """A dataset of ``(image (C, H, W) float pixels, target)`` pairs, the decoded set."""
        images, targets = self.decoded()
        return TensorDataset(images.detach(), targets.detach())

    @classmethod
    def from_synthetic_set(
        cls,
        synset: SyntheticSet,
        *,
        class_names: Sequence[str],
        dataset: str,
        zca: bool,
        method: str,
        iteration: int = 0,
        config: dict[str, Any] | None = None,
        preprocess: nn.Module | None = None,
    ) -> SyntheticData:
        """A detached CPU copy of ``synset``, its images as pixels.

        A set optimised in the network's input space is mapped back to pixels with
        ``preprocess.inverse`` (un-normalised or un-whitened), so every export is in pixel space.
        The learned lr is kept only when the set learns one.
        """
        if synset.space != "pixel" and preprocess is None:
            raise ValueError("exporting a set stored in input space needs its preprocess")
        logits = synset.label_logits
        images = synset.images.detach() if synset.space == "pixel" else synset.pixels(preprocess)
        return cls(
            images=images.float().cpu().clone(),
            labels=synset.labels.detach().cpu().clone(),
            label_logits=None if logits is None else logits.detach().float().cpu().clone(),
            lr=None if synset.lr is None else synset.lr.detach().item(),
            factor=synset.factor,
            ipc=synset.ipc,
            num_classes=synset.num_classes,
            class_names=list(class_names),
            dataset=dataset,
            image_shape=list(synset.image_shape),
            zca=zca,
            method=method,
            iteration=iteration,
            config=dict(config or {}),
        )

    @classmethod
    def random_real(
        cls,
        real: LabeledImages,
        ipc: int,
        generator: torch.Generator | None,
        *,
        dataset: str,
        zca: bool,
        class_names: Sequence[str],
    ) -> SyntheticData:
        """The random-real-subset baseline: ``ipc`` random real images of every class."""
        images, labels = real.random_subset(ipc, generator)
        return cls(
            images=images.cpu(),
            labels=labels.cpu(),
            label_logits=None,
            lr=None,
            factor=1,
            ipc=ipc,
            num_classes=real.num_classes,
            class_names=list(class_names),
            dataset=dataset,
            image_shape=list(real.image_shape),
            zca=zca,
            method="random_real",
        )

    def check_dataset(self, dataset: str, num_classes: int, image_shape: Sequence[int]) -> None:
        """Raise :class:`SyntheticSetError` unless this set was distilled from this data."""
        problems = []
        if dataset != self.dataset:
            problems.append(f"dataset {self.dataset!r}, not {dataset!r}")
        if num_classes != self.num_classes:
            problems.append(f"{self.num_classes} classes, not {num_classes}")
        if list(image_shape) != list(self.image_shape):
            problems.append(f"images {tuple(self.image_shape)}, not {tuple(image_shape)}")
        if problems:
            raise SyntheticSetError(
                f"this synthetic set has {'; '.join(problems)} ({self.describe()}): evaluate it "
                f"with the data it was distilled from (--data for {self.dataset!r})"
            )


# ---------------------------------------------------------------------- writing
def image_grid(images: Tensor, nrow: int) -> Tensor:
    """A (3, H', W') grid in [0, 1] of ``images`` (N, C, H, W), ``nrow`` images per row."""
    images = images.detach().float().cpu().clamp(0.0, 1.0)
    return torchvision.utils.make_grid(images, nrow=max(1, nrow), padding=2, pad_value=1.0)


def _classes_per_row(num_classes: int, ipc: int) -> int:
    """Whole classes per grid row, so that the grid is roughly square.

    One class per row unless classes are many compared to ``ipc`` (e.g. 100 classes at IPC 1
    give 10 classes per row, not a 100-row strip).
    """
    return max(1, round((num_classes / ipc) ** 0.5))


def _check_plain(value: Any, where: str) -> None:
    """Raise SyntheticSetError unless ``value`` is made of types a weights-only load reads."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, where)
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise SyntheticSetError(
            f"{where} is a {type(value).__name__}: the config of a synthetic set must hold only "
            "str, int, float, bool, None, lists and dicts (convert it, e.g. with str())"
        )


def save_synthetic(path: str | Path, data: SyntheticData, grid: bool = True) -> Path:
    """Write ``data`` atomically to ``path`` and, with ``grid``, a PNG of the stored images.

    The PNG (``path.with_suffix(".png")``) shows each class's ``ipc`` images on one row (several
    classes per row when classes are many and ``ipc`` is small).
    """
    path = Path(path)
    _check_plain(data.config, "config")
    payload = {"format": FORMAT, "version": VERSION}
    payload.update({f.name: getattr(data, f.name) for f in fields(data)})
    for key in ("images", "labels", "label_logits"):
        if payload[key] is not None:
            payload[key] = payload[key].detach().cpu().contiguous()
    payload["checksum"] = checksum(payload["images"], payload["label_logits"])
    write_atomic(path, lambda f: torch.save(payload, f))
    if grid:
        per_row = data.ipc * _classes_per_row(data.num_classes, data.ipc)
        pixels = image_grid(data.images, per_row).mul(255).round().to(torch.uint8)
        picture = Image.fromarray(pixels.permute(1, 2, 0).numpy())
        write_atomic(path.with_suffix(".png"), lambda f: picture.save(f, format="PNG"))
    return path


# ---------------------------------------------------------------------- reading
def load_synthetic(path: str | Path) -> SyntheticData:
    """Read and verify a synthetic-set file.

    Raises:
        FileNotFoundError: no file at ``path``.
        SyntheticSetError: not a lit-distill synthetic set, another format version, missing
            fields, damaged or inconsistent content.
    """
    path = Path(path)
    if not path.is_file():
        raise SyntheticSetNotFoundError(
            f"no synthetic set at {path}: give the path of an export (synthetic_final.pt or "
            "synthetic_best.pt, in the distillation's run folder)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, garbage, a pickle of foreign objects...
        raise SyntheticSetError(
            f"{path} is not a readable lit-distill synthetic set ({type(err).__name__}: {err}); "
            "export it again"
        ) from err
    return _from_payload(payload, path)


def load_synthetic_dataset(path: str | Path) -> Dataset:
    """The decoded synthetic set at ``path`` as a dataset of ``(image, target)`` pairs."""
    return load_synthetic(path).as_dataset()


def _from_payload(payload: Any, path: Path) -> SyntheticData:
    def bad(why: str) -> SyntheticSetError:
        return SyntheticSetError(f"{path}: {why}; export the synthetic set again")

    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise bad("not a lit-distill synthetic-set file")
    if payload.get("version") != VERSION:
        raise bad(f"format version {payload.get('version')!r}, this release reads {VERSION}")
    names = {f.name for f in fields(SyntheticData)}
    stored = set(payload) - {"format", "version", "checksum"}
    if names - stored or stored - names:
        raise bad(f"missing fields {sorted(names - stored)}, unknown {sorted(stored - names)}")
    data = SyntheticData(**{name: payload[name] for name in names})
    _check_consistent(data, bad)
    if payload.get("checksum") != checksum(data.images, data.label_logits):
        raise bad("checksum mismatch: the stored images or labels were altered or damaged")
    return data


def _check_consistent(data: SyntheticData, bad: Callable[[str], SyntheticSetError]) -> None:
    """Raise ``bad(why)`` unless the fields describe one class-major synthetic set."""
    count = data.num_classes * data.ipc
    images, labels, logits = data.images, data.labels, data.label_logits
    if not isinstance(images, Tensor) or images.dtype != torch.float32:
        raise bad("images must be a float32 tensor")
    if tuple(images.shape) != (count, *data.image_shape):
        raise bad(
            f"images of shape {tuple(images.shape)}, expected {data.num_classes} classes x "
            f"{data.ipc} ipc of {tuple(data.image_shape)}"
        )
    expected = torch.arange(data.num_classes).repeat_interleave(data.ipc)
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or not labels.equal(expected):
        raise bad("labels must be int64, class-major, ipc per class")
    if logits is not None and (
        not isinstance(logits, Tensor) or tuple(logits.shape) != (count, data.num_classes)
    ):
        raise bad(f"label_logits must have shape {(count, data.num_classes)}")
    if len(data.class_names) != data.num_classes:
        raise bad(f"{len(data.class_names)} class names for {data.num_classes} classes")
    if not isinstance(data.factor, int) or data.factor < 1:
        raise bad(f"factor must be a positive integer, got {data.factor!r}")
