"""VGG-11 for small images, used for cross-architecture evaluation.

Eight 3x3 convolutions (configuration "A" of Simonyan & Zisserman 2015) with instance norm by
default, as in the field's small-image VGG (docs/methods.md, "Networks"), then one Linear on the
flattened features: 512 at 32 px, 512x2x2 at 64 px.

Inputs smaller than 32 px: a max-pool that would take the size below 1 px is skipped (kept as an
``nn.Identity``, so parameter names do not depend on the image size). A 28 px input therefore
gives 28 -> 14 -> 7 -> 3 -> 1 and the last pool is skipped. At 32 and 64 px the network is the
usual one, no pool is skipped.
"""

from collections.abc import Sequence
from typing import Literal

from torch import nn

from lit_distill.models.convnet import (
    ConvBlock,
    FeatureClassifier,
    check_choice,
    check_image_shape,
    skip_tiny_pool,
)

VGGNorm = Literal["instance", "batch", "none"]

# VGG-11, configuration "A" (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M) written as
# (output channels, 2x2 max-pool after) for each of the eight convolutions.
VGG11_CONFIG = (
    (64, True),
    (128, True),
    (256, False),
    (256, True),
    (512, False),
    (512, True),
    (512, False),
    (512, True),
)


class VGG11(FeatureClassifier):
    """VGG-11; parameter names read ``features.0.conv.weight`` ... ``features.7.norm.weight``.

    Args:
        num_classes: Number of output logits.
        image_shape: Input ``(channels, height, width)``.
        norm: ``"instance"`` (GroupNorm(c, c), the field's default), ``"batch"`` or ``"none"``.
    """

    def __init__(
        self, num_classes: int, image_shape: Sequence[int], norm: VGGNorm = "instance"
    ) -> None:
        super().__init__()
        in_channels, height, width = check_image_shape(image_shape)
        check_choice("norm", norm, ("instance", "batch", "none"))
        blocks = []
        for out_channels, pooled in VGG11_CONFIG:
            pooling, height, width = skip_tiny_pool(pooled, height, width)
            blocks.append(ConvBlock(in_channels, out_channels, 3, norm, "relu", pooling))
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(in_channels * height * width, num_classes)
