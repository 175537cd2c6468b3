"""Pixel-space to network-input transforms that can be undone (for saving images)."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` on (N, C, H, W) pixels in [0, 1], with its inverse.

    The statistics are non-persistent buffers: they follow ``.to(device)`` but stay out of
    checkpoints, since they are rebuilt from the datamodule's facts.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Store the statistics.

        Args:
            mean: one value per channel, in [0, 1] pixel units.
            std: one positive value per channel, in [0, 1] pixel units.
        """
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive in every channel, got {tuple(std)}")
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(mean).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(shape), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise pixels in [0, 1]."""
        return (x - self.mean) / self.std

    def inverse(self, x: Tensor) -> Tensor:
        """Back to pixels in [0, 1] units (not clamped)."""
        return x * self.std + self.mean

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
