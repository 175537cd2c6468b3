"""Differentiable siamese augmentation and CutMix: siamese replay, ranges, gradients."""

import math

import pytest
import torch

from lit_distill.augment import DSA, GEOMETRIC_OPS, OPS, cutmix
from lit_distill.augment.dsa import _Sampler

MODES = ("single", "all", "idc")
STRATEGIES = (*OPS, "color_crop_cutout_flip_scale_rotate")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ramps(n: int, size: int = 32) -> torch.Tensor:
    """Channel 0: column index + 1, channel 1: row index + 1 (0 is left for the zero fill)."""
    index = torch.arange(1, size + 1, dtype=torch.float64)
    return torch.stack([index.expand(size, size), index[:, None].expand(size, size)]).expand(
        n, 2, size, size
    )


def normalised_coords(size: int = 32) -> torch.Tensor:
    """(2, H, W): the (u, v) coordinates in [-1, 1] of the pixel centres (align_corners=False)."""
    u = (2 * torch.arange(size, dtype=torch.float64) + 1) / size - 1
    return torch.stack([u.expand(size, size), u[:, None].expand(size, size)])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_siamese_replay_and_reproducibility(strategy: str, mode: str) -> None:
    dsa = DSA(strategy, mode=mode)
    real = torch.rand(6, 3, 16, 16)
    for seed in range(4):
        out_real, out_syn = dsa(real, real[:3], generator=gen(seed))
        assert torch.equal(out_real[:3], out_syn)
        assert torch.equal(dsa(real, generator=gen(seed)), out_real)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_different_seeds_give_different_results(strategy: str) -> None:
    dsa, x = DSA(strategy), torch.rand(2, 3, 16, 16)
    outputs = [dsa(x, generator=gen(seed)) for seed in range(8)]
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])


def test_default_generator_is_used_without_one() -> None:
    dsa, x = DSA(), torch.rand(2, 3, 16, 16)
    torch.manual_seed(3)
    first = dsa(x)
    torch.manual_seed(3)
    assert torch.equal(dsa(x), first)


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("op", OPS)
def test_gradient_reaches_pixels_even_outside_unit_range(op: str, per_sample: bool) -> None:
    syn = (torch.rand(4, 3, 16, 16) * 4 - 1.5).requires_grad_()
    out = DSA(op, per_sample=per_sample)(syn, generator=gen(0))
    (out * torch.rand_like(out)).sum().backward()
    outside = (syn < 0) | (syn > 1)
    assert torch.isfinite(syn.grad).all()
    assert syn.grad[outside].abs().sum() > 0


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("op", OPS)
def test_gradients_match_finite_differences(op: str, per_sample: bool) -> None:
    x = torch.rand(2, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    dsa = DSA(op, per_sample=per_sample)
    assert torch.autograd.gradcheck(lambda t: dsa(t, generator=gen(1)), (x,))


def test_crop_translates_by_whole_pixels_within_bounds() -> None:
    x = ramps(300)
    out = DSA("crop", per_sample=True)(x, generator=gen(0))
    shift = out[:, :, 16, 16] - x[:, :, 16, 16]  # (dx, dy) of every sample
    assert shift.abs().max() == 4  # round(0.125 * 32) = 4, reached
    assert torch.equal(shift, shift.round())
    assert len(torch.unique(shift[:, 0])) == 9 and len(torch.unique(shift[:, 1])) == 9
    left_edge = out[:, 0, 16, 0]  # zero where the content moved right
    assert torch.equal(left_edge == 0, shift[:, 0] < 0)


def test_scale_factors_within_bounds() -> None:
    coords = normalised_coords().expand(200, 2, 32, 32)
    out = DSA("scale", per_sample=True)(coords, generator=gen(0))
    centre = (slice(None), slice(None), slice(12, 20), slice(12, 20))  # sampled inside the image
    factors = (out[centre] / coords[centre]).flatten(2)
    factors, spread = factors.mean(-1), factors.std(-1)
    assert spread.max() < 1e-5  # a pure scale per axis
    assert factors.min() >= 1 / 1.2 - 1e-6 and factors.max() <= 1.2 + 1e-6
    assert factors.min() < 0.9 and factors.max() > 1.1
    assert not torch.allclose(factors[:, 0], factors[:, 1])  # sx and sy are independent


def test_rotation_angle_within_bounds() -> None:
    coords = normalised_coords().expand(200, 2, 32, 32)
    out = DSA("rotate", per_sample=True)(coords, generator=gen(0))
    u, v = coords[:, 0, 8, 24], coords[:, 1, 8, 24]  # a point sampled inside the image
    angle = torch.atan2(out[:, 1, 8, 24], out[:, 0, 8, 24]) - torch.atan2(v, u)
    degrees = torch.rad2deg(angle)
    assert degrees.abs().max() <= 15 + 1e-4
    assert degrees.min() < -12 and degrees.max() > 12


def test_cutout_zeroes_one_clipped_square_of_half_the_side() -> None:
    out = DSA("cutout", per_sample=True)(torch.ones(300, 1, 32, 32), generator=gen(0))
    zero = out[:, 0] == 0
    rows, cols = zero.any(2).sum(1), zero.any(1).sum(1)
    assert torch.equal(zero.sum((1, 2)), rows * cols)  # one rectangle
    assert rows.min() >= 8 and cols.min() >= 8 and rows.max() == 16 and cols.max() == 16
    border = zero.clone()
    border[:, 1:-1, 1:-1] = False
    inside = ~border.any(2).any(1)  # squares that the border did not clip
    assert inside.any() and (rows[inside] == 16).all() and (cols[inside] == 16).all()


def test_flip_probability_is_one_half() -> None:
    x = torch.tensor([0.0, 1.0]).expand(4000, 1, 1, 2)
    flipped = DSA("flip", per_sample=True)(x, generator=gen(0))[:, 0, 0, 0] == 1
    assert abs(flipped.float().mean() - 0.5) < 0.03
    shared, g = DSA("flip"), gen(1)
    calls = [bool(shared(x[:2], generator=g)[0, 0, 0, 0] == 1) for _ in range(400)]
    assert abs(sum(calls) / 400 - 0.5) < 0.08


def test_color_keeps_grey_images_grey_within_brightness_range() -> None:
    x = torch.full((500, 3, 4, 4), 0.3)
    out = DSA("color", per_sample=True)(x, generator=gen(0))
    offset = out[:, 0, 0, 0] - 0.3
    assert torch.allclose(out, out[:, :1, :1, :1].expand_as(out))  # no colour, no contrast
    assert offset.min() >= -0.5 and offset.max() <= 0.5
    assert offset.min() < -0.45 and offset.max() > 0.45


def test_per_sample_draws_differ_and_shared_draws_do_not() -> None:
    x = torch.rand(1, 3, 16, 16).expand(8, 3, 16, 16)
    shared = DSA("color_crop_scale_rotate", mode="all")(x, generator=gen(0))
    own = DSA("color_crop_scale_rotate", mode="all", per_sample=True)(x, generator=gen(0))
    assert all(torch.equal(shared[0], image) for image in shared)
    assert not any(torch.equal(own[0], image) for image in own[1:])


def test_per_sample_with_two_batches_raises() -> None:
    with pytest.raises(ValueError, match="per_sample"):
        DSA(per_sample=True)(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))


