"""ConvNet, the field's default network, and the building blocks the other models share.

Every model of :mod:`lit_distill.models` is a :class:`FeatureClassifier`: a feature extractor
``features`` whose flattened output (``embed``) feeds one ``nn.Linear`` (``classifier``).
Distribution matching reads ``embed``; trajectory matching reads the parameters by name.
"""

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

Norm = Literal["instance", "batch", "layer", "none"]
Activation = Literal["relu", "leakyrelu", "gelu", "sigmoid"]
Pooling = Literal["avg", "max", "none"]


def check_choice(option: str, value: str, choices: Sequence[str]) -> None:
    """Raise a ValueError naming ``option`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{option}={value!r} is not supported; choose one of {list(choices)}")


def check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """Return ``image_shape`` as ``(channels, height, width)`` ints, or raise a ValueError."""
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(
            f"image_shape must be (channels, height, width) with positive sizes, got "
            f"{tuple(image_shape)}; e.g. (3, 32, 32) for CIFAR-10"
        )
    channels, height, width = (int(size) for size in image_shape)
    return channels, height, width


def make_norm(norm: str, channels: int) -> nn.Module:
    """The normalisation layer called ``norm`` for ``channels`` feature maps."""
    check_choice("norm", norm, ("instance", "batch", "layer", "none"))
    if norm == "instance":
        # The field's "instancenorm": GroupNorm, one channel per group (docs/methods.md).
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "layer":
        return nn.GroupNorm(1, channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def make_activation(activation: str) -> nn.Module:
    """The activation called ``activation``.

    Never in-place: unrolled inner loops differentiate through every activation twice.
    """
    check_choice("activation", activation, ("relu", "leakyrelu", "gelu", "sigmoid"))
    layers = {"relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}
    return layers[activation]()


def make_pool(pooling: str) -> nn.Module:
    """A 2x2, stride-2 pooling layer (floor division of odd sizes), or identity for ``"none"``."""
    check_choice("pooling", pooling, ("avg", "max", "none"))
    if pooling == "avg":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if pooling == "max":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    return nn.Identity()


def skip_tiny_pool(pooled: bool, height: int, width: int) -> tuple[str, int, int]:
    """Max-pool if asked and the map keeps >= 1 px, else skip: ``(pooling, height, width)`` after.

    VGG and AlexNet use it so that inputs smaller than their design size still work.
    """
    if pooled and min(height, width) >= 2:
        return "max", height // 2, width // 2
    return "none", height, width


class ConvBlock(nn.Module):
    """Conv (same padding) -> norm -> activation -> pool: the unit of ConvNet, VGG and AlexNet."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        norm: str = "instance",
        activation: str = "relu",
        pooling: str = "avg",
        padding: int | None = None,
    ) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)
        self.norm = make_norm(norm, out_channels)
        self.act = make_activation(activation)
        self.pool = make_pool(pooling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to a (B, C, H, W) batch."""
        return self.pool(self.act(self.norm(self.conv(x))))


class FeatureClassifier(nn.Module):
    """A feature extractor followed by one linear classifier.

    Subclasses set ``features`` (any module mapping images to feature maps or vectors) and
    ``classifier`` (the final ``nn.Linear``); ``forward(x) == classifier(embed(x))`` exactly.
    """

    features: nn.Module
    classifier: nn.Linear

    @property
    def embed_dim(self) -> int:
        """Size D of the penultimate features returned by :meth:`embed`."""
        return self.classifier.in_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, D) of a (B, C, H, W) batch in network input space."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of a (B, C, H, W) batch in network input space."""
        return self.classifier(self.embed(x))


class ConvNet(FeatureClassifier):
    """ConvNet-D: ``depth`` blocks of Conv3x3 -> norm -> activation -> 2x2 pooling, then Linear.

    The defaults are the field's ConvNet-3 (docs/methods.md, "Networks"): width 128, instance norm,
    ReLU, average pooling; 320,010 parameters for CIFAR-10.

    Args:
        num_classes: Number of output logits.
        image_shape: Input ``(channels, height, width)``; odd sizes are floored by each pooling.
        width: Channels of every convolution.
        depth: Number of blocks.
        norm: ``"instance"`` (GroupNorm(width, width)), ``"batch"``, ``"layer"``
            (GroupNorm(1, width)) or ``"none"``.
        activation: Non-linearity after each normalisation.
        pooling: 2x2 pooling at the end of each block, or ``"none"``.
        first_padding: zero padding of the first convolution; ``None``: 3 for one-channel
            inputs, as the field's ConvNet pads grey images (28 px MNIST becomes 32 px: 2048
            features), 1 otherwise.
    """

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        width: int = 128,
        depth: int = 3,
        norm: Norm = "instance",
        activation: Activation = "relu",
        pooling: Pooling = "avg",
        first_padding: int | None = None,
    ) -> None:
        super().__init__()
        channels, image_h, image_w = check_image_shape(image_shape)
        if first_padding is None:
            first_padding = 3 if channels == 1 else 1
        if first_padding < 0:
            raise ValueError(f"first_padding must be >= 0, got {first_padding}")
        image_h, image_w = image_h + 2 * first_padding - 2, image_w + 2 * first_padding - 2
        if width < 1 or depth < 1:
            raise ValueError(f"ConvNet needs width >= 1 and depth >= 1, got {width=}, {depth=}")
        check_choice("pooling", pooling, ("avg", "max", "none"))
        if pooling != "none":
            image_h, image_w = _pooled_size(image_h, image_w, depth, pooling)
        blocks = [
            ConvBlock(
                channels if i == 0 else width, width, 3, norm, activation, pooling,
                padding=first_padding if i == 0 else None,
            )
            for i in range(depth)
        ]  # fmt: skip
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(width * image_h * image_w, num_classes)


def _pooled_size(height: int, width: int, depth: int, pooling: str) -> tuple[int, int]:
    """Spatial size after ``depth`` halvings, or a ValueError saying how to fix the setup."""
    out_h, out_w = height >> depth, width >> depth  # repeated floor(x / 2) == x // 2**depth
    if out_h < 1 or out_w < 1:
        max_depth = min(height, width).bit_length() - 1
        raise ValueError(
            f"ConvNet depth {depth} with pooling={pooling!r} halves a {height}x{width} image "
            f"below 1 pixel: use depth <= {max_depth} for this size, larger images "
            f"(at least {2**depth} px per side), or pooling='none'"
        )
    return out_h, out_w
