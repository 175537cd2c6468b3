"""Distribution matching, the algorithm shared by DM and TGDD (plain torch, no Lightning)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mean_embedding_mmd(real_features: Tensor, syn_features: Tensor) -> Tensor:
    """Squared distance between the mean embeddings of two batches (DM's linear-kernel MMD)."""
    return (real_features.mean(0) - syn_features.mean(0)).pow(2).sum()


def class_losses(
    extractor: nn.Module,
    critic: nn.Module | None,
    real: Tensor,
    synthetic: Tensor,
    label: int,
) -> tuple[Tensor, Tensor]:
    """Distribution matching and distribution constraint of one class.

    * ``mmd = || mean extractor.embed(real) - mean extractor.embed(synthetic) ||^2`` (the real
      side carries no gradient), and
    * ``ce = CE(critic(synthetic), label)`` (TGDD's stage-wise distribution constraint; zero
      without a critic).

    Args:
        extractor: network whose penultimate features are matched (``embed``).
        critic: network that classifies the synthetic images, or ``None``.
        real, synthetic: network inputs of the class (already augmented, siamese-wise).
        label: the class.
    """
    with torch.no_grad():
        real_features = extractor.embed(real)
    mmd = mean_embedding_mmd(real_features, extractor.embed(synthetic))
    if critic is None:
        return mmd, torch.zeros((), device=synthetic.device)
    targets = torch.full((synthetic.shape[0],), label, device=synthetic.device, dtype=torch.long)
    return mmd, F.cross_entropy(critic(synthetic), targets)


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
