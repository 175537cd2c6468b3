"""MTT: matching training trajectories (Cazenavette et al., CVPR 2022), on the matching engine.

Each iteration draws an expert and a start epoch ``t`` in ``[min_start_epoch, max_start_epoch)``;
the segment runs from the expert's snapshot ``θ*_t`` to ``θ*_{t+expert_epochs}`` (see
:class:`TrajectoryMatchingModule` for the student, the loss and the update).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lit_distill.distill.engine import Segment
from lit_distill.distill.trajectory_matching import TrajectoryMatchingModule


class MTTModule(TrajectoryMatchingModule):
    """MTT: segments between two stored epochs of an expert's SGD trajectory.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        expert_epochs: ``M``, epochs between the start and the target snapshot.
        max_start_epoch: start epochs are drawn from ``[min_start_epoch, max_start_epoch)``
            (upper bound exclusive, as in the reference code).
        min_start_epoch: lower bound of the start epoch.
        **kwargs: the :class:`TrajectoryMatchingModule` arguments (experts, student, learning
            rates, augmentation, backward mode, pruning) and the :class:`DistillationModule`
            ones (ipc, factor, init, lr_images, iterations, ...).
    """

    method = "mtt"

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        dataset: str,
        expert_epochs: int = 2,
        max_start_epoch: int = 20,
        min_start_epoch: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, image_shape, mean, std, dataset, **kwargs)
        if expert_epochs < 1:
            raise ValueError(f"expert_epochs must be at least 1, got {expert_epochs}")
        if not 0 <= min_start_epoch < max_start_epoch:
            raise ValueError(
                f"start epochs are drawn from [min_start_epoch, max_start_epoch): need "
                f"0 <= min_start_epoch < max_start_epoch, got {min_start_epoch}, {max_start_epoch}"
            )

    def expert_needs(self) -> dict[str, Any]:
        hp = self.hparams
        # The last start epoch is max_start_epoch - 1; its target is expert_epochs later.
        last = hp.max_start_epoch - 1 + hp.expert_epochs
        why = (
            f"start epochs [{hp.min_start_epoch}, {hp.max_start_epoch}) + expert_epochs "
            f"{hp.expert_epochs}"
        )
        return {"min_epochs": last, "every_epoch": True, "why": why}

    def start_window(self) -> tuple[int, int]:
        """``[low, high)`` of this iteration's start epoch."""
        return self.hparams.min_start_epoch, self.hparams.max_start_epoch

    def sample_segment(self, rng: torch.Generator) -> tuple[Segment, dict[str, float]]:
        """An expert, a start epoch in the window, and its target ``expert_epochs`` later."""
        expert = int(torch.randint(self.bank.num_trajectories, (1,), generator=rng))
        low, high = self.start_window()
        start = int(torch.randint(low, high, (1,), generator=rng))
        target = start + self.hparams.expert_epochs
        segment = Segment(
            self.bank.vector(expert, self.bank.index_of(start)),
            self.bank.vector(expert, self.bank.index_of(target)),
        )
        return segment, {"train/expert": float(expert), "train/start_epoch": float(start)}
