"""MCT: matching a convexified trajectory (Zhong et al., CVPR 2025), on the matching engine.

The expert's SGD trajectory is replaced by the straight line θ(λ) = (1 − λ)·θ_0 + λ·θ_K between
its first and last snapshots (:mod:`lit_distill.trajectory.convex`), built from the 2-snapshot
``convex`` trajectory files or from full ones (one expert set serves every method). Each
iteration draws a start λ continuously (uniform, the paper's best), and the target lies the span
of ``expert_epochs`` epochs further along the line; the student, the loss and the update are
MTT's.

The paper leaves the span, the λ range, the number of student steps and the learning rates
unspecified; here each is an explicit setting (docs/methods.md). Epochs are placed on the line
either uniformly (epoch k at k / K, so the span is Δλ = expert_epochs / K everywhere) or where
their SGD snapshots project onto it (``epoch_positions: projected``, the stored λ_k). The start λ
is drawn from the whole line (up to the last start whose target is θ_K), or from MTT's window
(``max_start_epoch``: up to that epoch's position), or from an explicit ``[lambda_min,
lambda_max]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from lit_distill.distill.engine import Segment
from lit_distill.distill.trajectory_matching import TrajectoryMatchingModule
from lit_distill.errors import SettingError
from lit_distill.trajectory.convex import (
    EpochPositions,
    EpochScale,
    LambdaSampling,
    line_point,
    sample_lambda,
)

log = logging.getLogger(__name__)


class MCTModule(TrajectoryMatchingModule):
    """MCT: segments between two points of the straight line from θ_0 to θ_K.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        expert_epochs: ``M``: the target lies the span of M epochs after the start.
        delta_lambda: a fixed span Δλ in (0, 1] instead (with ``epoch_positions: uniform``).
        epoch_positions: where epoch k sits on the line: ``uniform`` (k / K) or ``projected``
            (λ_k, where its SGD snapshot projects onto the line, per expert).
        max_start_epoch: MTT's start window on the line: start λ below this epoch's position
            (``max_start_epoch / K`` when uniform); ``None``: the whole line.
        lambda_min: lowest start λ.
        lambda_max: highest start λ, instead of ``max_start_epoch`` or the whole line.
        lambda_sampling: ``uniform`` (continuous, the paper's best) or ``epochs`` (only the
            epochs' positions: the paper's ablation without continuous sampling).
        **kwargs: the :class:`TrajectoryMatchingModule` and :class:`DistillationModule`
            arguments.
    """

    method = "mct"

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        dataset: str,
        expert_epochs: int = 2,
        delta_lambda: float | None = None,
        epoch_positions: EpochPositions = "uniform",
        max_start_epoch: int | None = None,
        lambda_min: float = 0.0,
        lambda_max: float | None = None,
        lambda_sampling: LambdaSampling = "uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, image_shape, mean, std, dataset, **kwargs)
        if expert_epochs < 1:
            raise ValueError(f"expert_epochs must be at least 1, got {expert_epochs}")
        if delta_lambda is not None and not 0.0 < delta_lambda <= 1.0:
            raise ValueError(f"delta_lambda must lie in (0, 1], got {delta_lambda}")
        if lambda_sampling not in ("uniform", "epochs"):
            raise ValueError(f"lambda_sampling={lambda_sampling!r}: use 'uniform' or 'epochs'")
        if epoch_positions not in ("uniform", "projected"):
            raise ValueError(f"epoch_positions={epoch_positions!r}: use 'uniform' or 'projected'")
        if delta_lambda is not None and epoch_positions == "projected":
            raise ValueError(
                "delta_lambda is a fixed span; epoch_positions=projected derives the span from "
                "expert_epochs: set only one of them"
            )
        _check_range(lambda_min, lambda_max, max_start_epoch)
        self.scales: list[EpochScale] = []  # per expert, at set-up
        self.ranges: list[tuple[float, float]] = []  # per expert: start λ in [low, high]

    def expert_needs(self) -> dict[str, Any]:
        return {"every_epoch": False}  # the two end points are enough (convex files)

    def prepare(self, stage: str) -> None:
        super().prepare(stage)
        hp = self.hparams
        if hp.epoch_positions == "projected":
            self.scales = [EpochScale.projected(t.line()) for t in self.bank.trajectories]
        else:
            self.scales = [EpochScale.uniform(self.bank.num_epochs)] * self.bank.num_trajectories
        self.ranges = [self.start_range(scale) for scale in self.scales]
        low = min(r[0] for r in self.ranges)
        high = max(r[1] for r in self.ranges)
        log.info("MCT: start lambda in [%.4g, %.4g] (%s epochs)", low, high, hp.epoch_positions)

    def target(self, lam: float, scale: EpochScale) -> float:
        """The λ of the target of a segment that starts at ``lam``."""
        hp = self.hparams
        if hp.delta_lambda is not None:
            return lam + hp.delta_lambda
        return scale.at(scale.epoch_of(lam) + hp.expert_epochs)

    def start_range(self, scale: EpochScale) -> tuple[float, float]:
        """``[low, high]`` of the start λ on ``scale``; a clear error when it cannot hold."""
        hp, epochs = self.hparams, scale.epochs
        if hp.max_start_epoch is not None and hp.max_start_epoch + hp.expert_epochs > epochs:
            raise SettingError(
                f"MCT: max_start_epoch {hp.max_start_epoch} + expert_epochs {hp.expert_epochs} "
                f"passes the end of the experts' {epochs}-epoch line: lower max_start_epoch to "
                f"at most {epochs - hp.expert_epochs}, or use longer experts"
            )
        if hp.lambda_max is not None:
            high = hp.lambda_max
        elif hp.max_start_epoch is not None:
            high = scale.at(hp.max_start_epoch)
        elif hp.delta_lambda is not None:
            high = 1.0 - hp.delta_lambda
        else:
            high = scale.at(max(epochs - hp.expert_epochs, 0))
        if self._passes_the_end(high, scale):
            span = (
                f"expert_epochs={hp.expert_epochs}"
                if hp.delta_lambda is None
                else f"delta_lambda={hp.delta_lambda:g}"
            )
            raise SettingError(
                f"MCT: a segment from lambda {high:.4g} ({span}, experts of {epochs} epochs) "
                "passes the end of the line: lower expert_epochs or delta_lambda, or lambda_max"
            )
        if hp.lambda_min > high:
            raise SettingError(
                f"MCT: lambda_min {hp.lambda_min:g} is above the highest start lambda "
                f"{high:.4g}: lower lambda_min (or raise lambda_max / max_start_epoch)"
            )
        return hp.lambda_min, high

    def _passes_the_end(self, lam: float, scale: EpochScale) -> bool:
        """Whether a segment from ``lam`` would need a target beyond θ_K."""
        if self.hparams.delta_lambda is not None:
            return lam + self.hparams.delta_lambda > 1.0 + 1e-9
        return scale.epoch_of(lam) + self.hparams.expert_epochs > scale.epochs + 1e-9

    def sample_segment(self, rng: torch.Generator) -> tuple[Segment, dict[str, float]]:
        """An expert, a start λ on its line, and the target a span further."""
        expert = int(torch.randint(self.bank.num_trajectories, (1,), generator=rng))
        scale, (low, high) = self.scales[expert], self.ranges[expert]
        lam = sample_lambda(rng, low, high, self.hparams.lambda_sampling, scale)
        end = self.target(lam, scale)
        first = self.bank.vector(expert, 0)
        last = self.bank.vector(expert, self.bank.num_snapshots - 1)
        segment = Segment(line_point(first, last, lam), line_point(first, last, end))
        logs = {"train/expert": float(expert), "train/lambda": lam, "train/target_lambda": end}
        return segment, logs


def _check_range(lambda_min: float, lambda_max: float | None, max_start_epoch: int | None):
    """The start range's own settings (those that do not depend on the experts)."""
    if not 0.0 <= lambda_min <= 1.0:
        raise ValueError(f"lambda_min must lie in [0, 1], got {lambda_min}")
    if lambda_max is not None and not 0.0 <= lambda_max <= 1.0:
        raise ValueError(f"lambda_max must lie in [0, 1], got {lambda_max}")
    if lambda_max is not None and lambda_min > lambda_max:
        raise ValueError(
            f"lambda_min {lambda_min} is above lambda_max {lambda_max}: the start range "
            "[lambda_min, lambda_max] is empty"
        )
    if max_start_epoch is not None and max_start_epoch < 1:
        raise ValueError(f"max_start_epoch must be at least 1, got {max_start_epoch}")
    if max_start_epoch is not None and lambda_max is not None:
        raise ValueError(
            "max_start_epoch (MTT's window) and lambda_max both bound the start lambda: set "
            "only one of them"
        )
