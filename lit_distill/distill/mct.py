"""MCT: matching a convexified trajectory (Zhong et al., CVPR 2025), on the matching engine.

The expert's SGD trajectory is replaced by the straight line θ(λ) = (1 − λ)·θ_0 + λ·θ_K between
its first and last snapshots (:mod:`lit_distill.trajectory.convex`), built from the 2-snapshot
``convex`` trajectory files or from full ones (one expert set serves every method). Each
iteration draws a start λ continuously (uniform, the paper's best), and the target lies a fixed
Δλ further along the line; the student, the loss and the update are MTT's.

The paper leaves Δλ, the λ range, the number of student steps and the learning rates
unspecified; here each is an explicit setting: Δλ defaults to ``expert_epochs / K`` for
K-epoch experts (the same span as MTT's ``expert_epochs`` along the line), λ is drawn from
``[lambda_min, lambda_max]`` with ``lambda_max`` defaulting to ``1 − Δλ`` (the whole line), and
the rest are MTT's (docs/methods.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from lit_distill.distill.engine import Segment
from lit_distill.distill.trajectory_matching import TrajectoryMatchingModule
from lit_distill.trajectory.convex import LambdaSampling, line_point, sample_lambda

log = logging.getLogger(__name__)


class MCTModule(TrajectoryMatchingModule):
    """MCT: segments between two points of the straight line from θ_0 to θ_K.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        expert_epochs: the segment spans ``expert_epochs / K`` of the line when
            ``delta_lambda`` is not given (K: the experts' epochs).
        delta_lambda: Δλ, the span of a segment along the line, in (0, 1].
        lambda_min: lowest start λ.
        lambda_max: highest start λ (default ``1 − Δλ``: the target is at most θ_K).
        lambda_sampling: ``uniform`` (continuous, the paper's best) or ``epochs`` (only the
            epoch positions k/K: the paper's ablation without continuous sampling).
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
        self.line: tuple[float, float, float] | None = None  # (Δλ, λ min, λ max), at set-up

    def expert_needs(self) -> dict[str, Any]:
        return {"every_epoch": False}  # the two end points are enough (convex files)

    def prepare(self, stage: str) -> None:
        super().prepare(stage)
        self.line = self.resolve_line(self.bank.num_epochs)
        delta, low, high = self.line
        log.info("MCT: delta_lambda %.4g, start lambda in [%.4g, %.4g]", delta, low, high)

    def resolve_line(self, epochs: int) -> tuple[float, float, float]:
        """Δλ and the start range for ``epochs``-epoch experts (a clear error if empty)."""
        hp = self.hparams
        delta = hp.delta_lambda if hp.delta_lambda is not None else hp.expert_epochs / epochs
        high = 1.0 - delta if hp.lambda_max is None else hp.lambda_max
        if not (0.0 < delta <= 1.0 and 0.0 <= hp.lambda_min <= high <= 1.0 - delta + 1e-12):
            raise ValueError(
                f"MCT needs 0 <= lambda_min <= lambda_max <= 1 - delta_lambda; got "
                f"delta_lambda={delta:g} (expert_epochs {hp.expert_epochs} of {epochs}), "
                f"lambda_min={hp.lambda_min:g}, lambda_max={high:g}: lower expert_epochs or "
                "delta_lambda, or narrow the lambda range"
            )
        return delta, hp.lambda_min, high

    def sample_segment(self, rng: torch.Generator) -> tuple[Segment, dict[str, float]]:
        """An expert, a start λ on its line, and the point Δλ further."""
        delta, low, high = self.line
        expert = int(torch.randint(self.bank.num_trajectories, (1,), generator=rng))
        how, epochs = self.hparams.lambda_sampling, self.bank.num_epochs
        lam = sample_lambda(rng, low, high, how, epochs)
        first = self.bank.vector(expert, 0)
        last = self.bank.vector(expert, self.bank.num_snapshots - 1)
        segment = Segment(line_point(first, last, lam), line_point(first, last, lam + delta))
        return segment, {"train/expert": float(expert), "train/lambda": lam}
