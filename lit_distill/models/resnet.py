"""ResNet-10/18 adapted to small images (28-64 px), used for cross-architecture evaluation.

CIFAR-style stem (one 3x3 convolution, stride 1, no max-pool) so that 32 px inputs keep enough
resolution; four stages of basic blocks (64, 128, 256, 512 channels), global average pooling,
one Linear (docs/methods.md, "Networks"). Any input size of at least 1 px works.
"""

from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from lit_distill.models.convnet import FeatureClassifier, check_choice, check_image_shape, make_norm

ResNetNorm = Literal["batch", "instance"]

STAGE_CHANNELS = (64, 128, 256, 512)  # He et al. 2016, the four stages of ResNet-18


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (projected when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        # No conv bias: the normalisation that follows has its own shift.
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.norm2 = make_norm(norm, out_channels)
        self.act = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    norm=make_norm(norm, out_channels),
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to a (B, C, H, W) batch."""
        out = self.act(self.norm1(self.conv1(x)))
        return self.act(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet(FeatureClassifier):
    """Small-image ResNet: ``blocks_per_stage`` (2, 2, 2, 2) is ResNet-18, (1, 1, 1, 1) ResNet-10.

    Parameter names read ``features.stem.conv.weight``, ``features.stage2.0.conv1.weight``,
    ``features.stage2.0.shortcut.norm.weight``, ..., ``classifier.weight``.

    Args:
        num_classes: Number of output logits.
        image_shape: Input ``(channels, height, width)``.
        blocks_per_stage: Number of basic blocks in each of the four stages.
        norm: ``"batch"`` (the usual ResNet) or ``"instance"`` (GroupNorm(c, c)).
    """

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        blocks_per_stage: Sequence[int] = (2, 2, 2, 2),
        norm: ResNetNorm = "batch",
    ) -> None:
        super().__init__()
        channels = check_image_shape(image_shape)[0]
        check_choice("norm", norm, ("batch", "instance"))
        if len(blocks_per_stage) != len(STAGE_CHANNELS) or min(blocks_per_stage) < 1:
            raise ValueError(f"blocks_per_stage needs four counts >= 1, got {blocks_per_stage}")
        stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(channels, STAGE_CHANNELS[0], 3, 1, padding=1, bias=False),
                norm=make_norm(norm, STAGE_CHANNELS[0]),
                act=nn.ReLU(),
            )
        )
        layers: OrderedDict[str, nn.Module] = OrderedDict(stem=stem)
        in_channels = STAGE_CHANNELS[0]
        for index, out_channels in enumerate(STAGE_CHANNELS):
            stride = 1 if index == 0 else 2  # stages 2-4 halve the resolution
            blocks = blocks_per_stage[index]
            layers[f"stage{index + 1}"] = _stage(in_channels, out_channels, blocks, stride, norm)
            in_channels = out_channels
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(STAGE_CHANNELS[-1], num_classes)


def _stage(
    in_channels: int, out_channels: int, blocks: int, stride: int, norm: str
) -> nn.Sequential:
    """``blocks`` basic blocks; only the first changes the channels and the resolution."""
    first = BasicBlock(in_channels, out_channels, stride, norm)
    rest = [BasicBlock(out_channels, out_channels, 1, norm) for _ in range(blocks - 1)]
    return nn.Sequential(first, *rest)
