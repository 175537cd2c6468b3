"""Tests of the data package: in-memory images, every source, loaders and ZCA (CPU, tiny data)."""

from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import NO_CIFAR10, NO_MNIST, TEST_DATA
from lightning.pytorch.utilities.data import _update_dataloader
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from lit_distill.data import (
    ZCA,
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    ImagesDataset,
    LabeledImages,
    MNISTDataModule,
    Normalize,
    NpzDataModule,
    SVHNDataModule,
    TinyImageNetDataModule,
    collate_batch,
    load_or_fit_zca,
)
from lit_distill.data.images import read_cache, write_cache
from lit_distill.errors import DatasetFormatError, DatasetNotFoundError


def make_images(labels: list[int], classes: int = 3, name: str = "toy") -> LabeledImages:
    """Images whose every pixel equals the row number, so a sample reveals where it came from."""
    rows = torch.arange(len(labels), dtype=torch.uint8)
    images = rows.view(-1, 1, 1, 1).expand(-1, 2, 4, 4).contiguous()
    return LabeledImages(images, torch.tensor(labels), [f"c{i}" for i in range(classes)], name)


def rows_of(pixels: torch.Tensor) -> list[int]:
    return (pixels[:, 0, 0, 0] * 255).round().long().tolist()


def assert_facts_match(dm: ImageDataModule) -> None:
    """The facts declared at __init__ agree with the data loaded by setup()."""
    dm.setup()
    for split in (dm.train_set, dm.test_set):
        assert split.num_classes == dm.num_classes == len(dm.class_names)
        assert split.image_shape == dm.image_shape
        assert split.classes == dm.class_names
    mean, std = dm.train_set.mean_std()
    assert mean == pytest.approx(dm.mean, abs=1e-3)
    assert std == pytest.approx(dm.std, abs=1e-3)


# ----------------------------------------------------------------- LabeledImages
def test_class_index_and_counts() -> None:
    images = make_images([2, 0, 1, 0, 2, 2])
    assert images.counts() == [2, 1, 3]
    assert images.indices_of(0).tolist() == [1, 3]
    assert images.indices_of(2).tolist() == [0, 4, 5]
    assert images.image_shape == (2, 4, 4) and images.num_classes == 3 and len(images) == 6


def test_sample_distinct_right_class_reproducible() -> None:
    images = make_images([0, 1] * 10)
    drawn = images.sample(1, 6, torch.Generator().manual_seed(3))
    assert drawn.dtype == torch.float32 and drawn.shape == (6, 2, 4, 4)
    rows = rows_of(drawn)
    assert len(set(rows)) == 6 and all(row % 2 == 1 for row in rows)
    again = images.sample(1, 6, torch.Generator().manual_seed(3))
    assert torch.equal(drawn, again)
    assert set(rows_of(images.sample(1, 10))) == set(range(1, 20, 2))


def test_random_subset_ordered_by_class() -> None:
    images = make_images([0, 1, 2] * 4)
    pixels, labels = images.random_subset(2, torch.Generator().manual_seed(0))
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert [row % 3 for row in rows_of(pixels)] == labels.tolist()


def test_ipc_errors_name_class_count_and_dataset() -> None:
    images = make_images([0, 0, 0, 1, 2, 2], name="toyset")
    images.check_ipc(1)
    with pytest.raises(ValueError, match=r"ipc=2 .* 1 images of class 1 \('c1'\).*toyset.*lower"):
        images.check_ipc(2)
    with pytest.raises(DatasetFormatError, match="at least 1"):
        images.check_ipc(0)
    with pytest.raises(DatasetFormatError, match="n=4 .* 3 images of class 0"):
        images.sample(0, 4)
    with pytest.raises(IndexError):
        images.sample(3, 1)


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), "uint8"),
        (torch.zeros(2, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), "uint8"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0.0, 1.0]), "integer"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0]), "2 images but 1"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 2]), r"span \[0, 2\]"),
    ],
)
def test_labeled_images_validation(images, labels, match) -> None:
    with pytest.raises(DatasetFormatError, match=match):
        LabeledImages(images, labels, ["a", "b"])


