"""Distribution matching, the algorithm shared by DM and TGDD (plain torch, no Lightning)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mean_embedding_mmd(real_features: Tensor, syn_features: Tensor) -> Tensor:
    """Squared distance between the mean embeddings of two batches (DM's linear-kernel MMD)."""
    return (real_features.mean(0) - syn_features.mean(0)).pow(2).sum()


@torch.no_grad()
def real_class_means(extractor: nn.Module, inputs: Sequence[Tensor]) -> Tensor:
    """Mean penultimate feature of each class's real batch, in ONE forward (no graph).

    Args:
        extractor: network whose ``embed`` is matched.
        inputs: network inputs of each class's real batch (already augmented).

    Returns:
        (len(inputs), D) means, one row per class.
    """
    features = extractor.embed(torch.cat(list(inputs)))
    return torch.stack([f.mean(0) for f in features.split([x.shape[0] for x in inputs])])


def class_losses(
    extractor: nn.Module,
    critic: nn.Module | None,
    real_mean: Tensor,
    synthetic: Tensor,
    label: int,
) -> tuple[Tensor, Tensor]:
    """Distribution matching and distribution constraint of one class.

    * ``mmd = || real_mean - mean extractor.embed(synthetic) ||^2`` (the real side is a constant:
      see :func:`real_class_means`), and
    * ``ce = CE(critic(synthetic), label)`` (TGDD's stage-wise distribution constraint; zero
      without a critic).

    Args:
        extractor: network whose penultimate features are matched (``embed``).
        critic: network that classifies the synthetic images, or ``None``.
        real_mean: the class's mean real feature (D,).
        synthetic: network inputs of the class's synthetic images (augmented like the real ones).
        label: the class.
    """
    mmd = (real_mean - extractor.embed(synthetic).mean(0)).pow(2).sum()
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
