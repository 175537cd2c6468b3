"""Image-folder datasets (ImageNet subsets, ImageNette/ImageWoof, Tiny ImageNet).

Images are decoded, resized and centre-cropped once, then cached as uint8 tensors under the
dataset's root, so later runs (and the other DDP ranks) only read one file per split.
"""

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch import Tensor

from lit_distill.data.base import ImageDataModule, Split
from lit_distill.data.images import LabeledImages, read_cache, write_cache
from lit_distill.errors import DatasetFormatError, DatasetNotFoundError

# torchvision's ImageNet statistics; the MTT/DATM code also uses them for Tiny ImageNet.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
CACHE_FOLDER = "lit_distill_cache"


class ImageFolderDataModule(ImageDataModule):
    """Class-per-folder image trees: ``root/<train_dir>/<class>/...`` and ``root/<test_dir>/...``.

    Images (searched recursively under each class folder) are converted to RGB, resized so
    their shorter side is ``image_size``, then centre-cropped to a square. Classes are the
    sorted folder names of the training tree, or exactly ``classes`` in the given order.
    """

    def __init__(
        self,
        root: str,
        image_size: int,
        train_dir: str = "train",
        test_dir: str = "val",
        classes: list[str] | None = None,
        name: str = "imagefolder",
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        cache: bool = True,
        zca: bool = False,
        eval_batch_size: int = 500,
        num_workers: int = 0,
    ) -> None:
        """Find the classes; images are decoded in ``setup()``.

        Args:
            root: the dataset folder.
            image_size: side of the square images, in pixels.
            train_dir: the training split's folder under ``root``.
            test_dir: the test split's folder under ``root``.
            classes: class folders to use (e.g. ImageNet wnids of a subset); None for all.
            name: dataset name recorded with trajectories and synthetic sets.
            mean: per-channel means used for normalisation, [0, 1] units.
            std: per-channel standard deviations, [0, 1] units.
            cache: keep the decoded images under ``root/lit_distill_cache`` for later runs.
            zca: see :class:`ImageDataModule`.
            eval_batch_size: see :class:`ImageDataModule`.
            num_workers: see :class:`ImageDataModule`.
        """
        super().__init__(root, False, zca, eval_batch_size, num_workers)
        self.name = name
        self.image_size = image_size
        self.train_dir = train_dir
        self.test_dir = test_dir
        self.cache = cache
        self._set_facts(self._find_classes(classes), (3, image_size, image_size), mean, std)

    def _find_classes(self, wanted: list[str] | None) -> list[str]:
        """The class folder names of the training tree (all, sorted, or the wanted ones)."""
        folder = Path(self.root) / self.train_dir
        if not folder.is_dir():
            raise DatasetNotFoundError(
                f"no training folder {folder}: set --data.init_args.root to the dataset folder "
                f"(the one holding {self.train_dir}/<class>/ and {self.test_dir}/<class>/)"
            )
        found = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
        if wanted is None:
            if not found:
                raise DatasetFormatError(f"{folder} holds no class folders")
            return found
        missing = [c for c in wanted if c not in found]
        if missing or len(set(wanted)) != len(wanted) or not wanted:
            raise DatasetFormatError(
                f"classes must be distinct folder names of {folder}; missing: {missing}, "
                f"given: {wanted}"
            )
        return list(wanted)

    def _cache_dir(self) -> Path:
        return Path(self.root) / CACHE_FOLDER

    def _list_files(self, split: Split) -> list[tuple[Path, int]]:
        """(image file, label) pairs of one split, in a stable order."""
        folder = Path(self.root) / (self.train_dir if split == "train" else self.test_dir)
        if not folder.is_dir():
            raise DatasetNotFoundError(f"no {split} folder {folder}: check root and {split}_dir")
        files = []
        for label, name in enumerate(self.class_names):
            images = _images_under(folder / name)
            if not images:
                raise DatasetFormatError(
                    f"class folder {folder / name} is missing or holds no images "
                    f"({', '.join(IMAGE_EXTENSIONS)}): add its images, or list the classes to "
                    "use with --data.init_args.classes"
                )
            files += [(path, label) for path in images]
        return files

    def _load_split(self, split: Split) -> LabeledImages:
        files = self._list_files(split)
        key = _listing_key(files, self.image_size)
        path = self._cache_dir() / f"{split}_{self.image_size}px_{_short_hash(self.class_names)}.pt"
        cached = read_cache(path, key) if self.cache else None
        if cached is None:
            rank_zero_info(f"Decoding {len(files)} {split} images of {self.name} (once)")
            cached = {"images": self._decode([p for p, _ in files])}
            cached["labels"] = torch.tensor([label for _, label in files])
            if self.cache:
                write_cache(path, key, cached)
        return LabeledImages(cached["images"], cached["labels"], self.class_names, self.name)

    def _decode(self, paths: list[Path]) -> Tensor:
        """Decode, resize and crop every image; (N, 3, S, S) uint8."""
        # PIL releases the GIL while decoding, so threads give a real speed-up.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            return torch.stack(list(pool.map(self._read_image, paths)))

    def _read_image(self, path: Path) -> Tensor:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except OSError as error:
            raise DatasetFormatError(f"cannot read image {path} ({error}): remove it") from None
        image = TF.resize(image, self.image_size)  # shorter side, aspect ratio kept
        return TF.pil_to_tensor(TF.center_crop(image, self.image_size))


class TinyImageNetDataModule(ImageFolderDataModule):
    """Tiny ImageNet (200 classes, 64x64) in its own layout; its val split is the test split.

    ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` labelled by
    ``val/val_annotations.txt`` (a val tree with one folder per class also works). Classes are
    the sorted wnids, as with an image folder. The official test split has no labels.
    """

    def __init__(
        self,
        root: str = "data/tiny-imagenet-200",
        cache: bool = True,
        zca: bool = False,
        eval_batch_size: int = 500,
        num_workers: int = 0,
    ) -> None:
        """Tiny ImageNet at ``root`` (see :class:`ImageFolderDataModule` for the arguments)."""
        super().__init__(
            root,
            image_size=64,
            name="tinyimagenet",
            cache=cache,
            zca=zca,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
        )

    def _list_files(self, split: Split) -> list[tuple[Path, int]]:
        annotations = Path(self.root) / "val" / "val_annotations.txt"
        if split == "train" or not annotations.is_file():
            return super()._list_files(split)
        label_of = {wnid: label for label, wnid in enumerate(self.class_names)}
        files = []
        for number, line in enumerate(annotations.read_text().splitlines(), start=1):
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in label_of:
                raise DatasetFormatError(
                    f"{annotations} line {number}: expected 'FILE<tab>WNID...' with a wnid of "
                    f"the training classes, got {line!r}"
                )
            path = annotations.parent / "images" / fields[0]
            if not path.is_file():
                raise DatasetFormatError(f"{path}, listed in {annotations}, does not exist")
            files.append((path, label_of[fields[1]]))
        return sorted(files)


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere under ``folder``, sorted; [] when it does not exist."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS)


def _listing_key(files: list[tuple[Path, int]], image_size: int) -> str:
    """Fingerprint of a split's listing (paths, sizes, labels): any change rebuilds the cache."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image_size}\n".encode())
    for path, label in files:
        digest.update(f"{path.name}\t{path.stat().st_size}\t{label}\n".encode())
    return digest.hexdigest()


def _short_hash(names: list[str]) -> str:
    return hashlib.blake2b("\n".join(names).encode(), digest_size=4).hexdigest()