def test_to_device_reuses_index_and_stats() -> None:
    images = make_images([1, 0, 1, 2])
    moved = images.to("cpu")
    assert moved is not images and moved._order is images._order
    assert moved.indices_of(1).tolist() == [0, 2] and moved.device.type == "cpu"
    flat = images.images.double().div(255).transpose(0, 1).reshape(2, -1)
    mean, std = images.mean_std()
    assert mean == pytest.approx(flat.mean(1).tolist())
    assert std == pytest.approx(flat.std(1, unbiased=False).tolist())


# ---------------------------------------------------------------------- loaders
def test_dataset_batches_and_distributed_sampler() -> None:
    images = make_images(list(range(3)) * 5)
    dataset = ImagesDataset(images)
    pixels, labels = next(iter(DataLoader(dataset, batch_size=4, collate_fn=collate_batch)))
    assert pixels.shape == (4, 2, 4, 4) and pixels.dtype == torch.float32
    assert labels.dtype == torch.int64 and rows_of(pixels) == [0, 1, 2, 3]
    assert dataset[4][1] == 1 and dataset[4][0].shape == (2, 4, 4)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=1)
        loader = DataLoader(dataset, batch_size=3, sampler=sampler, collate_fn=collate_batch)
        seen += [row for pixels, _ in loader for row in rows_of(pixels)]
    # 15 images over 2 ranks: padded to 8 each (one repeat), every image seen.
    assert len(seen) == 16 and set(seen) == set(range(15))


def test_datamodule_loaders() -> None:
    dm = DigitsDataModule(eval_batch_size=100)
    with pytest.raises(RuntimeError, match="setup"):
        _ = dm.train_set
    dm.setup()
    train = dm.train_set
    dm.setup()  # idempotent
    assert dm.train_set is train
    first = [batch[1] for batch in dm.loader("train", 64, shuffle=False, drop_last=True)]
    assert len(first) == len(train) // 64 and all(len(labels) == 64 for labels in first)
    order = torch.cat([labels for _, labels in dm.loader("train", 512, shuffle=True)])
    assert not torch.equal(order, train.labels) and torch.equal(
        order.sort()[0], train.labels.sort()[0]
    )
    pixels, labels = next(iter(dm.val_dataloader()))
    assert pixels.shape == (100, 1, 8, 8) and pixels.min() >= 0 and pixels.max() <= 1
    assert torch.equal(labels, dm.test_set.labels[:100])


def test_train_dataloader_comes_from_the_task() -> None:
    dm = DigitsDataModule()
    dm.setup()
    with pytest.raises(RuntimeError, match="needs a Trainer"):
        dm.train_dataloader()

    class Task(pl.LightningModule):
        def train_dataloader(self):
            return dm.loader("train", 32, shuffle=True)

    dm.trainer = SimpleNamespace(lightning_module=Task())
    assert next(iter(dm.train_dataloader()))[0].shape == (32, 1, 8, 8)
    dm.trainer = SimpleNamespace(lightning_module=pl.LightningModule())
    with pytest.raises(RuntimeError, match="does not define train_dataloader"):
        dm.train_dataloader()


