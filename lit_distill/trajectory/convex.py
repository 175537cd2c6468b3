"""MCT's convexified trajectory (Zhong et al., CVPR 2025): the straight line between an expert's
first and last snapshots, and the constants that say how far its SGD path strays from it.

    θ(λ) = (1 − λ) · θ_0 + λ · θ_K,        λ ∈ [0, 1]

The line needs only the two end points, which is why a ``convex`` trajectory file stores two
snapshots instead of ``K + 1``. The paper adds "a set of constants"; lit-distill stores, per
epoch ``k``, the projection of the SGD snapshot onto the line and its distance from it:

    λ_k = <θ_k − θ_0, d> / ||d||²,      δ_k = ||θ_k − θ_0 − λ_k · d||,      d = θ_K − θ_0

(λ_0 = 0 and λ_K = 1 exactly; δ_0 = δ_K = 0), plus ``||d||``. They cost ``2K + 1`` numbers and
let a user plot where each epoch sits along the line and how far the real path bends away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

LambdaSampling = Literal["uniform", "epochs"]
EpochPositions = Literal["uniform", "projected"]


@dataclass(frozen=True)
class LineConstants:
    """Where each epoch's snapshot projects onto the line, and how far it is from it."""

    position: list[float]  # λ_k, one per epoch 0..K
    distance: list[float]  # δ_k, one per epoch 0..K, in parameter units
    length: float  # ||θ_K − θ_0||


@dataclass(frozen=True)
class EpochScale:
    """Where the epochs of a K-epoch expert sit along its line: λ(e) for real e in [0, K],
    piecewise linear between the epochs' positions.

    ``uniform``: epoch k at k / K (an epoch is the same share of the line everywhere).
    ``projected``: epoch k at λ_k, where its SGD snapshot projects onto the line (a stored
    constant), made non-decreasing: early epochs, which move the weights most, cover more of it.
    """

    positions: tuple[float, ...]  # λ of epochs 0..K: non-decreasing, 0 first and 1 last

    @classmethod
    def uniform(cls, epochs: int) -> EpochScale:
        return cls(tuple(k / epochs for k in range(epochs + 1)))

    @classmethod
    def projected(cls, line: LineConstants) -> EpochScale:
        """From stored projections λ_k (clamped to [0, 1], running maximum, exact end points)."""
        positions, top = [], 0.0
        for lam in line.position:
            top = max(top, min(max(lam, 0.0), 1.0))
            positions.append(top)
        positions[0], positions[-1] = 0.0, 1.0
        return cls(tuple(positions))

    @property
    def epochs(self) -> int:
        return len(self.positions) - 1

    def at(self, epoch: float) -> float:
        """λ of a (fractional) epoch in [0, K]."""
        epoch = min(max(epoch, 0.0), float(self.epochs))
        k = min(int(epoch), self.epochs - 1)
        low, high = self.positions[k], self.positions[k + 1]
        return low + (epoch - k) * (high - low)

    def epoch_of(self, lam: float) -> float:
        """The first (fractional) epoch at ``lam`` (the inverse of :meth:`at`)."""
        for k in range(self.epochs):
            low, high = self.positions[k], self.positions[k + 1]
            if lam <= high:
                return k + (max(lam - low, 0.0) / (high - low) if high > low else 0.0)
        return float(self.epochs)


def line_point(start: Tensor, end: Tensor, lam: float) -> Tensor:
    """``(1 − λ) · start + λ · end`` (float32)."""
    return torch.lerp(start.float(), end.float(), float(lam))


@torch.no_grad()
def line_constants(snapshots: Tensor) -> LineConstants:
    """The constants of a trajectory from all its snapshots ``(K + 1, P)`` (float64 sums)."""
    first, last = snapshots[0].double(), snapshots[-1].double()
    direction = last - first
    length_sq = float(direction.pow(2).sum())
    position, distance = [], []
    for snapshot in snapshots:
        offset = snapshot.double() - first
        lam = float(offset @ direction) / length_sq if length_sq > 0 else 0.0
        position.append(lam)
        distance.append(float((offset - lam * direction).norm()))
    return LineConstants(position, distance, length_sq**0.5)


def sample_lambda(
    generator: torch.Generator,
    low: float,
    high: float,
    how: LambdaSampling = "uniform",
    scale: EpochScale | None = None,
) -> float:
    """A start point on the line.

    ``uniform``: λ ~ U[low, high] (continuous sampling, the paper's best). ``epochs``: one of the
    epochs' positions on ``scale`` that lie in [low, high], uniformly (the paper's ablation
    without continuous sampling).
    """
    if how == "uniform":
        return low + (high - low) * float(torch.rand((), generator=generator))
    if how != "epochs" or scale is None:
        raise ValueError(f"lambda sampling {how!r}: use 'uniform', or 'epochs' with a scale")
    grid = [lam for lam in scale.positions if low - 1e-9 <= lam <= high + 1e-9]
    if not grid:
        raise ValueError(f"no epoch position lies in [{low}, {high}]")
    return grid[int(torch.randint(len(grid), (1,), generator=generator))]
