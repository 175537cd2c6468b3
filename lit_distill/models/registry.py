"""Networks by name: ``build_model("convnet3", num_classes=10, image_shape=(3, 32, 32))``.

Registered names (docs/methods.md, "Networks"); keyword arguments override a preset's options:

- ``convnet``: ConvNet with every option free (defaults: width 128, depth 3, instance norm,
  ReLU, average pooling).
- ``convnet3``: ConvNet-3, the field's default network (320,010 parameters on CIFAR-10).
- ``convnetd4``: ConvNet with depth 4, for 64 px images (Tiny ImageNet).
- ``convnetd5``: ConvNet with depth 5, for 128 px ImageNet subsets.
- ``convnet_bn``: ConvNet-3 with BatchNorm instead of instance norm (ConvNet-BN).
- ``resnet10``: small-image ResNet with one basic block per stage (cross-architecture, TGDD).
- ``resnet18``: small-image ResNet-18 with BatchNorm (cross-architecture evaluation).
- ``vgg11``: VGG-11 with instance norm (cross-architecture evaluation).
- ``alexnet``: small-image AlexNet, five convolutions (cross-architecture evaluation).
"""

import difflib
import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from lit_distill.models.alexnet import AlexNet
from lit_distill.models.convnet import ConvNet
from lit_distill.models.resnet import ResNet
from lit_distill.models.vgg import VGG11

# Every network takes (num_classes, image_shape) first; the rest are its options.
_REQUIRED = ("num_classes", "image_shape")

_MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "convnet": (ConvNet, {}),
    "convnet3": (ConvNet, {"depth": 3}),
    "convnetd4": (ConvNet, {"depth": 4}),
    "convnetd5": (ConvNet, {"depth": 5}),
    "convnet_bn": (ConvNet, {"norm": "batch"}),
    "resnet10": (ResNet, {"blocks_per_stage": (1, 1, 1, 1)}),
    "resnet18": (ResNet, {"blocks_per_stage": (2, 2, 2, 2)}),
    "vgg11": (VGG11, {}),
    "alexnet": (AlexNet, {}),
}


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(_MODELS)


def register_model(name: str, model_class: type[nn.Module], **defaults: Any) -> None:
    """Make ``model_class`` buildable as ``name``, with ``defaults`` for its options.

    ``model_class(num_classes, image_shape, **options)`` must return a module with
    ``forward``, ``embed`` and a final ``nn.Linear`` called ``classifier``.
    """
    if name in _MODELS:
        raise ValueError(f"a model called {name!r} is already registered; pick another name")
    _check_options(name, model_class, defaults)
    _MODELS[name] = (model_class, dict(defaults))


def build_model(
    arch: str, num_classes: int, image_shape: Sequence[int], **arch_kwargs: Any
) -> nn.Module:
    """Build the network registered as ``arch``, randomly initialised from the global seed.

    Args:
        arch: A name from :func:`available_models`.
        num_classes: Number of output logits.
        image_shape: Input ``(channels, height, width)`` in network input space.
        **arch_kwargs: Options of that network, overriding the preset's (e.g. ``width=64``).

    Raises:
        ValueError: Unknown ``arch``, or an option value the network cannot use.
        TypeError: An option the network does not have.
    """
    check_model(arch, arch_kwargs)
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    model_class, defaults = _MODELS[arch]
    return model_class(num_classes, tuple(image_shape), **{**defaults, **arch_kwargs})


def check_model(arch: str, arch_kwargs: dict[str, Any] | None = None) -> None:
    """Raise what :func:`build_model` would for an unknown name or option, without building."""
    if arch not in _MODELS:
        close = difflib.get_close_matches(arch.lower(), _MODELS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown arch {arch!r}{hint}; available: {available_models()}")
    _check_options(arch, _MODELS[arch][0], dict(arch_kwargs or {}))


def model_options(arch: str, **arch_kwargs: Any) -> dict[str, Any]:
    """Every option the network ``arch`` is built with: its class and all its keyword values.

    Two (name, kwargs) pairs describe the same network exactly when these agree, e.g.
    ``convnet`` and ``convnet3`` with the default depth, but not ``convnet`` (instance norm)
    and ``convnet_bn`` (batch norm), even though their parameter shapes agree.

    Raises:
        ValueError: unknown ``arch``.
    """
    if arch not in _MODELS:
        raise ValueError(f"unknown arch {arch!r}; available: {available_models()}")
    model_class, defaults = _MODELS[arch]
    signature = inspect.signature(model_class).parameters
    options = {
        name: p.default
        for name, p in signature.items()
        if name not in _REQUIRED and p.default is not inspect.Parameter.empty
    }
    options.update(defaults)
    options.update(arch_kwargs)
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
    return {"class": model_class.__name__, **options}


def _check_options(arch: str, model_class: type[nn.Module], options: dict[str, Any]) -> None:
    """Raise a TypeError naming every option that ``model_class`` does not accept."""
    accepted = [name for name in inspect.signature(model_class).parameters if name not in _REQUIRED]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"{arch!r} has no option(s) {unknown}; its options are {accepted}")
