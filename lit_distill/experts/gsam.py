"""GSAM, surrogate-gap guided sharpness-aware minimisation (Zhuang et al., ICLR 2022), plain torch.

FTD (Du et al., CVPR 2023) trains the experts that DATM and DPD match with GSAM, so that their
trajectories are flatter. One GSAM step takes two gradients of the same minibatch:

1. ``g = ∇f(w)``; the weights move uphill to ``w + e`` with
   ``e = ρ · T² g / ‖T g‖`` (``T = |w|`` elementwise for the *adaptive* variant of ASAM,
   Kwon et al. 2021; ``T = 1`` otherwise);
2. ``g_p = ∇f(w + e)``; ``g`` is split into its component along ``g_p`` and the rest,
   ``g_⊥ = g − (g·g_p / ‖g_p‖²) g_p``;
3. the weights return to ``w`` and the base optimiser steps along ``g_p − α · g_⊥``.

The FTD code (``buffer_FTD.py``) uses ρ = 0.01 (constant, as its learning rate is), α = 0.3 and
the adaptive variant (its ``--adaptive`` flag defaults to true). The weights are restored from a
copy rather than by subtracting ``e``, so a step leaves no rounding behind, and a first gradient
that is not finite perturbs nothing (the base step is then skipped or refused by the caller).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

#: Added to norms before dividing by them (the FTD code's ``perturb_eps``).
EPS = 1e-12


class GSAM:
    """The two half-steps of GSAM around any base optimiser of the same parameters.

    Usage, per minibatch: backward the loss at ``w``; :meth:`perturb`; backward the loss of the
    same inputs at ``w + e``; :meth:`restore` (the parameters' ``.grad`` is now GSAM's
    direction); step the base optimiser.

    Args:
        params: the parameters (those of the base optimiser).
        rho: radius ρ of the perturbation.
        alpha: weight α of the orthogonal component removed from the perturbed gradient.
        adaptive: scale the perturbation by the weights' magnitude (ASAM's ``T = |w|``).
    """

    def __init__(
        self, params: Iterable[Tensor], rho: float, alpha: float, adaptive: bool = True
    ) -> None:
        if not rho >= 0:
            raise ValueError(f"GSAM's rho must be >= 0, got {rho}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"GSAM's alpha must lie in [0, 1], got {alpha}")
        self.params = [p for p in params if p.requires_grad]
        self.rho, self.alpha, self.adaptive = rho, alpha, adaptive
        self._weights: list[Tensor] = []
        self._grads: list[Tensor | None] = []

    @torch.no_grad()
    def perturb(self) -> None:
        """Keep ``w`` and ``g`` (the current ``.grad``), then move the weights to ``w + e``."""
        self._weights = [p.detach().clone() for p in self.params]
        self._grads = [None if p.grad is None else p.grad.detach().clone() for p in self.params]
        scaled = [
            (p.abs() * g if self.adaptive else g)
            for p, g in zip(self.params, self._grads, strict=True)
            if g is not None
        ]
        if not scaled:
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled]))
        if not torch.isfinite(norm):
            return  # nothing to climb along; the caller skips or refuses the step
        scale = self.rho / (norm + EPS)
        for p, g in zip(self.params, self._grads, strict=True):
            if g is not None:
                p.add_(g * scale * (p * p if self.adaptive else 1.0))

    @torch.no_grad()
    def restore(self) -> None:
        """Turn ``.grad`` (now ``g_p``) into ``g_p − α g_⊥`` and put the weights back at ``w``."""
        pairs = [
            (g, p.grad)
            for p, g in zip(self.params, self._grads, strict=True)
            if g is not None and p.grad is not None
        ]
        if pairs:
            inner = sum((g * gp).sum() for g, gp in pairs)
            new_norm = _norm([gp for _, gp in pairs])
            old_norm = _norm([g for g, _ in pairs])
            cosine = inner / (new_norm * old_norm + EPS)
            for g, gp in pairs:
                vertical = g - cosine * old_norm * gp / (new_norm + EPS)
                gp.sub_(self.alpha * vertical)
        for p, w in zip(self.params, self._weights, strict=True):
            p.copy_(w)
        self._weights, self._grads = [], []


def _norm(tensors: list[Tensor]) -> Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))
