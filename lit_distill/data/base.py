"""The base of every dataset: data facts, class-indexed real images, loaders, optional ZCA."""

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import nn
from torch.utils.data import DataLoader

from lit_distill.data.images import ImagesDataset, LabeledImages, collate_batch
from lit_distill.data.transforms import Normalize
from lit_distill.data.zca import DEFAULT_EPS, ZCA, load_or_fit_zca
from lit_distill.errors import DatasetFormatError

Split = Literal["train", "test"]


class ImageDataModule(LightningDataModule):
    """Base of every dataset: data facts, class-indexed real images, loaders, optional ZCA.

    The facts (``num_classes``, ``image_shape``, ``mean``, ``std``, ``class_names``) exist right
    after ``__init__``, so LightningCLI can link them into the model before any data is loaded.
    ``setup()`` loads both splits as :class:`LabeledImages` once.

    Validation uses the real test split, as the field's reference code does: distillation has
    no held-out validation split, and the reported number is test accuracy.

    Subclasses call :meth:`_set_facts` in ``__init__`` and implement :meth:`_load_split`.
    """

    name: str = "images"

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        zca: bool = False,
        eval_batch_size: int = 500,
        num_workers: int = 0,
    ) -> None:
        """Store the options; subclasses then record the data facts.

        Args:
            root: folder holding the dataset (and the caches written next to it).
            download: download missing files (sources that can be downloaded).
            zca: feed the networks ZCA-whitened images instead of mean/std-normalised ones.
            eval_batch_size: batch size of the validation and test loaders.
            num_workers: DataLoader worker processes (0: load in the main process).
        """
        super().__init__()
        self.root = root
        self.download = download
        self.zca = zca
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self._splits: dict[str, LabeledImages] = {}
        self._zca: ZCA | None = None

    def _set_facts(
        self,
        class_names: Sequence[str],
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        """Record the data facts that the model needs before the data is loaded."""
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def _load_split(self, split: Split) -> LabeledImages:
        """Read one split from disk (or wherever the subclass keeps it)."""
        raise NotImplementedError

    def _download(self) -> None:
        """Fetch the files; sources that cannot download have nothing to do."""

    def _cache_dir(self) -> Path | None:
        """Folder for caches derived from the data (ZCA fit); None for no caching."""
        return Path(self.root)

    def prepare_data(self) -> None:
        """Download when ``download=True``, then build the on-disk caches once per node.

        Lightning calls this on one process per node and makes the others wait, so the
        caches (decoded images, ZCA fit) are written once and only read by the other ranks.
        """
        if self.download:
            self._download()
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        """Load both splits (once; later calls do nothing) and the ZCA fit when ``zca=True``."""
        for split in ("train", "test"):
            if split not in self._splits:
                self._splits[split] = self._checked(self._load_split(split), split)
        if self.zca and self._zca is None:
            self._zca = load_or_fit_zca(
                self.train_set, DEFAULT_EPS, self._cache_dir(), self._fit_device()
            )

    @property
    def train_set(self) -> LabeledImages:
        """The real training images (after ``setup()``)."""
        return self._split("train")

    @property
    def test_set(self) -> LabeledImages:
        """The real test images (after ``setup()``)."""
        return self._split("test")

    def loader(
        self,
        split: Split,
        batch_size: int,
        shuffle: bool,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> DataLoader:
        """Batches of (float32 pixels in [0, 1], int64 labels) of one split.

        ``generator`` drives the shuffling (the global RNG when None). Under DDP, Lightning
        replaces the sampler by a ``DistributedSampler`` as for any map-style dataset.
        """
        images = self._split(split)
        on_cpu = images.device.type == "cpu"
        # Worker processes and pinned memory only make sense for images held on the CPU.
        workers = self.num_workers if on_cpu else 0
        return DataLoader(
            ImagesDataset(images),
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            generator=generator,
            collate_fn=collate_batch,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=on_cpu and torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        """The attached LightningModule's own ``train_dataloader()``.

        Tasks walk the training data differently (shuffled batches for experts, one step per
        iteration for distillation), so the task decides, using :meth:`loader`.
        """
        if self.trainer is None:
            raise RuntimeError(
                f"{type(self).__name__}.train_dataloader() needs a Trainer; outside one use "
                "loader('train', batch_size, shuffle)"
            )
        module = self.trainer.lightning_module
        if not is_overridden("train_dataloader", module):
            raise RuntimeError(
                f"{type(module).__name__} does not define train_dataloader(): the task decides how "
                "it walks the training data (e.g. return self.trainer.datamodule.loader(...))"
            )
        return module.train_dataloader()

    def val_dataloader(self) -> DataLoader:
        """The real test split, unshuffled (see the class docstring)."""
        return self.loader("test", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The real test split, unshuffled."""
        return self.loader("test", self.eval_batch_size, shuffle=False)

    def preprocess(self) -> nn.Module:
        """Pixels in [0, 1] -> network input: the fitted ZCA when ``zca=True``, else Normalize.

        With ZCA, the returned module is the fit itself (this datamodule does not use it again).
        """
        if not self.zca:
            return Normalize(self.mean, self.std)
        if self._zca is None:
            raise RuntimeError(
                f"{type(self).__name__}(zca=True) fits the ZCA in setup(): call setup() before "
                "preprocess() (the Trainer calls the datamodule's setup before the model's)"
            )
        return self._zca

    def _split(self, split: Split) -> LabeledImages:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if split not in self._splits:
            raise RuntimeError(
                f"{type(self).__name__}: the {split} split is not loaded; call setup() first "
                "(a Trainer does it)"
            )
        return self._splits[split]

    def _checked(self, images: LabeledImages, split: str) -> LabeledImages:
        """``images`` if they agree with the facts declared at ``__init__``."""
        if images.num_classes != self.num_classes or images.image_shape != self.image_shape:
            raise DatasetFormatError(
                f"{self.name} {split} split has {images.num_classes} classes of "
                f"{images.image_shape} images, but {self.num_classes} classes of "
                f"{self.image_shape} were expected: check the dataset's files"
            )
        return images

    def _fit_device(self) -> torch.device:
        """The Trainer's CUDA device when there is one (fitting ZCA there is much faster)."""
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        return device if device is not None and device.type == "cuda" else torch.device("cpu")