class LinearTask(pl.LightningModule):
    """The smallest task: walks shuffled batches and feeds the datamodule's preprocess."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(64, 10)

    def setup(self, stage: str) -> None:
        self.preprocess = self.trainer.datamodule.preprocess()

    def train_dataloader(self) -> DataLoader:
        return self.trainer.datamodule.loader("train", 64, shuffle=True)

    def training_step(self, batch, index):
        pixels, labels = batch
        logits = self.net(self.preprocess(pixels).flatten(1))
        return torch.nn.functional.cross_entropy(logits, labels)

    def validation_step(self, batch, index) -> None:
        pixels, labels = batch
        assert pixels.shape[1:] == (1, 8, 8)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_fit_with_zca_and_sampler_injection() -> None:
    dm = DigitsDataModule(zca=True)
    trainer = pl.Trainer(
        max_steps=3,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(LinearTask(), datamodule=dm)
    assert trainer.global_step == 3 and isinstance(trainer.lightning_module.preprocess, ZCA)
    # What Lightning does to a train loader under DDP: rebuild it around a DistributedSampler.
    loader = dm.loader("train", 64, shuffle=True)
    sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=1)
    rebuilt = _update_dataloader(loader, sampler)
    assert rebuilt.sampler is sampler and rebuilt.collate_fn is collate_batch
    assert next(iter(rebuilt))[0].shape == (64, 1, 8, 8)


# ---------------------------------------------------------------------- digits
def test_digits_facts_and_split() -> None:
    dm = DigitsDataModule()
    assert (dm.name, dm.num_classes, dm.image_shape) == ("digits", 10, (1, 8, 8))
    assert_facts_match(dm)
    assert (len(dm.train_set), len(dm.test_set)) == (1437, 360)
    assert min(dm.test_set.counts()) >= 35  # stratified: every class ~20 % in test
    assert int(dm.train_set.images.max()) == 255
    again = DigitsDataModule()
    again.setup()
    assert torch.equal(again.test_set.images, dm.test_set.images)
    with pytest.raises(ValueError, match="test_fraction"):
        DigitsDataModule(test_fraction=1.0)


# ------------------------------------------------------------------------- npz
def write_npz(path: Path, **overrides) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (12, 6, 6, 3), dtype=np.uint8),
        "y_train": np.arange(12, dtype=np.uint8) % 3,
        "x_test": rng.integers(0, 256, (6, 6, 6, 3), dtype=np.uint8),
        "y_test": np.arange(6, dtype=np.int64) % 3,
        "classes": np.array(["ant", "bee", "cat"]),
    }
    arrays.update(overrides)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


def test_npz_good(tmp_path: Path) -> None:
    dm = NpzDataModule(str(write_npz(tmp_path / "toy.npz")))
    assert (dm.name, dm.class_names, dm.image_shape) == ("toy", ["ant", "bee", "cat"], (3, 6, 6))
    assert_facts_match(dm)
    assert dm.train_set.counts() == [4, 4, 4]
    grey_arrays = {
        "x_train": np.zeros((3, 5, 5), np.uint8),
        "y_train": np.array([0, 1, 2]),
        "x_test": np.zeros((2, 5, 5), np.uint8),
        "y_test": np.array([1, 1]),
        "classes": None,
    }
    grey = NpzDataModule(str(write_npz(tmp_path / "g.npz", **grey_arrays)), name="grey")
    assert (grey.name, grey.class_names, grey.image_shape) == ("grey", ["0", "1", "2"], (1, 5, 5))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"y_test": None}, "lacks y_test"),
        ({"x_train": np.zeros((12, 6, 6, 3), np.float32)}, "x_train is float32"),
        ({"x_train": np.zeros((12, 3, 6, 6), np.uint8)}, r"x_train .* \(12, 3, 6, 6\)"),
        ({"y_train": np.zeros(12, np.float64)}, "y_train is float64"),
        ({"y_train": np.zeros(11, np.int64)}, r"y_train .*\(11,\); expected .*\(12,\)"),
        ({"y_test": np.array([0, 1, 2, 0, 1, 7])}, r"classes .* at least 8 names"),
        ({"y_test": np.array([0, 1, 2, 0, 1, 7]), "classes": None}, None),
        ({"y_train": np.array([0, 1, 2] * 3 + [0, 1, -1])}, r"y_train holds labels -1\.\.2"),
        ({"x_test": np.zeros((6, 5, 6, 3), np.uint8)}, "same image shape"),
        ({"classes": np.array([1, 2, 3])}, "classes is int64"),
        ({"classes": np.array(["a", None, "c"], dtype=object)}, "cannot be read"),
    ],
)
def test_npz_bad(tmp_path: Path, overrides: dict, match: str | None) -> None:
    path = str(write_npz(tmp_path / "bad.npz", **overrides))
    if match is None:  # without classes, K = largest label + 1: valid
        assert NpzDataModule(path).num_classes == 8
        return
    with pytest.raises(DatasetFormatError, match=match):
        NpzDataModule(path)


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="no .npz archive at .*nothing.npz"):
        NpzDataModule(str(tmp_path / "nothing.npz"))


@pytest.mark.skipif(not (TEST_DATA / "cifar10" / "cifar10.npz").exists(), reason=NO_CIFAR10)
def test_cifar10_npz_matches_cifar10_facts() -> None:
    dm = NpzDataModule(str(TEST_DATA / "cifar10" / "cifar10.npz"))
    assert dm.name == CIFAR10DataModule.name
    assert dm.class_names == list(CIFAR10DataModule.CLASSES)
    assert dm.mean == pytest.approx(CIFAR10DataModule.MEAN, abs=1e-4)
    assert dm.std == pytest.approx(CIFAR10DataModule.STD, abs=1e-4)


# ----------------------------------------------------------------- torchvision
@pytest.mark.skipif(not (TEST_DATA / "MNIST").is_dir(), reason=NO_MNIST)
def test_mnist_from_shared_data() -> None:
    dm = MNISTDataModule(root=str(TEST_DATA))
    assert_facts_match(dm)
    assert (len(dm.train_set), len(dm.test_set)) == (60000, 10000)
    assert dm.train_set.mean_std()[0][0] == pytest.approx(0.1307, abs=1e-4)


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (CIFAR10DataModule, "cifar-10-batches-py"),
        (CIFAR100DataModule, "cifar-100-python"),
        (MNISTDataModule, "MNIST/raw"),
        (FashionMNISTDataModule, "FashionMNIST/raw"),
        (SVHNDataModule, "train_32x32.mat"),
    ],
)
def test_torchvision_missing_root(tmp_path: Path, module, expected: str) -> None:
    dm = module(root=str(tmp_path))
    assert len(dm.class_names) == dm.num_classes in (10, 100)
    assert len(dm.mean) == len(dm.std) == dm.image_shape[0]
    with pytest.raises(DatasetNotFoundError) as error:
        dm.setup()
    message = str(error.value)
    assert str(tmp_path / expected) in message and "--data.init_args.download=true" in message
    assert "--data.init_args.root" in message


# ----------------------------------------------------------------- image folders
def write_image(path: Path, color: tuple[int, int, int], size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


COLORS = {"n01": (255, 0, 0), "n02": (0, 255, 0), "n03": (0, 0, 255)}


def make_folder_tree(root: Path) -> Path:
    """train/<class>/ (3 images each, nested for one class) and val/<class>/ (1 image each)."""
    for wnid, color in COLORS.items():
        for i in range(3):
            sub = "images/" if wnid == "n02" else ""
            write_image(root / "train" / wnid / f"{sub}{i}.png", color, (20 + i, 12))
        write_image(root / "val" / wnid / "v.png", color, (9, 14))
    return root


def dominant_channels(images: LabeledImages) -> list[int]:
    return images.images.float().mean((2, 3)).argmax(1).tolist()


def test_image_folder_decodes_and_caches(tmp_path: Path, monkeypatch) -> None:
    root = make_folder_tree(tmp_path / "tree")
    dm = ImageFolderDataModule(str(root), image_size=8, name="toyfolder")
    assert (dm.class_names, dm.image_shape) == (["n01", "n02", "n03"], (3, 8, 8))
    dm.setup()
    assert dm.train_set.counts() == [3, 3, 3] and dm.test_set.counts() == [1, 1, 1]
    assert dominant_channels(dm.train_set) == dm.train_set.labels.tolist()
    assert dominant_channels(dm.test_set) == [0, 1, 2]
    assert len(list((root / "lit_distill_cache").glob("*.pt"))) == 2

    def no_decoding(self, path):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(ImageFolderDataModule, "_read_image", no_decoding)
    cached = ImageFolderDataModule(str(root), image_size=8)
    cached.setup()
    assert torch.equal(cached.train_set.images, dm.train_set.images)
    write_image(root / "val" / "n01" / "w.png", (255, 0, 0), (8, 8))  # stale test cache
    with pytest.raises(AssertionError, match="decoded again"):
        ImageFolderDataModule(str(root), image_size=8).setup()


def test_image_folder_subset_and_errors(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path / "tree")
    subset = ImageFolderDataModule(str(root), 8, classes=["n03", "n01"], cache=False)
    subset.setup()
    assert subset.class_names == ["n03", "n01"]
    assert dominant_channels(subset.train_set) == [2, 2, 2, 0, 0, 0]
    with pytest.raises(DatasetFormatError, match=r"missing: \['n09'\]"):
        ImageFolderDataModule(str(root), 8, classes=["n01", "n09"])
    with pytest.raises(DatasetNotFoundError, match="no training folder"):
        ImageFolderDataModule(str(tmp_path / "absent"), 8)
    (root / "val" / "n02" / "v.png").unlink()
    with pytest.raises(DatasetFormatError, match=r"val/n02 is missing or holds no images"):
        ImageFolderDataModule(str(root), 8, cache=False).setup()
    (root / "train" / "n04").mkdir()
    with pytest.raises(DatasetFormatError, match=r"train/n04 is missing or holds no images"):
        ImageFolderDataModule(str(root), 8, cache=False).setup()


def test_tiny_imagenet_layout(tmp_path: Path) -> None:
    root = tmp_path / "tiny-imagenet-200"
    lines = []
    for wnid, color in COLORS.items():
        for i in range(2):
            write_image(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", color, (64, 64))
    # Val images in one folder, labelled (in a shuffled order) by the annotations file.
    for i, wnid in enumerate(["n03", "n01", "n02", "n01"]):
        write_image(root / "val" / "images" / f"val_{i}.JPEG", COLORS[wnid], (64, 64))
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    dm = TinyImageNetDataModule(str(root))
    assert (dm.name, dm.image_shape, dm.class_names) == ("tinyimagenet", (3, 64, 64), list(COLORS))
    dm.setup()
    assert dm.test_set.labels.tolist() == [2, 0, 1, 0]
    assert dominant_channels(dm.test_set) == [2, 0, 1, 0]
    assert dm.train_set.counts() == [2, 2, 2]
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn77\n")
    with pytest.raises(DatasetFormatError, match="line 1"):
        TinyImageNetDataModule(str(root), cache=False).setup()


# ------------------------------------------------------------------ transforms
def test_normalize_round_trip() -> None:
    normalize = Normalize((0.5, 0.25), (0.5, 0.25))
    x = torch.rand(3, 2, 4, 4)
    assert torch.allclose(normalize(x)[:, 0], (x[:, 0] - 0.5) / 0.5)
    assert torch.allclose(normalize.inverse(normalize(x)), x, atol=1e-6)
    assert normalize.state_dict() == {}
    with pytest.raises(ValueError, match="positive"):
        Normalize((0.5,), (0.0,))


def test_preprocess_choice() -> None:
    dm = DigitsDataModule()
    assert isinstance(dm.preprocess(), Normalize)
    assert dm.preprocess().mean.flatten().tolist() == pytest.approx(dm.mean)
    whitened = DigitsDataModule(zca=True)
    with pytest.raises(RuntimeError, match="setup"):
        whitened.preprocess()
    whitened.setup()
    assert isinstance(whitened.preprocess(), ZCA)


# ------------------------------------------------------------------------ ZCA
def correlated_images(n: int = 400, seed: int = 0) -> torch.Tensor:
    """(n, 3, 2, 2) uint8 pixels with strongly correlated features."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.eye(12) + 0.3 * torch.randn(12, 12, generator=generator)
    values = torch.randn(n, 12, generator=generator) @ mixing
    values = (values - values.min()) / (values.max() - values.min()) * 255
    return values.round().to(torch.uint8).view(n, 3, 2, 2)


