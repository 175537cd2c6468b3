"""The learnable synthetic set: multi-formation, initialisation, labels, checkpoint round trip."""

import pytest
import torch
import torch.nn.functional as F

from lit_distill.data import Normalize
from lit_distill.data.images import LabeledImages
from lit_distill.errors import DatasetFormatError, SyntheticSetError
from lit_distill.multiformation import PAD_VALUE, decode_multiformation, encode_multiformation
from lit_distill.synthetic import SyntheticSet


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def real_images(per_class: int = 12, classes: int = 3, size: int = 8) -> LabeledImages:
    """Random uint8 images; channel 0's top-left pixel is the image's row (to identify it)."""
    n = per_class * classes
    pixels = torch.randint(0, 256, (n, 3, size, size), generator=gen(1), dtype=torch.uint8)
    pixels[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return LabeledImages(pixels, labels, [f"c{c}" for c in range(classes)], name="toy")


def row_of(image: torch.Tensor) -> int:
    return round(float(image[0, 0, 0]) * 255)


# ---------------------------------------------------------------------- multi-formation
def test_decode_shapes_and_identity() -> None:
    x = torch.rand(5, 3, 8, 8)
    assert decode_multiformation(x, 1) is x
    assert decode_multiformation(x, 2).shape == (20, 3, 8, 8)
    assert decode_multiformation(torch.rand(2, 1, 9, 9), 3).shape == (18, 1, 9, 9)


def test_decode_constant_quadrants_tile_major() -> None:
    values = torch.tensor([[0.1, 0.2], [0.3, 0.4]])  # quadrant (row, col)
    one = values.repeat_interleave(4, 0).repeat_interleave(4, 1).expand(3, 8, 8)
    images = torch.stack([one, one + 0.5])
    decoded = decode_multiformation(images, 2)
    # Tile-major: tile k of image 0, tile k of image 1, tiles in row-major order.
    for k, value in enumerate(values.flatten().tolist()):
        for j, offset in enumerate((0.0, 0.5)):
            assert torch.allclose(decoded[2 * k + j], torch.full((3, 8, 8), value + offset))


def test_decode_pads_with_grey() -> None:
    # 5 px at factor 2: tiles of 3 px, the last row/column of the bottom-right tile is padding.
    decoded = decode_multiformation(torch.zeros(1, 1, 5, 5), 2)
    assert float(decoded[0].max()) == 0.0
    assert float(decoded[3].max()) > 0.0
    assert torch.allclose(decoded[3, 0, -1, -1], torch.tensor(PAD_VALUE))


def test_decode_gradient_flows() -> None:
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    decode_multiformation(x, 2).square().sum().backward()
    assert x.grad is not None and bool((x.grad != 0).all())


def test_encode_then_decode_gives_resampled_images() -> None:
    images = torch.rand(8, 3, 8, 8)
    decoded = decode_multiformation(encode_multiformation(images, 2), 2)
    small = F.interpolate(images, size=(4, 4), mode="area")
    expected = F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(decoded, expected, atol=1e-6)


def test_encode_odd_size_keeps_whole_tiles() -> None:
    # 9 px at factor 2: 5 px tiles; tile 0 lies wholly inside the image, the others are cut.
    images = torch.rand(4, 3, 9, 9)
    stored = encode_multiformation(images, 2)
    assert stored.shape == (1, 3, 9, 9)
    small = F.interpolate(images[:1], size=(5, 5), mode="area")
    expected = F.interpolate(small, size=(9, 9), mode="bilinear", align_corners=False)
    assert torch.allclose(decode_multiformation(stored, 2)[:1], expected, atol=1e-6)


# ---------------------------------------------------------------------- the set
def test_shapes_and_class_major_labels() -> None:
    synset = SyntheticSet(3, 2, (3, 8, 8), factor=2)
    assert synset.images.shape == (6, 3, 8, 8) and synset.images.dtype == torch.float32
    assert synset.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert synset.label_logits is None and synset.num_images == 24
    images, targets = synset.decoded()
    assert images.shape == (24, 3, 8, 8)
    assert targets.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    assert synset.lr is None and set(synset.learned()) == {"images"}  # learns images only


def test_the_set_learns_what_it_is_given_and_nothing_else() -> None:
    synset = SyntheticSet(3, 2, (3, 8, 8), soft_labels=True, lr=0.01)
    assert synset.lr.item() == pytest.approx(0.01)
    learned = synset.learned()
    assert set(learned) == {"images", "labels", "lr"}
    assert {id(p) for p in synset.parameters()} == {id(p) for p in learned.values()}


def test_input_space_set_initialises_through_preprocess_and_never_clamps() -> None:
    norm = Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    real = real_images()
    pixel = SyntheticSet(3, 2, (3, 8, 8))
    pixel.initialize("real", real=real, generator=gen(1))
    synset = SyntheticSet(3, 2, (3, 8, 8), space="input")
    synset.initialize("real", real=real, generator=gen(1), preprocess=norm)
    torch.testing.assert_close(synset.images.detach(), norm(pixel.images.detach()))
    torch.testing.assert_close(synset.pixels(norm), pixel.images.detach())
    with torch.no_grad():
        synset.images.mul_(10)
    before = synset.images.detach().clone()
    synset.clamp_()
    assert torch.equal(synset.images, before) and before.abs().max() > 1
    with pytest.raises(ValueError, match="preprocess"):
        SyntheticSet(3, 2, (3, 8, 8), space="input").initialize("noise", generator=gen())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ipc": 0},
        {"factor": 0},
        {"factor": 5},
        {"num_classes": 0},
        {"lr": 0.0},
        {"lr": float("nan")},
        {"space": "zca"},
    ],
)
def test_invalid_arguments(kwargs: dict) -> None:
    args = {"num_classes": 2, "ipc": 1, "image_shape": (3, 8, 8), **kwargs}
    with pytest.raises(ValueError):
        SyntheticSet(**args)


