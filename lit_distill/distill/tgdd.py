"""TGDD: trajectory-guided dataset distillation with a balanced distribution (AAAI 2026)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lit_distill.distill.dm import DMModule
from lit_distill.distill.matching import sample_stage
from lit_distill.experts.pool import ExpertPool
from lit_distill.space import ImageSpace


class TGDDModule(DMModule):
    """DM whose feature extractors are snapshots of expert trajectories, plus a constraint.

    Each iteration draws a trajectory and a stage ``s`` uniformly in ``[0, M]``: snapshot
    ``s`` is the feature extractor (stage-wise distribution matching). A second snapshot from
    the expert region ``[s, s + L - 1]`` classifies the synthetic images, and its cross-entropy,
    weighted by ``alpha``, is added (stage-wise distribution constraint). The experts are read
    lazily: each iteration copies its two snapshots to the device.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        trajectory_dir: folder of the expert trajectories (``expert_000.pt``, ...).
        num_experts: how many experts to use (TGDD: 5).
        expert_config: config that trains the experts when they are missing (a shipped name
            or a path); ``lit-distill fit`` runs it first unless ``train_missing_experts`` is off.
        train_missing_experts: train missing experts before distilling (else: a clear error).
        expert_region: length ``L`` of the expert region (TGDD: 7).
        alpha: weight of the distribution constraint (TGDD: 2.5 for IPC 1/10, 0.5 for IPC 50).
        image_space: TGDD optimises pixels in [0, 1], clamped (``pixel``).
        **kwargs: the :class:`DMModule` and :class:`DistillationModule` arguments.
    """

    method = "tgdd"

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        dataset: str,
        trajectory_dir: str = "runs/experts",
        num_experts: int = 5,
        expert_config: str | None = None,
        train_missing_experts: bool = True,
        expert_region: int = 7,
        alpha: float = 2.5,
        image_space: ImageSpace = "pixel",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_classes, image_shape, mean, std, dataset, image_space=image_space, **kwargs
        )
        if not alpha >= 0:
            raise ValueError(
                f"alpha weighs the distribution constraint and must be >= 0, got {alpha}"
            )
        if expert_region < 1:
            raise ValueError(f"expert_region must be at least 1, got {expert_region}")
        hp = self.hparams
        self.experts = ExpertPool(
            trajectory_dir, num_experts, expert_config, train_missing_experts, hp.arch,
            hp.arch_kwargs,
        )  # fmt: skip
        self._nets["critic"] = self.build_network()

    @property
    def alpha(self) -> float:
        return self.hparams.alpha

    def expert_needs(self) -> dict[str, Any]:
        return {"every_epoch": True}

    def pick_networks(self, rng: torch.Generator) -> tuple[nn.Module, nn.Module | None]:
        pick = sample_stage(
            self.bank.num_trajectories, self.bank.num_epochs, self.hparams.expert_region, rng
        )
        self.log_dict(
            {"train/stage": float(pick.stage), "train/constraint_epoch": float(pick.constraint)}
        )
        extractor = self.bank.load_into(self._nets["extractor"], pick.trajectory, pick.stage)
        if pick.constraint == pick.stage:  # the same snapshot: one forward serves both losses
            return extractor, extractor
        critic = self.bank.load_into(self._nets["critic"], pick.trajectory, pick.constraint)
        return extractor, critic
