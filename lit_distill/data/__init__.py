"""Datasets: class-indexed real images in memory, and one LightningDataModule per source."""

from lit_distill.data.arrays import DigitsDataModule, NpzDataModule
from lit_distill.data.base import ImageDataModule
from lit_distill.data.folders import ImageFolderDataModule, TinyImageNetDataModule
from lit_distill.data.images import ImagesDataset, LabeledImages, collate_batch
from lit_distill.data.torchvision_sets import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    SVHNDataModule,
)
from lit_distill.data.transforms import Normalize
from lit_distill.data.zca import ZCA, load_or_fit_zca

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImagesDataset",
    "LabeledImages",
    "MNISTDataModule",
    "Normalize",
    "NpzDataModule",
    "SVHNDataModule",
    "TinyImageNetDataModule",
    "ZCA",
    "collate_batch",
    "load_or_fit_zca",
]
