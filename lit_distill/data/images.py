"""Real images held in memory as uint8 pixels, indexed by class once.

Distillation asks "n random real images of class c" at every iteration, so the class index is
built when the images are loaded and every later draw is a lookup plus a gather.
"""

import os
import pickle
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset

from lit_distill.errors import DatasetFormatError


def to_nchw(pixels: np.ndarray | Tensor, layout: Literal["NHWC", "NHW", "NCHW"]) -> Tensor:
    """A contiguous uint8 (N, C, H, W) tensor from an array stored in ``layout``."""
    pixels = torch.as_tensor(pixels)
    if layout == "NHW":
        pixels = pixels.unsqueeze(1)
    elif layout == "NHWC":
        pixels = pixels.permute(0, 3, 1, 2)
    return pixels.contiguous()


class LabeledImages:
    """In-memory labelled images: uint8 pixels (N, C, H, W), int64 labels, class names.

    The class index (image rows sorted by class, and where each class starts) is built once, on
    the CPU, and shared by every copy made with :meth:`to`.
    """

    def __init__(
        self, images: Tensor, labels: Tensor, classes: Sequence[str], name: str = ""
    ) -> None:
        """Validate the arrays and build the class index.

        Raises:
            DatasetFormatError: wrong dtype or shape, no images, or a label outside the classes.
        """
        _validate(images, labels, classes, name)
        self.images = images
        self.labels = labels.to(torch.int64)
        self.classes = list(classes)
        self.name = name
        cpu_labels = self.labels.cpu()
        # A stable sort keeps each class's images in their original order.
        self._order = torch.argsort(cpu_labels, stable=True)
        self._counts = torch.bincount(cpu_labels, minlength=len(self.classes)).tolist()
        self._starts = np.concatenate([[0], np.cumsum(self._counts)]).tolist()

    @property
    def num_classes(self) -> int:
        """Number of classes (including classes without images)."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    @property
    def device(self) -> torch.device:
        """Where the pixels live (samples are returned there)."""
        return self.images.device

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.image_shape))
        return f"LabeledImages({self.name!r}, {len(self)} x {shape}, {self.num_classes} classes)"

    def counts(self) -> list[int]:
        """Number of images of each class."""
        return list(self._counts)

    def indices_of(self, c: int) -> Tensor:
        """Row indices (CPU, int64) of the images of class ``c``, in their original order."""
        self._check_class(c)
        # A copy: the caller may modify it without corrupting the shared index.
        return self._order[self._starts[c] : self._starts[c + 1]].clone()

    def check_ipc(self, ipc: int) -> None:
        """Fail early, and clearly, when ``ipc`` images per class cannot be drawn.

        Raises:
            DatasetFormatError: ``ipc`` < 1, or larger than the smallest class.
        """
        if ipc < 1:
            raise DatasetFormatError(f"ipc must be at least 1, got {ipc}")
        smallest = min(range(self.num_classes), key=lambda c: self._counts[c])
        self._check_enough(smallest, ipc, what="ipc")

    def sample(self, c: int, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` distinct random images of class ``c`` as float32 pixels in [0, 1].

        Args:
            c: class index.
            n: how many images (at most the class's count).
            generator: a CPU generator (the global RNG when None).
        """
        self._check_class(c)
        self._check_enough(c, n, what="n")
        pick = torch.randperm(self._counts[c], generator=generator)[:n]
        return self.pixels(self._order[self._starts[c] + pick])

    def random_subset(
        self, ipc: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``ipc`` random images per class (float [0, 1]) and their labels, ordered by class."""
        self.check_ipc(ipc)
        images = torch.cat([self.sample(c, ipc, generator) for c in range(self.num_classes)])
        labels = torch.arange(self.num_classes, device=self.device).repeat_interleave(ipc)
        return images, labels

    def pixels(self, index: Tensor) -> Tensor:
        """Float32 pixels in [0, 1] of the rows in ``index``, on :attr:`device`."""
        return self.images[index.to(self.device)].to(torch.float32).div_(255.0)

    def to(self, device: torch.device | str) -> "LabeledImages":
        """A copy with pixels and labels on ``device``, reusing the class index."""
        moved = object.__new__(LabeledImages)
        moved.__dict__.update(self.__dict__)
        moved.images = self.images.to(device)
        moved.labels = self.labels.to(device)
        return moved

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel pixel mean and (population) standard deviation, in [0, 1] units."""
        # From each channel's 256-bin histogram: exact, and far faster than float sums.
        levels = torch.arange(256, dtype=torch.float64, device=self.device) / 255.0
        means, stds = [], []
        for c in range(self.images.shape[1]):
            counts = torch.bincount(self.images[:, c].reshape(-1), minlength=256).double()
            mean = (counts * levels).sum() / counts.sum()
            variance = (counts * (levels - mean).square()).sum() / counts.sum()
            means.append(mean.item())
            stds.append(variance.sqrt().item())
        return tuple(means), tuple(stds)

    def _check_class(self, c: int) -> None:
        if not 0 <= c < self.num_classes:
            raise IndexError(f"class {c} out of range: {self.name!r} has {self.num_classes}")

    def _check_enough(self, c: int, n: int, what: str) -> None:
        if n > self._counts[c]:
            raise DatasetFormatError(
                f"{what}={n} is more than the {self._counts[c]} images of class "
                f"{c} ({self.classes[c]!r}) in dataset {self.name!r}: lower ipc to at most "
                f"{min(self._counts)} (the smallest class) or use a larger dataset"
            )


def _validate(images: Tensor, labels: Tensor, classes: Sequence[str], name: str) -> None:
    """Raise DatasetFormatError unless images/labels/classes describe one labelled image set."""
    where = f"dataset {name!r}"
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise DatasetFormatError(
            f"{where}: images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise DatasetFormatError(
            f"{where}: labels must be a 1-D integer tensor, got {labels.dtype} "
            f"{tuple(labels.shape)}"
        )
    if labels.shape[0] != images.shape[0] or images.shape[0] == 0:
        raise DatasetFormatError(
            f"{where}: {images.shape[0]} images but {labels.shape[0]} labels "
            "(need the same number, at least one)"
        )
    if len(classes) == 0:
        raise DatasetFormatError(f"{where}: no class names given")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= len(classes):
        raise DatasetFormatError(
            f"{where}: labels span [{low}, {high}] but there are {len(classes)} classes "
            f"(labels must lie in [0, {len(classes) - 1}])"
        )


class ImagesDataset(Dataset):
    """Map-style view of :class:`LabeledImages` whose batches are fetched in one gather.

    ``__getitems__`` lets a standard ``DataLoader`` index the uint8 tensor once per batch
    instead of once per image; with :func:`collate_batch` the result passes through unchanged.
    Samplers (shuffling, or a ``DistributedSampler`` injected by Lightning under DDP) work as
    with any map-style dataset.
    """

    def __init__(self, images: LabeledImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        row = torch.tensor([index])
        return self.images.pixels(row)[0], self.images.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        rows = torch.as_tensor(indices, dtype=torch.int64)
        return self.images.pixels(rows), self.images.labels[rows.to(self.images.device)]


def collate_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate function for :class:`ImagesDataset`: the batch is already (pixels, labels)."""
    return batch


def read_cache(path: Path, key: str) -> dict[str, Tensor] | None:
    """The tensors cached at ``path`` by :func:`write_cache`, if they were made for ``key``.

    ``key`` fingerprints what the cache was derived from; a mismatch (stale cache) or an
    unreadable file gives None, and the caller rebuilds.
    """
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return saved["tensors"] if saved["key"] == key else None
    except (OSError, RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError):
        return None


def write_cache(path: Path, key: str, tensors: dict[str, Tensor]) -> None:
    """Save ``tensors`` under ``key`` atomically (readers never see a partial file).

    A folder that cannot be written (read-only data) only costs a warning: the data is rebuilt
    on the next run.
    """
    # A unique temporary name in the same folder, so the final rename is atomic.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.save({"key": key, "tensors": tensors}, temporary)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as error:
        rank_zero_warn(f"Could not write the cache {path} ({error}); it will be rebuilt next time")
