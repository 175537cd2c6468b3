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
def real_class_means(
    extractor: nn.Module, inputs: Sequence[Tensor], chunk: int | None = None
) -> Tensor:
    """Mean penultimate feature of each class's real batch, without a graph.

    The batches are concatenated and go through the extractor ``chunk`` images at a time (all
    at once when ``None``): one forward for several classes saves launches on a GPU, small
    chunks keep every activation in memory the CPU allocator reuses.

    Args:
        extractor: network whose ``embed`` is matched.
        inputs: network inputs of each class's real batch (already augmented).
        chunk: images per forward.

    Returns:
        (len(inputs), D) means, one row per class.
    """
    batch = torch.cat(list(inputs))
    pieces = [batch] if chunk is None else batch.split(chunk)
    features = torch.cat([extractor.embed(piece) for piece in pieces])
    return torch.stack([f.mean(0) for f in features.split([x.shape[0] for x in inputs])])


@torch.no_grad()
def largest_activation(net: nn.Module, image_shape: Sequence[int], device: torch.device) -> int:
    """Bytes of the largest output of any layer of ``net`` for ONE image (a probe forward)."""
    sizes = [0]

    def record(module, args, output) -> None:
        if isinstance(output, Tensor):
            sizes.append(output.numel() * output.element_size())

    leaves = [m for m in net.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    training = net.training
    try:
        net.eval()  # no batch statistics updated by the probe
        net(torch.zeros(1, *image_shape, device=device))
    finally:
        net.train(training)
        for hook in hooks:
            hook.remove()
    return max(sizes)


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
        critic: network that classifies the synthetic images, or ``None``; when it is the
            extractor itself, the synthetic images go through it once.
        real_mean: the class's mean real feature (D,).
        synthetic: network inputs of the class's synthetic images (augmented like the real ones).
        label: the class.
    """
    features = extractor.embed(synthetic)
    mmd = (real_mean - features.mean(0)).pow(2).sum()
    if critic is None:
        return mmd, torch.zeros((), device=synthetic.device)
    targets = torch.full((synthetic.shape[0],), label, device=synthetic.device, dtype=torch.long)
    # The critic may be the extractor's own snapshot (TGDD draws f = s): then its logits are
    # the classifier of the features already computed (forward == classifier(embed)).
    logits = critic.classifier(features) if critic is extractor else critic(synthetic)
    return mmd, F.cross_entropy(logits, targets)


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
