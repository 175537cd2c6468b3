"""Datasets given as arrays: a ``.npz`` archive, or scikit-learn's embedded 8x8 digits."""

import zipfile
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from lit_distill.data.base import ImageDataModule, Split
from lit_distill.data.images import LabeledImages, to_nchw
from lit_distill.errors import DatasetFormatError, DatasetNotFoundError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
NPZ_FORMAT = (
    "x_train/x_test: uint8 (N, H, W, C) or (N, H, W); y_train/y_test: integer (N,) labels "
    "0..K-1; optional classes: (K,) str"
)


class NpzDataModule(ImageDataModule):
    """A dataset stored as one ``.npz`` archive: ``x_train, y_train, x_test, y_test[, classes]``.

    Images are uint8, channels last ((N, H, W, C) or grey (N, H, W)); labels are integers in
    [0, K). K is the length of ``classes`` when present, else the largest label + 1. The
    archive is read and checked at ``__init__`` (the facts come from it, mean/std measured on
    the training images) and kept in memory, so ``setup()`` does not read it again.
    """

    def __init__(
        self,
        path: str,
        name: str | None = None,
        zca: bool = False,
        eval_batch_size: int = 500,
        num_workers: int = 0,
    ) -> None:
        """Read and check the archive.

        Args:
            path: the ``.npz`` file (caches such as the ZCA fit are written next to it).
            name: dataset name recorded with trajectories and synthetic sets; default: the
                file's stem (``cifar10.npz`` -> ``cifar10``).
            zca: see :class:`ImageDataModule`.
            eval_batch_size: see :class:`ImageDataModule`.
            num_workers: see :class:`ImageDataModule`.
        """
        super().__init__(str(Path(path).parent), False, zca, eval_batch_size, num_workers)
        self.path = path
        self.name = name or Path(path).stem
        arrays = _read_npz(Path(path))
        classes = _class_names(arrays)
        self._loaded = {
            split: _to_labeled(arrays, split, classes, self.name) for split in ("train", "test")
        }
        train = self._loaded["train"]
        if train.image_shape != self._loaded["test"].image_shape:
            raise DatasetFormatError(
                f"{path}: x_train images are {arrays['x_train'].shape[1:]} but x_test images are "
                f"{arrays['x_test'].shape[1:]}; both splits need the same image shape"
            )
        self._set_facts(classes, train.image_shape, *train.mean_std())

    def _load_split(self, split: Split) -> LabeledImages:
        return self._loaded[split]


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the archive, after checking that the required keys are there."""
    if not path.is_file():
        raise DatasetNotFoundError(
            f"no .npz archive at {path}: set --data.init_args.path to a file holding "
            f"{', '.join(NPZ_KEYS)} ({NPZ_FORMAT})"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DatasetFormatError(
                    f"{path} lacks {', '.join(missing)} (found: {', '.join(archive.files)}); "
                    f"expected {NPZ_FORMAT}"
                )
            return {key: archive[key] for key in (*NPZ_KEYS, "classes") if key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        # object arrays (which need pickle), a truncated or damaged archive, not an archive
        if isinstance(error, DatasetFormatError):
            raise
        message = (
            f"{path} cannot be read ({type(error).__name__}: {error}): it is damaged or not an "
            f".npz archive; write it again ({NPZ_FORMAT})"
        )
        raise DatasetFormatError(message) from None


def _class_names(arrays: dict[str, np.ndarray]) -> list[str]:
    """``classes`` if stored (checked against the labels), else "0", "1", ..."""
    # Labels of a wrong dtype are reported by _to_labeled; here they only must not break max().
    labels = [arrays[key] for key in ("y_train", "y_test") if arrays[key].dtype.kind in "iu"]
    largest = max((int(y.max(initial=0)) for y in labels), default=0)
    if "classes" not in arrays:
        return [str(c) for c in range(largest + 1)]
    classes = arrays["classes"]
    if classes.ndim != 1 or classes.dtype.kind != "U" or len(classes) <= largest:
        raise DatasetFormatError(
            f"classes is {classes.dtype} {classes.shape}; expected a 1-D str array of at least "
            f"{largest + 1} names (labels go up to {largest})"
        )
    return classes.tolist()


def _to_labeled(
    arrays: dict[str, np.ndarray], split: Split, classes: list[str], name: str
) -> LabeledImages:
    """One split as LabeledImages, with errors that name the offending key."""
    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
    channels_ok = x.ndim == 3 or (x.ndim == 4 and x.shape[-1] in (1, 3))
    if x.dtype != np.uint8 or not channels_ok:
        raise DatasetFormatError(
            f"x_{split} is {x.dtype} {x.shape}; expected uint8 (N, H, W, C) with C = 1 or 3, "
            "or (N, H, W) (channels last, pixels 0..255)"
        )
    if y.dtype.kind not in "iu" or y.shape != (x.shape[0],):
        raise DatasetFormatError(
            f"y_{split} is {y.dtype} {y.shape}; expected integer labels of shape ({x.shape[0]},)"
        )
    if y.size and (y.min() < 0 or y.max() >= len(classes)):
        raise DatasetFormatError(
            f"y_{split} holds labels {y.min()}..{y.max()}; expected 0..{len(classes) - 1} "
            f"({len(classes)} classes)"
        )
    images = to_nchw(x, "NHW" if x.ndim == 3 else "NHWC")
    return LabeledImages(images, torch.from_numpy(y.astype(np.int64)), classes, name)


class DigitsDataModule(ImageDataModule):
    """scikit-learn's embedded 8x8 grey digits (1,797 images, 10 classes): no files needed.

    Pixel values 0..16 are scaled to 0..255; the train/test split is stratified and fixed by
    ``split_seed``. The zero-download default for the quick start and the tests.
    """

    name = "digits"

    def __init__(
        self,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        zca: bool = False,
        eval_batch_size: int = 500,
        num_workers: int = 0,
    ) -> None:
        """Load and split the digits.

        Args:
            test_fraction: share of the images in the test split, in (0, 1).
            split_seed: seed of the stratified split.
            zca: see :class:`ImageDataModule` (the small fit is never cached).
            eval_batch_size: see :class:`ImageDataModule`.
            num_workers: see :class:`ImageDataModule`.
        """
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        super().__init__("", False, zca, eval_batch_size, num_workers)
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        digits = load_digits()
        pixels = torch.from_numpy(np.round(digits.images * (255.0 / 16.0)).astype(np.uint8))
        labels = torch.from_numpy(digits.target.astype(np.int64))
        train, test = train_test_split(
            np.arange(len(labels)),
            test_size=test_fraction,
            stratify=digits.target,
            random_state=split_seed,
        )
        classes = [str(d) for d in range(10)]
        self._loaded = {
            split: LabeledImages(pixels[rows].unsqueeze(1), labels[rows], classes, self.name)
            for split, rows in (("train", _sorted(train)), ("test", _sorted(test)))
        }
        self._set_facts(classes, (1, 8, 8), *self._loaded["train"].mean_std())

    def _load_split(self, split: Split) -> LabeledImages:
        return self._loaded[split]

    def _cache_dir(self) -> None:
        return None


def _sorted(rows: np.ndarray) -> torch.Tensor:
    """Row indices in the dataset's own order (the split returns them shuffled)."""
    return torch.from_numpy(np.sort(rows))
