"""DPD's difference-driven pruning of the matching loss (Cao et al., ACML 2025), plain torch.

After the student's inner loop, the flattened target ``t = θ*_{t+M}`` and student
``s = θ̂_{t+N}`` are compared element-wise; the ``b = ⌊a · rate⌋`` parameters with the largest
difference (``a`` parameters in all) are dropped, and the normalised matching loss is computed on
the ``c = a − b`` kept ones, in its numerator and its denominator (the start vector ``θ*_t`` is
pruned with the same index). The mask is computed from detached vectors: it carries no gradient.
The selection is partial (``topk``), not a full sort.

Metrics (``metric``): ``abs`` = |t − s|, the paper's best (its Fig. 4a); ``relative`` =
|t − s| / (|t| + eps), a scale-free variant; ``random``, a control that drops the same number of
parameters chosen at random (from a generator the caller owns). The paper does not list the
other metrics it compared: ``relative`` and ``random`` are this project's ablations.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

PruningMetric = Literal["abs", "relative", "random"]
METRICS = ("abs", "relative", "random")
#: Keeps ``relative`` finite where the target is exactly zero.
RELATIVE_EPS = 1e-12


def check_pruning(rate: float, metric: str) -> None:
    """Raise a ValueError naming the setting unless ``rate`` and ``metric`` are usable."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"pruning_rate must lie in [0, 1), got {rate}")
    if metric not in METRICS:
        raise ValueError(f"pruning_metric={metric!r}: use one of {list(METRICS)}")


@torch.no_grad()
def difference_mask(
    student: Tensor,
    target: Tensor,
    rate: float,
    metric: PruningMetric = "abs",
    generator: torch.Generator | None = None,
) -> Tensor | None:
    """The kept parameters: a bool vector with ``a − ⌊a · rate⌋`` True entries, or None.

    None (keep everything) when no parameter is dropped, so ``rate = 0`` is exactly the
    unpruned loss. The dropped entries are those with the largest ``metric`` score.
    """
    check_pruning(rate, metric)
    total = target.numel()
    dropped = int(total * rate)
    if dropped == 0:
        return None
    if metric == "abs":
        score = (target - student).abs()
    elif metric == "relative":
        score = (target - student).abs() / (target.abs() + RELATIVE_EPS)
    else:
        device = generator.device if generator is not None else torch.device("cpu")
        score = torch.rand(total, generator=generator, device=device).to(target.device)
    kept = torch.ones(total, dtype=torch.bool, device=target.device)
    kept[torch.topk(score.reshape(-1), dropped, sorted=False).indices] = False
    return kept.view_as(target)
