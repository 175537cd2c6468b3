"""Distilled sets as proxies for neural architecture search (DPD §4.5, after DC/DSA).

A search space of ConvNets varies width, depth, normalisation, activation and pooling (DSA's NAS
experiment and DPD's have 4 x 4 x 5 x 3 x 3 = 720). Every architecture is trained on each proxy
(a distilled set, a random real subset) and on the real training data, and measured on the
real test split. The real data's ranking is the truth; a proxy is good when it ranks the best
architectures the same way. DPD reports Spearman's rho over the top 5, 10 and 20 (by real-data
accuracy): here :func:`top_k_correlations` takes the k architectures that rank best on the real
data and correlates their proxy accuracies with their real ones.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SearchSpace:
    """ConvNet variants: every combination of the options, or ``size`` of them drawn with
    ``seed`` (the same ones every time)."""

    widths: tuple[int, ...] = (16, 32)
    depths: tuple[int, ...] = (1, 2, 3)
    norms: tuple[str, ...] = ("instance", "batch", "none")
    activations: tuple[str, ...] = ("relu", "leakyrelu", "sigmoid")
    poolings: tuple[str, ...] = ("avg", "max")
    size: int | None = 30
    seed: int = 0

    def __post_init__(self) -> None:
        options = (self.widths, self.depths, self.norms, self.activations, self.poolings)
        if any(len(o) == 0 for o in options):
            raise ValueError("every option of the search space needs at least one value")
        if self.size is not None and self.size < 2:
            raise ValueError(f"the search space needs at least 2 architectures, got {self.size}")

    def architectures(self) -> list[dict]:
        """The ConvNet options of every architecture searched (``build_model("convnet", ...)``)."""
        every = [
            {"width": w, "depth": d, "norm": n, "activation": a, "pooling": p}
            for w, d, n, a, p in itertools.product(
                self.widths, self.depths, self.norms, self.activations, self.poolings
            )
        ]
        if self.size is None or self.size >= len(every):
            return every
        return random.Random(self.seed).sample(every, self.size)


def name_of(options: dict) -> str:
    """``w32-d2-instance-relu-avg``: an architecture's short name."""
    return "-".join(
        [f"w{options['width']}", f"d{options['depth']}", options["norm"], options["activation"],
         options["pooling"]]
    )  # fmt: skip


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1 (smallest), ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the ranks (nan when a side is constant)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("spearman needs two sequences of one length, at least 2")
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return cov / (va * vb) ** 0.5 if va > 0 and vb > 0 else float("nan")


def top_k_correlations(
    real: Sequence[float], proxy: Sequence[float], ks: Sequence[int]
) -> dict[int, float]:
    """For each k, Spearman's rho between the proxy and real accuracies of the k architectures
    with the best real-data accuracy (k larger than the space: all of them)."""
    best = sorted(range(len(real)), key=lambda i: real[i], reverse=True)
    out = {}
    for k in ks:
        top = best[: min(k, len(real))]
        out[k] = spearman([real[i] for i in top], [proxy[i] for i in top])
    return out
