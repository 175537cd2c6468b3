"""Tests of the network registry and architectures (CPU, tiny batches)."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from lit_distill.models import ConvNet, available_models, build_model, register_model, registry

ARCHS = available_models()
CONVNETS = [arch for arch in ARCHS if arch.startswith("convnet")]


def _supported_sizes(arch: str) -> list[int]:
    """Square image sides each architecture must handle."""
    if arch == "convnetd5":
        return [32, 64]  # five halvings take 28 px below 1 px (see test_impossible_depth_...)
    if arch in ("convnet", "convnet3", "convnet_bn"):
        return [8, 28, 32, 64]  # 8x8 digits: 8 -> 4 -> 2 -> 1
    return [28, 32, 64]


CASES = [
    (arch, channels, size)
    for arch in ARCHS
    for size in _supported_sizes(arch)
    for channels in (1, 3)
]


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered_names() -> None:
    expected = {"convnet", "convnet3", "convnetd4", "convnetd5", "convnet_bn"}
    expected |= {"resnet10", "resnet18", "vgg11", "alexnet"}
    assert set(ARCHS) == expected


@pytest.mark.parametrize(("num_classes", "expected"), [(10, 320_010), (100, 504_420)])
def test_convnet3_parameter_count(num_classes: int, expected: int) -> None:
    # ConvNet-3 on CIFAR-10 / CIFAR-100 (docs/methods.md, "Networks").
    assert _num_params(build_model("convnet3", num_classes, (3, 32, 32))) == expected
    assert _num_params(ConvNet(num_classes, (3, 32, 32))) == expected


@pytest.mark.parametrize(("arch", "channels", "size"), CASES)
def test_forward_embed_and_input_gradient(arch: str, channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 7, (channels, size, size))
    x = torch.randn(2, channels, size, size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 7)
    features = model.embed(x)
    assert features.shape == (2, model.classifier.in_features)
    assert isinstance(model.classifier, nn.Linear)
    torch.testing.assert_close(model.classifier(features), logits, rtol=0, atol=0)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("size", "features"), [(28, 128 * 3 * 3), (8, 128 * 1 * 1), (32, 128 * 4 * 4)]
)
def test_convnet_floors_odd_sizes(size: int, features: int) -> None:
    # 28 -> 14 -> 7 -> 3 and 8 -> 4 -> 2 -> 1: every pooling floors.
    net = build_model("convnet3", 10, (3, size, size))
    assert net.classifier.in_features == features


@pytest.mark.parametrize(("padding", "features"), [(None, 128 * 4 * 4), (1, 128 * 3 * 3)])
def test_grey_images_are_padded_by_3_as_the_field_s_convnet(padding, features) -> None:
    # DC/DSA/DM/MTT ConvNet: one-channel 28 px inputs pad the first conv by 3 (28 -> 32 px).
    net = build_model("convnet3", 10, (1, 28, 28), first_padding=padding)
    assert net.classifier.in_features == features
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert build_model("convnet3", 10, (3, 32, 32)).features[0].conv.padding == (1, 1)


def test_convnet_options_and_non_square_images() -> None:
    model = build_model("convnet", 5, (3, 32, 48), width=16, depth=2, norm="layer")
    assert model.classifier.in_features == 16 * 8 * 12
    assert model(torch.randn(2, 3, 32, 48)).shape == (2, 5)
    model = build_model("convnet", 5, (3, 8, 8), width=4, depth=4, pooling="none")
    assert model.classifier.in_features == 4 * 8 * 8
    for activation in ("relu", "leakyrelu", "gelu", "sigmoid"):
        model = build_model("convnet3", 3, (3, 8, 8), width=4, activation=activation)
        assert model(torch.randn(2, 3, 8, 8)).shape == (2, 3)


def test_presets_set_their_options() -> None:
    bn = build_model("convnet_bn", 10, (3, 32, 32), width=8)
    assert isinstance(bn.features[0].norm, nn.BatchNorm2d)
    instance = build_model("convnet3", 10, (3, 32, 32), width=8).features[0].norm
    assert isinstance(instance, nn.GroupNorm) and instance.num_groups == 8
    assert len(build_model("convnetd4", 10, (3, 64, 64), width=8).features) == 4
    assert build_model("convnetd4", 10, (3, 64, 64), width=8).classifier.in_features == 8 * 4 * 4
    assert len(build_model("convnetd5", 10, (3, 128, 128), width=8).features) == 5
    resnet = build_model("resnet18", 10, (3, 32, 32), norm="instance")
    assert isinstance(resnet.features.stem.norm, nn.GroupNorm)
    assert _num_params(build_model("resnet10", 10, (3, 32, 32))) < _num_params(resnet)


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_names_unique_stable_and_seeded(arch: str) -> None:
    torch.manual_seed(3)
    first = build_model(arch, 10, (3, 32, 32))
    torch.manual_seed(3)
    second = build_model(arch, 10, (3, 32, 32))
    names = [name for name, _ in first.named_parameters(remove_duplicate=False)]
    assert len(names) == len(set(names))
    assert names == [name for name, _ in second.named_parameters()]
    assert names[-2:] == ["classifier.weight", "classifier.bias"]
    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_convnet_parameter_names() -> None:
    names = [name for name, _ in build_model("convnet3", 10, (3, 32, 32)).named_parameters()]
    assert names[:4] == [
        "features.0.conv.weight",
        "features.0.conv.bias",
        "features.0.norm.weight",
        "features.0.norm.bias",
    ]


@pytest.mark.parametrize("arch", ["convnet3", "convnet_bn", "resnet10", "alexnet"])
def test_functional_call_from_flat_vector(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 4, (3, 16, 16)).eval()
    names_shapes = [(name, p.shape) for name, p in model.named_parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
    params, offset = {}, 0
    for name, shape in names_shapes:
        params[name] = flat[offset : offset + shape.numel()].view(shape)
        offset += shape.numel()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(functional_call(model, params, (x,)), model(x))
    shifted = {name: value + 0.01 for name, value in params.items()}
    assert not torch.allclose(functional_call(model, shifted, (x,)), model(x))


def test_model_follows_dtype() -> None:
    model = build_model("convnet3", 10, (3, 8, 8), width=4).double()
    assert model(torch.randn(2, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64


def test_unknown_arch_lists_available() -> None:
    with pytest.raises(ValueError, match="convnetd4") as error:
        build_model("ConvNetD4", 10, (3, 64, 64))
    assert "available" in str(error.value)


def test_unknown_option_is_named() -> None:
    with pytest.raises(TypeError, match="widht"):
        build_model("convnet3", 10, (3, 32, 32), widht=64)


@pytest.mark.parametrize(
    ("arch", "norm"), [("convnet", "group"), ("resnet18", "none"), ("vgg11", "layer")]
)
def test_bad_norm_value(arch: str, norm: str) -> None:
    with pytest.raises(ValueError, match="norm='"):
        build_model(arch, 10, (3, 32, 32), norm=norm)


@pytest.mark.parametrize(("option", "value"), [("activation", "tanh"), ("pooling", "lp")])
def test_bad_convnet_choice(option: str, value: str) -> None:
    with pytest.raises(ValueError, match=option):
        build_model("convnet", 10, (3, 32, 32), **{option: value})


def test_impossible_depth_says_what_to_change() -> None:
    with pytest.raises(ValueError, match=r"depth 4 .* 8x8 .* depth <= 3"):
        build_model("convnetd4", 10, (3, 8, 8))


@pytest.mark.parametrize("shape", [(32, 32), (3, 0, 32)])
def test_bad_image_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="image_shape"):
        build_model("convnet3", 10, shape)


@pytest.mark.parametrize("arch", ["vgg11", "alexnet"])
def test_small_inputs_skip_pools_without_renaming(arch: str) -> None:
    small = [name for name, _ in build_model(arch, 10, (3, 8, 8)).named_parameters()]
    large = [name for name, _ in build_model(arch, 10, (3, 64, 64)).named_parameters()]
    assert small == large


def test_register_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    register_model("convnet_tiny", ConvNet, width=4, depth=1)
    assert "convnet_tiny" in available_models()
    assert build_model("convnet_tiny", 2, (3, 8, 8)).classifier.in_features == 4 * 4 * 4
    with pytest.raises(ValueError, match="already registered"):
        register_model("convnet3", ConvNet)
    with pytest.raises(TypeError, match="size"):
        register_model("convnet_bad", ConvNet, size=3)
