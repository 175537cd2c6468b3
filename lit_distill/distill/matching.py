"""Distribution matching, the algorithm shared by DM and TGDD (plain torch, no Lightning)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mean_embedding_mmd(real_features: Tensor, syn_features: Tensor) -> Tensor:
    """Squared distance between the mean embeddings of two batches (DM's linear-kernel MMD)."""
    return (real_features.mean(0) - syn_features.mean(0)).pow(2).sum()


def matching_losses(
    extractor: nn.Module,
    critic: nn.Module | None,
    real: Sequence[Tensor],
    synthetic: Sequence[Tensor],
    classes: Sequence[int],
    augment: Callable[..., tuple[Tensor, Tensor]],
    preprocess: Callable[[Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    """Per-class distribution matching and distribution constraint, summed over classes.

    For each class ``c`` the real batch ``real[i]`` and the synthetic batch ``synthetic[i]``
    (pixels) go through the same siamese augmentation; then

    * ``mmd = sum_c || mean extractor.embed(real_c) - mean extractor.embed(syn_c) ||^2``
      (the real side carries no gradient), and
    * ``ce = sum_c CE(critic(syn_c), c)`` (TGDD's stage-wise distribution constraint; zero
      without a critic).

    Args:
        extractor: network whose penultimate features are matched (``embed``).
        critic: network that classifies the synthetic images, or ``None``.
        real, synthetic: pixel batches, one per class of ``classes``.
        classes: the class of each pair of batches.
        augment: ``augment(real, syn) -> (real, syn)`` with shared random parameters.
        preprocess: pixels -> network input.
    """
    mmd = ce = torch.zeros((), device=synthetic[0].device)
    for c, real_c, syn_c in zip(classes, real, synthetic, strict=True):
        real_c, syn_c = augment(real_c, syn_c)
        with torch.no_grad():
            real_features = extractor.embed(preprocess(real_c))
        syn_input = preprocess(syn_c)
        mmd = mmd + mean_embedding_mmd(real_features, extractor.embed(syn_input))
        if critic is not None:
            targets = torch.full((syn_c.shape[0],), c, device=syn_c.device, dtype=torch.long)
            ce = ce + F.cross_entropy(critic(syn_input), targets)
    return mmd, ce


@dataclass(frozen=True)
class StagePick:
    """Which snapshots guide one TGDD iteration."""

    trajectory: int
    stage: int  # epoch of the feature extractor
    constraint: int  # epoch of the critic, in the expert region [stage, stage + L - 1]


def sample_stage(
    num_trajectories: int, num_epochs: int, region: int, generator: torch.Generator
) -> StagePick:
    """Draw a trajectory, a stage ``s ~ U{0..M}`` and a critic epoch ``f ~ U{s..min(s+L-1, M)}``.

    As in the TGDD code, the critic may be the extractor's own snapshot (``f = s``); ``region``
    is the expert-region length ``L`` (7 in the paper).
    """
    if region < 1:
        raise ValueError(f"expert_region must be at least 1, got {region}")

    def uniform(low: int, high: int) -> int:  # inclusive bounds
        return int(torch.randint(low, high + 1, (1,), generator=generator))

    trajectory = uniform(0, num_trajectories - 1)
    stage = uniform(0, num_epochs)
    constraint = uniform(stage, min(stage + region - 1, num_epochs))
    return StagePick(trajectory, stage, constraint)