def test_initialize_real_factor_1_gives_real_pixels_of_the_class() -> None:
    real = real_images()
    synset = SyntheticSet(3, 4, (3, 8, 8))
    synset.initialize("real", real=real, generator=gen())
    for i, image in enumerate(synset.images.detach()):
        row = row_of(image)
        assert int(real.labels[row]) == i // 4
        assert torch.equal(image, real.images[row].float() / 255)
    assert len({row_of(image) for image in synset.images.detach()}) == 12


def test_initialize_real_factor_2_decodes_to_resampled_real_images() -> None:
    real = real_images()
    synset = SyntheticSet(3, 2, (3, 8, 8), factor=2)
    synset.initialize("real", real=real, generator=gen(3))
    again = gen(3)
    chosen = [real.sample(c, 8, again) for c in range(3)]  # the same draws
    small = F.interpolate(torch.cat(chosen), size=(4, 4), mode="area")
    expected = F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(synset.decoded()[0].detach(), expected, atol=1e-6)


def test_initialize_is_reproducible() -> None:
    sets = [SyntheticSet(3, 2, (3, 8, 8), factor=2) for _ in range(3)]
    for synset, seed in zip(sets, (5, 5, 6), strict=True):
        synset.initialize("real", real=real_images(), generator=gen(seed))
    assert torch.equal(sets[0].images, sets[1].images)
    assert not torch.equal(sets[0].images, sets[2].images)


def test_initialize_correct_keeps_only_correct_images() -> None:
    real = real_images()

    def classifier(pixels: torch.Tensor) -> torch.Tensor:
        # "Correct" exactly on even rows: predict the true class there, class 0 elsewhere.
        rows = (pixels[:, 0, 0, 0] * 255).round().long()
        predicted = torch.where(rows % 2 == 0, real.labels[rows], torch.zeros_like(rows))
        return F.one_hot(predicted, 3).float()

    synset = SyntheticSet(3, 3, (3, 8, 8))
    synset.initialize("correct", real=real, generator=gen(), classifier=classifier)
    for i, image in enumerate(synset.images.detach()):
        row = row_of(image)
        assert int(real.labels[row]) == i // 3
        assert row % 2 == 0 or i // 3 == 0


