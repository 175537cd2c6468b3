"""The synthetic-set file: round trip, PNG grid, dataset view, damaged and foreign files."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from lit_distill.data.images import LabeledImages
from lit_distill.errors import SyntheticSetError
from lit_distill.export import (
    SyntheticData,
    image_grid,
    load_synthetic,
    load_synthetic_dataset,
    save_synthetic,
)
from lit_distill.synthetic import SyntheticSet

CLASSES = ["cat", "dog", "frog"]


def make_data(factor: int = 2, soft: bool = True) -> tuple[SyntheticSet, SyntheticData]:
    synset = SyntheticSet(3, 2, (3, 8, 8), factor=factor, soft_labels=soft, lr=0.02)
    synset.initialize("noise", generator=torch.Generator().manual_seed(0))
    data = SyntheticData.from_synthetic_set(
        synset,
        class_names=CLASSES,
        dataset="toy",
        zca=True,
        method="tgdd",
        iteration=7,
        config={"ipc": 2, "alpha": 2.5, "nested": {"steps": [1, 2]}, "note": None},
    )
    return synset, data


def assert_same(a: SyntheticData, b: SyntheticData) -> None:
    for name, value in vars(a).items():
        other = getattr(b, name)
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), name
        else:
            assert value == other, name


def test_round_trip_and_png(tmp_path: Path) -> None:
    synset, data = make_data()
    path = save_synthetic(tmp_path / "out" / "synthetic.pt", data)
    loaded = load_synthetic(path)
    assert_same(data, loaded)
    assert loaded.lr == pytest.approx(0.02) and loaded.iteration == 7
    png = Image.open(path.with_suffix(".png"))
    # One class per row (3 rows), ipc = 2 columns, 8 px images with 2 px padding.
    assert png.size == (2 * 10 + 2, 3 * 10 + 2) and png.mode == "RGB"
    assert not any(p.name.startswith(".") for p in path.parent.iterdir())  # no temporary left


def test_hard_labels_without_lr_and_no_grid(tmp_path: Path) -> None:
    synset = SyntheticSet(3, 1, (1, 8, 8))
    data = SyntheticData.from_synthetic_set(
        synset, class_names=CLASSES, dataset="toy", zca=False, method="dm"
    )
    path = save_synthetic(tmp_path / "s.pt", data, grid=False)
    loaded = load_synthetic(path)
    assert loaded.lr is None and loaded.label_logits is None and loaded.config == {}
    assert not path.with_suffix(".png").exists()


def test_decoded_matches_synthetic_set() -> None:
    synset, data = make_data()
    images, targets = synset.decoded()
    exported_images, exported_targets = data.decoded()
    assert torch.equal(images.detach(), exported_images)
    assert torch.equal(targets.detach(), exported_targets)


@pytest.mark.parametrize("soft", [False, True])
def test_as_dataset(tmp_path: Path, soft: bool) -> None:
    _, data = make_data(soft=soft)
    dataset = load_synthetic_dataset(save_synthetic(tmp_path / "s.pt", data))
    assert len(dataset) == 24
    image, target = dataset[9]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32
    if soft:
        assert target.shape == (3,) and int(target.argmax()) == 1
    else:
        assert target.dtype == torch.int64 and int(target) == 1
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=5)))
    assert batch[0].shape == (5, 3, 8, 8)


def test_many_classes_grid_wraps(tmp_path: Path) -> None:
    classes = [str(c) for c in range(16)]
    synset = SyntheticSet(16, 1, (3, 4, 4))
    data = SyntheticData.from_synthetic_set(
        synset, class_names=classes, dataset="toy", zca=False, method="dm"
    )
    path = save_synthetic(tmp_path / "s.pt", data)
    width, height = Image.open(path.with_suffix(".png")).size
    assert width == height == 4 * 6 + 2  # 4 classes per row, 4 rows


def test_image_grid() -> None:
    grid = image_grid(torch.rand(6, 1, 4, 4) * 3 - 1, nrow=3)
    assert grid.shape == (3, 2 * 6 + 2, 3 * 6 + 2)
    assert float(grid.min()) >= 0.0 and float(grid.max()) <= 1.0


def test_random_real() -> None:
    pixels = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(30) % 3
    real = LabeledImages(pixels, labels, CLASSES, name="toy")
    data = SyntheticData.random_real(
        real, 4, torch.Generator().manual_seed(0), dataset="toy", zca=False, class_names=CLASSES
    )
    assert data.method == "random_real" and data.factor == 1 and data.lr is None
    assert data.images.shape == (12, 3, 8, 8)
    assert data.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    real_pixels = pixels.float() / 255
    for image, label in zip(data.images, data.labels, strict=True):
        matches = (real_pixels == image).flatten(1).all(1)
        assert matches.any() and int(labels[matches][0]) == int(label)


def test_check_dataset() -> None:
    _, data = make_data()
    data.check_dataset("toy", 3, [3, 8, 8])
    with pytest.raises(SyntheticSetError, match="'toy', not 'cifar10'.*--data"):
        data.check_dataset("cifar10", 10, (3, 32, 32))


def rewrite(path: Path, **changes) -> None:
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    for key, value in changes.items():
        if value is None and key != "label_logits":
            del payload[key]
    torch.save(payload, path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"format": "lit-distill/trajectory"}, "not a lit-distill synthetic-set file"),
        ({"version": 2}, "format version 2"),
        ({"method": None}, "missing fields \\['method'\\]"),
        ({"ipc": 3}, "expected 3 classes x 3 ipc"),
        ({"labels": torch.zeros(6, dtype=torch.long)}, "class-major"),
        ({"label_logits": torch.zeros(6, 4)}, "label_logits"),
        ({"class_names": ["a"]}, "1 class names"),
        ({"checksum": 0}, "checksum"),
    ],
)
def test_damaged_or_inconsistent_files(tmp_path: Path, changes: dict, message: str) -> None:
    path = save_synthetic(tmp_path / "s.pt", make_data()[1], grid=False)
    rewrite(path, **changes)
    with pytest.raises(SyntheticSetError, match=message) as err:
        load_synthetic(path)
    assert str(path) in str(err.value)


def test_truncated_foreign_and_missing_files(tmp_path: Path) -> None:
    path = save_synthetic(tmp_path / "s.pt", make_data()[1], grid=False)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(SyntheticSetError, match="not a readable"):
        load_synthetic(path)
    foreign = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2)}, foreign)
    with pytest.raises(SyntheticSetError, match="not a lit-distill"):
        load_synthetic(foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("hello")
    with pytest.raises(SyntheticSetError):
        load_synthetic(garbage)
    with pytest.raises(FileNotFoundError):
        load_synthetic(tmp_path / "missing.pt")


def test_config_must_be_plain(tmp_path: Path) -> None:
    _, data = make_data()
    data.config = {"path": tmp_path}
    with pytest.raises(SyntheticSetError, match=r"config\['path'\] is a"):
        save_synthetic(tmp_path / "s.pt", data)
    assert not (tmp_path / "s.pt").exists()
