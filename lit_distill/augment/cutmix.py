"""CutMix (Yun et al., ICCV 2019) as the IDC/DANCE/TGDD expert and evaluation recipes use it."""

import math

import numpy as np
import torch
from torch import Tensor


def cutmix(
    images: Tensor,
    labels: Tensor,
    generator: torch.Generator | None = None,
    beta: float = 1.0,
    prob: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """With probability ``prob``, paste a random box of a shuffled copy of the batch.

    Train with ``loss = lam * CE(out, labels_a) + (1 - lam) * CE(out, labels_b)``. The box area
    follows 1 - lam, lam ~ Beta(beta, beta); the box is clipped by the border and lam is then
    corrected to the exact area kept from the original images.

    Args:
        images: batch (N, C, H, W).
        labels: hard labels (N,) or soft targets (N, num_classes).
        generator: source of every random draw (CPU); torch's default generator when None.
        beta: parameter of the Beta distribution of lam (1.0: uniform, the recipes' value).
        prob: probability of mixing this batch (0.5 in the IDC/TGDD recipes).

    Returns:
        ``(mixed_images, labels_a, labels_b, lam)``; when the batch is not mixed, the images
        unchanged, ``labels_b = labels_a`` and ``lam = 1.0``.
    """
    if not 0.0 <= prob <= 1.0 or beta <= 0.0:
        raise ValueError(f"cutmix needs 0 <= prob <= 1 and beta > 0; got prob={prob}, beta={beta}")
    device = generator.device if generator is not None else torch.device("cpu")
    if float(torch.rand((), generator=generator, device=device)) >= prob:
        return images, labels, labels, 1.0
    # torch's Beta sampler takes no generator: seed a NumPy one from ours to stay reproducible.
    seed = int(torch.randint(2**62, (), generator=generator, device=device))
    lam = float(np.random.default_rng(seed).beta(beta, beta))
    height, width = images.shape[-2:]
    top, bottom, left, right = _random_box(height, width, lam, generator, device)
    order = torch.randperm(images.shape[0], generator=generator, device=device)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = images[order.to(images.device), :, top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    return mixed, labels, labels[order.to(labels.device)], lam


def _random_box(
    height: int, width: int, lam: float, generator: torch.Generator | None, device: torch.device
) -> tuple[int, int, int, int]:
    """A box of about (1 - lam) of the image around a uniform centre, clipped by the border."""
    side = math.sqrt(1.0 - lam)
    box_h, box_w = int(height * side), int(width * side)
    centre_y = int(torch.randint(height, (), generator=generator, device=device))
    centre_x = int(torch.randint(width, (), generator=generator, device=device))
    top, bottom = max(centre_y - box_h // 2, 0), min(centre_y + box_h // 2, height)
    left, right = max(centre_x - box_w // 2, 0), min(centre_x + box_w // 2, width)
    return top, bottom, left, right