def test_batches_of_different_image_shapes_raise() -> None:
    with pytest.raises(ValueError, match="same C, H, W"):
        DSA()(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16))


def test_unknown_op_and_mode_raise() -> None:
    with pytest.raises(ValueError, match="valid ops are color, crop"):
        DSA("color_blur")
    with pytest.raises(ValueError, match="unknown DSA mode"):
        DSA(mode="double")  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["none", "", "None"])
def test_identity_strategy(strategy: str) -> None:
    a, b = torch.rand(3, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert DSA(strategy)(a) is a
    assert DSA(strategy)(a, b) == (a, b)


@pytest.mark.parametrize("mode", MODES)
def test_output_keeps_dtype_and_device(mode: str) -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for dtype in (torch.float32, torch.float64):
            x = torch.rand(4, 3, 8, 8, device=device, dtype=dtype)
            out = DSA(mode=mode)(x, generator=gen(0))
            assert out.device == x.device and out.dtype == dtype


def test_idc_mode_applies_flip_colour_one_geometric_op_then_cutout() -> None:
    dsa, sample = DSA(mode="idc"), _Sampler(1, gen(0))
    chosen = [dsa._choose(sample) for _ in range(60)]
    assert all(ops[:2] == ["flip", "color"] and ops[3] == "cutout" for ops in chosen)
    assert {ops[2] for ops in chosen} == set(GEOMETRIC_OPS)
    assert DSA("color_crop", mode="idc")._choose(sample) == ["color", "crop"]
    assert DSA("flip_cutout", mode="idc")._choose(sample) == ["flip", "cutout"]


def test_single_mode_picks_every_op() -> None:
    dsa, sample = DSA(), _Sampler(1, gen(0))
    assert {op for _ in range(100) for op in dsa._choose(sample)} == set(OPS)


def test_cutmix_pastes_a_box_and_lam_is_the_kept_fraction() -> None:
    images = torch.arange(16, dtype=torch.float32).view(16, 1, 1, 1).expand(16, 3, 32, 32)
    labels = torch.arange(16)
    for seed in range(10):
        mixed, labels_a, labels_b, lam = cutmix(images, labels, generator=gen(seed))
        assert mixed.shape == images.shape and torch.equal(labels_a, labels)
        assert 0.0 <= lam <= 1.0
        moved = labels_b != labels  # images whose box came from another image
        changed = mixed[moved] != images[moved]
        assert math.isclose(changed.float().mean().item(), 1 - lam, abs_tol=1e-6)
        sources = labels_b[moved].view(-1, 1, 1, 1).expand_as(changed).float()
        assert torch.equal(mixed[moved][changed], sources[changed])


def test_cutmix_prob_zero_is_identity_and_seed_reproducible() -> None:
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    mixed, labels_a, labels_b, lam = cutmix(images, labels, generator=gen(0), prob=0.0)
    assert mixed is images and labels_b is labels_a and lam == 1.0
    first = cutmix(images, labels, generator=gen(5))
    second = cutmix(images, labels, generator=gen(5))
    assert torch.equal(first[0], second[0]) and torch.equal(first[2], second[2])
    assert first[3] == second[3]


def test_cutmix_permutes_soft_labels_and_passes_gradients() -> None:
    images = torch.rand(6, 3, 8, 8, requires_grad=True)
    soft = torch.softmax(torch.randn(6, 10), dim=1)
    mixed, soft_a, soft_b, _ = cutmix(images, soft, generator=gen(2))
    assert soft_b.shape == soft.shape
    assert sorted(soft_b.sum(0).tolist()) == pytest.approx(sorted(soft.sum(0).tolist()))
    assert any(torch.equal(soft_b[0], row) for row in soft)
    mixed.sum().backward()
    assert torch.equal(images.grad, torch.ones_like(images))