def covariance(x: torch.Tensor) -> torch.Tensor:
    rows = x.flatten(1).double()
    rows = rows - rows.mean(0)
    return rows.T @ rows / (rows.shape[0] - 1)


def test_zca_whitens_and_inverts() -> None:
    pixels = correlated_images().float() / 255
    exact = ZCA(12, eps=1e-6).fit(pixels)
    whitened = exact(pixels)
    assert whitened.shape == pixels.shape
    assert torch.allclose(covariance(whitened), torch.eye(12, dtype=torch.float64), atol=2e-3)
    # With the recipe's eps = 0.1 each eigenvalue s becomes s / (s + eps): below 1.
    zca = ZCA(12).fit(pixels)
    eigenvalues = torch.linalg.eigvalsh(covariance(pixels))
    expected = eigenvalues / (eigenvalues + 0.1)
    assert torch.allclose(torch.linalg.eigvalsh(covariance(zca(pixels))), expected, atol=1e-4)
    assert torch.allclose(zca.inverse(zca(pixels)), pixels, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the product stays in float32
        under_autocast = zca(pixels)
    assert under_autocast.dtype == torch.float32 and torch.equal(under_autocast, zca(pixels))
    restored = ZCA(12)
    restored.load_state_dict(zca.state_dict())
    assert torch.equal(restored(pixels), zca(pixels))
    with pytest.raises(RuntimeError, match="not fitted"):
        ZCA(12)(pixels)


def test_zca_cache_reused_and_refitted_when_stale(tmp_path: Path, monkeypatch) -> None:
    labels = torch.arange(400) % 2
    train = LabeledImages(correlated_images(), labels, ["a", "b"], "toy")
    fitted = load_or_fit_zca(train, cache_dir=tmp_path)
    assert (tmp_path / "zca_toy_eps0.1.pt").is_file()
    fits = []
    original_fit = ZCA.fit
    monkeypatch.setattr(ZCA, "fit", lambda self, x: fits.append(1) or original_fit(self, x))
    reused = load_or_fit_zca(train, cache_dir=tmp_path)
    assert fits == [] and torch.equal(reused.transform, fitted.transform)
    changed = LabeledImages(correlated_images(seed=1), labels, ["a", "b"], "toy")
    refitted = load_or_fit_zca(changed, cache_dir=tmp_path)
    assert fits == [1] and not torch.equal(refitted.transform, fitted.transform)
    load_or_fit_zca(changed, cache_dir=tmp_path)
    assert fits == [1]  # the refit replaced the stale cache


def test_unwritable_cache_only_warns(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.warns(UserWarning, match="Could not write the cache"):
        write_cache(tmp_path / "file" / "cache.pt", "key", {"x": torch.zeros(1)})
    write_cache(tmp_path / "cache.pt", "key", {"x": torch.ones(1)})
    assert read_cache(tmp_path / "cache.pt", "other") is None
    assert torch.equal(read_cache(tmp_path / "cache.pt", "key")["x"], torch.ones(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.pt", "file"]  # no temporaries


def test_npz_zca_cached_next_to_the_file(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "toy.npz")
    dm = NpzDataModule(str(path), zca=True)
    dm.prepare_data()
    assert (tmp_path / "zca_toy_eps0.1.pt").is_file()
    x = dm.train_set.pixels(torch.arange(4))
    assert dm.preprocess()(x).shape == x.shape