def test_initialize_correct_too_few() -> None:
    real = real_images()

    def always_zero(pixels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(torch.zeros(len(pixels), dtype=torch.long), 3).float()

    with pytest.raises(SyntheticSetError, match="classified correctly"):
        SyntheticSet(3, 2, (3, 8, 8)).initialize(
            "correct", real=real, generator=gen(), classifier=always_zero
        )


def test_initialize_errors() -> None:
    real = real_images(per_class=4)
    with pytest.raises(DatasetFormatError, match="ipc"):
        SyntheticSet(3, 5, (3, 8, 8)).initialize("real", real=real)
    with pytest.raises(DatasetFormatError, match="factor 2 needs 8"):
        SyntheticSet(3, 2, (3, 8, 8), factor=2).initialize("real", real=real)
    with pytest.raises(SyntheticSetError, match="distilled from"):
        SyntheticSet(4, 1, (3, 8, 8)).initialize("real", real=real)
    with pytest.raises(ValueError, match="classifier"):
        SyntheticSet(3, 1, (3, 8, 8)).initialize("correct", real=real)


def test_initialize_noise_law_and_clamp() -> None:
    synset = SyntheticSet(2, 50, (3, 8, 8))
    synset.initialize("noise", generator=gen())
    pixels = synset.images.detach()
    assert float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0
    assert float(pixels.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(pixels.std()) == pytest.approx(0.25, abs=0.02)
    with torch.no_grad():
        synset.images.mul_(4).sub_(2)
    synset.clamp_()
    assert synset.images.min().item() == 0.0 and synset.images.max().item() == 1.0


def test_decoded_subset_of_classes() -> None:
    synset = SyntheticSet(4, 2, (3, 8, 8), factor=2)
    synset.initialize("noise", generator=gen())
    all_images, _ = synset.decoded()
    images, targets = synset.decoded([3, 1])
    assert torch.equal(images, torch.cat([all_images[24:32], all_images[8:16]]))
    assert targets.tolist() == [3] * 8 + [1] * 8
    assert torch.equal(synset.class_images(2), all_images[16:24])
    synset.class_images(1).sum().backward()
    grad_rows = synset.images.grad.flatten(1).abs().sum(1) != 0
    assert grad_rows.tolist() == [False, False, True, True, False, False, False, False]
    with pytest.raises(IndexError):
        synset.decoded([4])


def test_soft_labels() -> None:
    synset = SyntheticSet(3, 2, (3, 8, 8), factor=2, soft_labels=True)
    _, targets = synset.decoded()
    assert targets.shape == (24, 3)
    assert torch.equal(targets.argmax(1), torch.arange(3).repeat_interleave(8))
    assert targets.softmax(1).max(1).values.min().item() > 0.999
    logits = torch.randn(6, 3)
    synset.initialize_soft_labels(logits)
    _, targets = synset.decoded([1])
    assert torch.equal(targets, logits[2:4].repeat(4, 1))
    with pytest.raises(ValueError, match="shape"):
        synset.initialize_soft_labels(torch.zeros(6, 4))
    with pytest.raises(ValueError, match="soft_labels=True"):
        SyntheticSet(3, 2, (3, 8, 8)).initialize_soft_labels(logits)


def test_state_dict_round_trip() -> None:
    synset = SyntheticSet(3, 2, (3, 8, 8), factor=2, soft_labels=True, lr=0.03)
    synset.initialize("noise", generator=gen())
    synset.initialize_soft_labels(torch.randn(6, 3))
    state = synset.state_dict()
    assert set(state) == {"images", "labels", "label_logits", "lr"}
    restored = SyntheticSet(3, 2, (3, 8, 8), factor=2, soft_labels=True, lr=0.01)
    restored.load_state_dict(state)
    for key, value in restored.state_dict().items():
        assert torch.equal(value, state[key])
    assert set(SyntheticSet(3, 2, (3, 8, 8)).state_dict()) == {"images", "labels"}


def test_reference_mix_initialisation_takes_each_class_s_first_images_nearest() -> None:
    real = real_images()
    synset = SyntheticSet(3, 1, (3, 8, 8), factor=2)
    synset.initialize("real", real=real, pick="first", downsample="nearest")
    for c in range(3):
        first = real.pixels(real.indices_of(c)[:4])  # ipc x factor^2 = 4, in dataset order
        expected = F.interpolate(first, size=(4, 4))  # nearest, F.interpolate's default
        tiles = synset.images.detach()[c].unfold(1, 4, 4).unfold(2, 4, 4)  # (C, 2, 2, 4, 4)
        assert torch.equal(tiles.permute(1, 2, 0, 3, 4).reshape(4, 3, 4, 4), expected)


@pytest.mark.parametrize("factor", [1, 2])
def test_per_class_leaves_give_the_whole_set_gradient(factor: int) -> None:
    """DM backpropagates one class at a time through a leaf of that class's stored rows; the
    summed row gradients must equal the gradient through the whole set."""
    syn = SyntheticSet(3, 2, (3, 8, 8), factor=factor)
    with torch.no_grad():
        syn.images.copy_(torch.rand(syn.images.shape, generator=gen(2)))
    weights = torch.rand(3, 3, 8, 8, generator=gen(3))

    def loss(decoded: torch.Tensor, c: int) -> torch.Tensor:
        return (decoded * weights[c]).sin().sum() * (c + 1)

    sum(loss(syn.class_images(c), c) for c in range(3)).backward()
    whole = syn.images.grad.clone()
    syn.images.grad = torch.zeros_like(syn.images)
    for c in range(3):
        rows = syn.class_rows(c)
        stored = syn.images[rows].detach().requires_grad_(True)
        loss(syn.decode(stored), c).backward()
        syn.images.grad[rows] += stored.grad
    torch.testing.assert_close(syn.images.grad, whole)
    with pytest.raises(IndexError):
        syn.class_rows(3)
