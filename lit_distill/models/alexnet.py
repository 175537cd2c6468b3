"""AlexNet for small images, as used for cross-architecture evaluation in dataset distillation.

Five convolutions (128, 192, 256, 192, 192 channels; the first two 5x5, the others 3x3), ReLU,
2x2 max-pools after the 1st, 2nd and 5th, then one Linear on the flattened features
(192x4x4 at 32 px; docs/methods.md, "Networks"). No normalisation, no dropout.

The reference code pads 1-channel inputs more so that 28 px MNIST behaves like 32 px; here the
padding keeps the size ("same") for every input and the classifier is sized from the image
instead: 28 px gives 192x3x3 features. As in VGG-11, a pool that would take the size below 1 px
is skipped (kept as ``nn.Identity``, so parameter names do not depend on the image size).
"""

from collections.abc import Sequence

from torch import nn

from lit_distill.models.convnet import (
    ConvBlock,
    FeatureClassifier,
    check_image_shape,
    skip_tiny_pool,
)

# (output channels, kernel size, max-pool after) of the five convolutions.
ALEXNET_CONFIG = ((128, 5, True), (192, 5, True), (256, 3, False), (192, 3, False), (192, 3, True))


class AlexNet(FeatureClassifier):
    """Small-image AlexNet; parameter names read ``features.0.conv.weight`` ... ``features.4``.

    Args:
        num_classes: Number of output logits.
        image_shape: Input ``(channels, height, width)``.
    """

    def __init__(self, num_classes: int, image_shape: Sequence[int]) -> None:
        super().__init__()
        in_channels, height, width = check_image_shape(image_shape)
        blocks = []
        for out_channels, kernel_size, pooled in ALEXNET_CONFIG:
            pooling, height, width = skip_tiny_pool(pooled, height, width)
            blocks.append(
                ConvBlock(in_channels, out_channels, kernel_size, "none", "relu", pooling)
            )
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(in_channels * height * width, num_classes)
