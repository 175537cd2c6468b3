"""Datasets read (and optionally downloaded) through torchvision: CIFAR, MNIST, SVHN.

Each datamodule only states its facts; mean/std are per-channel statistics of the training
split in [0, 1] units, so the facts exist before any file is read.
"""

from pathlib import Path
from typing import Literal

import torch
from torchvision import datasets
from torchvision.datasets import VisionDataset

from lit_distill.data.base import ImageDataModule
from lit_distill.data.images import LabeledImages, to_nchw
from lit_distill.errors import DatasetNotFoundError

DIGIT_NAMES = tuple(str(d) for d in range(10))


class TorchvisionDataModule(ImageDataModule):
    """Base of the torchvision sources: class attributes hold the facts and the file layout."""

    source: type[VisionDataset]
    expected: str  # what ``root`` must contain, as a relative path
    layout: Literal["NHWC", "NHW", "NCHW"]  # how the source stores its pixels
    CLASSES: tuple[str, ...]
    SHAPE: tuple[int, int, int]
    MEAN: tuple[float, ...]
    STD: tuple[float, ...]

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        zca: bool = False,
        eval_batch_size: int = 500,
        num_workers: int = 0,
    ) -> None:
        """Record the facts (see :class:`ImageDataModule`; ``root`` is torchvision's root)."""
        super().__init__(root, download, zca, eval_batch_size, num_workers)
        self._set_facts(self.CLASSES, self.SHAPE, self.MEAN, self.STD)

    def _open(self, split: str, download: bool) -> VisionDataset:
        return self.source(self.root, train=split == "train", download=download)

    def _load_split(self, split: str) -> LabeledImages:
        try:
            source = self._open(split, download=False)
        except RuntimeError as error:  # torchvision's "Dataset not found or corrupted"
            raise DatasetNotFoundError(
                f"{self.name} not found (or incomplete) at {Path(self.root) / self.expected} "
                f"({error}). Download it with --data.init_args.download=true, or set "
                f"--data.init_args.root to the folder that contains {self.expected}"
            ) from None
        labels = getattr(source, "targets", None)
        labels = source.labels if labels is None else labels
        images = to_nchw(source.data, self.layout)
        return LabeledImages(images, torch.as_tensor(labels), self.class_names, self.name)

    def _download(self) -> None:
        for split in ("train", "test"):
            try:
                self._open(split, download=True)
            except (OSError, RuntimeError) as error:
                raise DatasetNotFoundError(
                    f"downloading {self.name} into {self.root} failed ({error}). Download it on a "
                    "machine with internet access and set --data.init_args.root to that folder"
                ) from None


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10: 32x32 colour images, 10 classes, 50,000 train / 10,000 test."""

    name = "cifar10"
    source = datasets.CIFAR10
    expected = "cifar-10-batches-py"
    layout = "NHWC"
    CLASSES = (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    )  # fmt: skip
    SHAPE = (3, 32, 32)
    # Training-split statistics. The DC/DSA/MTT code divides by (0.2023, 0.1994, 0.2010), an old
    # approximation of the std; only the input scale differs, and synthetic sets stay in [0, 1].
    MEAN = (0.4914, 0.4822, 0.4465)
    STD = (0.2470, 0.2435, 0.2616)


class CIFAR100DataModule(TorchvisionDataModule):
    """CIFAR-100: 32x32 colour images, 100 fine classes, 50,000 train / 10,000 test."""

    name = "cifar100"
    source = datasets.CIFAR100
    expected = "cifar-100-python"
    layout = "NHWC"
    # The fine label names in label order (the dataset's meta file).
    CLASSES = (
        "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
        "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
        "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
        "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
        "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard",
        "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse",
        "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck",
        "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray",
        "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail",
        "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
        "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
        "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
    )  # fmt: skip
    SHAPE = (3, 32, 32)
    # Training-split statistics (also the values of the DC/MTT code).
    MEAN = (0.5071, 0.4865, 0.4409)
    STD = (0.2673, 0.2564, 0.2762)


class MNISTDataModule(TorchvisionDataModule):
    """MNIST: 28x28 grey digits, 60,000 train / 10,000 test (``root/MNIST/raw``)."""

    name = "mnist"
    source = datasets.MNIST
    expected = "MNIST/raw"
    layout = "NHW"
    CLASSES = DIGIT_NAMES
    SHAPE = (1, 28, 28)
    # The customary MNIST training-split statistics.
    MEAN = (0.1307,)
    STD = (0.3081,)


class FashionMNISTDataModule(TorchvisionDataModule):
    """Fashion-MNIST: 28x28 grey clothing images, 10 classes (``root/FashionMNIST/raw``).

    The four idx files must be uncompressed there (torchvision checks the official ``.gz``
    checksums only when downloading).
    """

    name = "fashionmnist"
    source = datasets.FashionMNIST
    expected = "FashionMNIST/raw"
    layout = "NHW"
    CLASSES = (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )  # fmt: skip
    SHAPE = (1, 28, 28)
    # Training-split statistics (the DC code uses mean 0.2861, std 0.3530).
    MEAN = (0.2860,)
    STD = (0.3530,)


class SVHNDataModule(TorchvisionDataModule):
    """SVHN (cropped digits): 32x32 colour, 73,257 train / 26,032 test; needs scipy."""

    name = "svhn"
    source = datasets.SVHN
    expected = "train_32x32.mat"
    layout = "NCHW"
    CLASSES = DIGIT_NAMES  # torchvision maps SVHN's label 10 to digit 0
    SHAPE = (3, 32, 32)
    # Training-split statistics, as in the DC/DSA code.
    MEAN = (0.4377, 0.4438, 0.4728)
    STD = (0.1980, 0.2010, 0.1970)

    def _open(self, split: str, download: bool) -> VisionDataset:
        return self.source(self.root, split=split, download=download)
