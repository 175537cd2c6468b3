"""TGDD: trajectory-guided dataset distillation with a balanced distribution (AAAI 2026)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit_distill.distill.dm import DMModule
from lit_distill.distill.matching import sample_stage
from lit_distill.errors import TrajectoryMismatchError
from lit_distill.trajectory import SnapshotBank, list_experts, load_trajectories

log = logging.getLogger(__name__)


class TGDDModule(DMModule):
    """DM whose feature extractors are snapshots of expert trajectories, plus a constraint.

    Each iteration draws a trajectory and a stage ``s`` uniformly in ``[0, M]``: snapshot
    ``s`` is the feature extractor (stage-wise distribution matching). A second snapshot from
    the expert region ``[s, s + L - 1]`` classifies the synthetic images, and its cross-entropy,
    weighted by ``alpha``, is added (stage-wise distribution constraint).
    All snapshots are loaded into memory once (on the accelerator) when the run starts.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        trajectory_dir: folder of the expert trajectories (``expert_000.pt``, ...).
        num_trajectories: how many experts to use (TGDD: 5).
        expert_region: length ``L`` of the expert region (TGDD: 7).
        alpha: weight of the distribution constraint (TGDD: 2.5 for IPC 1/10, 0.5 for IPC 50).
        expert_config: config that trains the experts when they are missing (a shipped name
            or a path); ``lit-distill fit`` runs it first unless ``train_missing_experts`` is off.
        train_missing_experts: train missing experts before distilling (else: a clear error).
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
        num_trajectories: int = 5,
        expert_region: int = 7,
        alpha: float = 2.5,
        expert_config: str | None = None,
        train_missing_experts: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, image_shape, mean, std, dataset, **kwargs)
        if alpha < 0:
            raise ValueError(
                f"alpha weighs the distribution constraint and must be >= 0, got {alpha}"
            )
        if num_trajectories < 1 or expert_region < 1:
            raise ValueError("num_trajectories and expert_region must be at least 1")
        self._nets["critic"] = self.build_network()
        self.bank: SnapshotBank | None = None

    @property
    def alpha(self) -> float:
        return self.hparams.alpha

    # ------------------------------------------------------------------ experts
    def expert_requirements(self) -> tuple[Path, int, str | None]:
        """Where the experts must be, how many, and the config that trains them."""
        hp = self.hparams
        return Path(hp.trajectory_dir), hp.num_trajectories, hp.expert_config

    def expert_command(self) -> str:
        directory, count, config = self.expert_requirements()
        config = config or "<an experts config: see `lit-distill configs`>"
        return (
            f"lit-distill fit --config {config} --model.init_args.trajectory_dir {directory} "
            f"--model.init_args.num_experts {count}"
        )

    def prepare(self, stage: str) -> None:
        """Load and check the trajectories, once (they are kept as a snapshot bank)."""
        if self.bank is not None:
            return
        directory, count, _ = self.expert_requirements()
        fix = self.expert_command()
        trajectories = load_trajectories(directory, count, fix=fix)
        for traj, path in zip(trajectories, list_experts(directory), strict=False):
            traj.check_compatible(
                self._nets["extractor"],
                dataset=self.dataset_name,
                num_classes=self.num_classes,
                image_shape=self.image_shape,
                zca=self.zca,
                source=str(path),
                fix=f"Train matching experts with: {fix}",
            )
        epochs = trajectories[0].epochs
        if epochs != list(range(trajectories[0].num_epochs + 1)):
            raise TrajectoryMismatchError(
                f"TGDD samples every epoch, but the trajectories in {directory} keep epochs "
                f"{epochs} (store=convex); train them with store=full: {fix}"
            )
        self.bank = SnapshotBank(trajectories)
        log.info("TGDD: %d trajectories of %d epochs in memory", count, len(epochs) - 1)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.bank = self.bank.to(self.device)

    def init_classifier(self):
        """For ``init="correct"``: the final snapshot of the first expert."""
        if self.hparams.init != "correct":
            return None
        net = self.bank.load_into(self.build_network(), 0, self.bank.num_snapshots - 1).eval()
        return lambda pixels: net(self.preprocess(pixels))

    # ------------------------------------------------------------------ the step
    def pick_networks(self, rng: torch.Generator) -> tuple[nn.Module, nn.Module | None]:
        pick = sample_stage(
            self.bank.num_trajectories, self.bank.num_snapshots - 1, self.hparams.expert_region, rng
        )
        self.log_dict(
            {"train/stage": float(pick.stage), "train/constraint_epoch": float(pick.constraint)}
        )
        extractor = self.bank.load_into(self._nets["extractor"], pick.trajectory, pick.stage)
        critic = self.bank.load_into(self._nets["critic"], pick.trajectory, pick.constraint)
        return extractor, critic
