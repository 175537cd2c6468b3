"""The trajectory-matching engine (plain torch): a student unrolled from an expert snapshot and
the exact gradient of the normalised parameter-matching loss.

One matching *segment* is a start vector ``θ*_t`` and a target ``θ*_{t+M}`` (two snapshots of an
expert, or two points on MCT's straight line). The student starts at ``θ*_t`` and takes ``N``
SGD steps with the learnable learning rate ``lr`` on minibatches of the synthetic set:

    θ_{k+1} = θ_k − lr · ∇_θ ℓ(f(θ_k, x_k), y_k),        k = 0 .. N−1

and the loss (MTT, Cazenavette et al. 2022, eq. 2) is

    L = Σ_j (θ_N − θ*_{t+M})_j² / Σ_j (θ*_t − θ*_{t+M})_j²

summed over every parameter ``j``, or over a kept subset (DPD's pruning) given by a mask that
carries no gradient. ``x_k`` and ``y_k`` are built from the synthetic set's leaves (images,
label logits) by a caller-supplied ``batch`` function from a :class:`StudentStep`, whose
indices and augmentation seed are drawn once per iteration, so a step can be rebuilt exactly.

Two backward modes give the same gradient w.r.t. the leaves and ``lr``:

* ``unroll`` keeps the graph of every step and back-propagates through all of them (what the
  reference code does; memory grows linearly with ``N``);
* ``replay`` keeps only ``θ_k`` of every step (``N × P`` floats), then walks backwards,
  rebuilding one step at a time with the same minibatch and augmentation, and takes one
  vector-Jacobian product per step with respect to ``θ_k``, the leaves and ``lr``. Peak memory
  is one step's double-backward graph plus the stored ``θ_k``. The result is exact: the
  Hessian-vector products of every step are included (it is *not* the TESLA approximation,
  which builds each step from detached gradients and drops them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

BackwardMode = Literal["unroll", "replay"]

#: ``batch(step) -> (network inputs, targets)``: int64 labels (N,) or probabilities (N, K).
BatchFn = Callable[["StudentStep"], tuple[Tensor, Tensor]]
#: ``mask(final, segment) -> kept`` (bool vector over the parameters) or None (keep all).
MaskFn = Callable[[Tensor, "Segment"], "Tensor | None"]


class FlatModel:
    """A network evaluated at a flat parameter vector, through ``torch.func.functional_call``.

    The vector is split into named views in the order of ``names`` (a trajectory's
    ``param_names``): no module copy per step, and the gradient w.r.t. the vector is exact.
    Buffers (BatchNorm statistics) are the network's own.

    Args:
        net: the network (its parameters' values are ignored).
        names: parameter names in the vector's order (default: ``net``'s own order).
        shapes: their shapes (default: from ``net``).
    """

    def __init__(
        self,
        net: nn.Module,
        names: Sequence[str] | None = None,
        shapes: Sequence[Sequence[int]] | None = None,
    ) -> None:
        params = dict(net.named_parameters())
        self.net = net
        self.names = list(params) if names is None else list(names)
        self.shapes = [tuple(params[n].shape) for n in self.names] if shapes is None else shapes
        self.sizes = [int(torch.Size(s).numel()) for s in self.shapes]

    @property
    def num_params(self) -> int:
        return sum(self.sizes)

    def __call__(self, flat: Tensor, inputs: Tensor) -> Tensor:
        pieces = flat.split(self.sizes)
        params = {n: p.view(s) for n, p, s in zip(self.names, pieces, self.shapes, strict=True)}
        return functional_call(self.net, params, (inputs,))

    def flatten(self, net: nn.Module | None = None) -> Tensor:
        """The parameters of ``net`` (default: this model's) as one detached vector."""
        params = dict((net or self.net).named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])


@dataclass(frozen=True)
class Segment:
    """One matching segment: the student starts at ``start`` and should end near ``target``."""

    start: Tensor
    target: Tensor


@dataclass(frozen=True)
class StudentStep:
    """What step ``k`` of the inner loop trains on: rows of the synthetic set, and the seed of
    the step's own augmentation stream (so the step can be rebuilt bit for bit)."""

    indices: Tensor
    seed: int


@dataclass
class MatchResult:
    """Outcome of one matching: the loss, the gradients and the student's end point.

    Attributes:
        loss: the normalised matching loss (detached, 0-dim).
        grad_lr: dL/dlr (None when ``lr`` does not require a gradient).
        grads: dL/dleaf for every leaf, in order (None for a leaf the loss does not reach).
        final: the student's last parameters ``θ_N`` (detached).
        kept: the number of parameters the loss was computed on.
    """

    loss: Tensor
    grad_lr: Tensor | None
    grads: list[Tensor | None]
    final: Tensor
    kept: int


def plan_steps(
    num_images: int, batch_size: int, steps: int, generator: torch.Generator
) -> list[StudentStep]:
    """The minibatches of ``steps`` student steps, as the MTT code draws them.

    Indices come from a random permutation of the ``num_images`` synthetic images split into
    chunks of ``batch_size``; each step takes the *last* remaining chunk, and a fresh
    permutation is drawn when none is left. Each step also gets its own augmentation seed.
    """
    if num_images < 1 or batch_size < 1 or steps < 1:
        raise ValueError(
            f"need at least one image, a positive batch size and one step, got "
            f"num_images={num_images}, batch_size={batch_size}, steps={steps}"
        )
    chunks: list[Tensor] = []
    plan = []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.randperm(num_images, generator=generator).split(batch_size))
        seed = int(torch.randint(2**62, (1,), generator=generator))
        plan.append(StudentStep(chunks.pop(), seed))
    return plan


def student_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against int labels, or against probability vectors (soft labels, DATM)."""
    if targets.dim() == 1:
        return F.cross_entropy(logits, targets)
    return -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()


def matching_loss(final: Tensor, segment: Segment, kept: Tensor | None = None) -> Tensor:
    """``Σ (final − target)² / Σ (start − target)²``, over the ``kept`` parameters if given."""
    moved = final - segment.target
    span = segment.start - segment.target
    if kept is not None:
        moved, span = moved[kept], span[kept]
    return moved.pow(2).sum() / span.pow(2).sum()


class StudentUnroll:
    """Unroll a student from a segment's start and differentiate the matching loss.

    Args:
        model: the student network at a flat parameter vector.
        batch: builds step ``k``'s network inputs and targets from the synthetic set's leaves
            (differentiably when gradients are enabled).
        mode: ``"replay"`` (constant memory in the number of steps, exact) or ``"unroll"``.
        scale: loss scale for fp16 autocast: every backward runs on ``scale`` times its loss
            (the student's own steps are divided back), so small fp16 gradients do not flush to
            zero. The returned gradients are ``scale`` times the true ones; the loss is not.
    """

    def __init__(
        self, model: FlatModel, batch: BatchFn, mode: BackwardMode = "replay", scale: float = 1.0
    ) -> None:
        if mode not in ("unroll", "replay"):
            raise ValueError(f"unknown backward mode {mode!r}: use 'unroll' or 'replay'")
        self.model, self.batch, self.mode, self.scale = model, batch, mode, scale

    def run(
        self,
        segment: Segment,
        plan: Sequence[StudentStep],
        lr: Tensor,
        leaves: Sequence[Tensor],
        mask: MaskFn | None = None,
    ) -> MatchResult:
        """Train the student along ``plan`` and return the loss and its gradients.

        Args:
            segment: start and target vectors (on the student's device, float32).
            plan: the steps (see :func:`plan_steps`).
            lr: the student's learning rate, a 0-dim tensor (learned when it requires grad).
            leaves: tensors the batches are built from (images, label logits) whose gradients
                are wanted.
            mask: DPD-style selection of the parameters the loss is computed on, from the
                detached final vector.
        """
        if not plan:
            raise ValueError("the student needs at least one step")
        run = self._unroll if self.mode == "unroll" else self._replay
        return run(segment, list(plan), lr, list(leaves), mask)

    # ------------------------------------------------------------------ unroll
    def _unroll(self, segment, plan, lr, leaves, mask) -> MatchResult:
        theta = segment.start.detach().clone().requires_grad_(True)
        for step in plan:
            grad = self._step_gradient(theta, step, create_graph=True)
            theta = theta - lr * grad
        kept = None if mask is None else mask(theta.detach(), segment)
        loss = matching_loss(theta, segment, kept)
        wanted = ([lr] if lr.requires_grad else []) + leaves
        grads = list(torch.autograd.grad(loss * self.scale, wanted, allow_unused=True))
        grad_lr = grads.pop(0) if lr.requires_grad else None
        return MatchResult(loss.detach(), grad_lr, grads, theta.detach(), _count(kept, theta))

    # ------------------------------------------------------------------ replay
    def _replay(self, segment, plan, lr, leaves, mask) -> MatchResult:
        rate = lr.detach()
        thetas = []
        theta = segment.start.detach()
        for step in plan:  # forward: keep θ_k only, no graph through the synthetic set
            thetas.append(theta)
            with torch.no_grad():
                inputs, targets = self.batch(step)
            grad = self._step_gradient(theta, step, batch=(inputs, targets))
            theta = theta - rate * grad
        final = theta
        kept = None if mask is None else mask(final, segment)
        loss, adjoint = _loss_and_gradient(final, segment, kept)
        adjoint = adjoint * self.scale
        grad_lr = torch.zeros_like(rate) if lr.requires_grad else None
        grads: list[Tensor | None] = [None] * len(leaves)
        for theta_k, step in zip(reversed(thetas), reversed(plan), strict=True):
            theta_k = theta_k.detach().requires_grad_(True)
            with torch.enable_grad():
                grad = self._step_gradient(theta_k, step, create_graph=True)
                # θ_{k+1} = θ_k − lr·g(θ_k, leaves): pull the adjoint of θ_{k+1} back.
                pulled = torch.autograd.grad(
                    grad, [theta_k, *leaves], grad_outputs=-rate * adjoint, allow_unused=True
                )
            if grad_lr is not None:
                grad_lr = grad_lr - (adjoint * grad.detach()).sum()
            adjoint = adjoint + pulled[0]
            grads = [_add(total, new) for total, new in zip(grads, pulled[1:], strict=True)]
        return MatchResult(loss, grad_lr, grads, final, _count(kept, final))

    def _step_gradient(
        self,
        theta: Tensor,
        step: StudentStep,
        create_graph: bool = False,
        batch: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """∇_θ of the student's loss on ``step``'s batch at ``theta``."""
        with torch.enable_grad():
            if not theta.requires_grad:
                theta = theta.detach().requires_grad_(True)
            inputs, targets = self.batch(step) if batch is None else batch
            loss = student_loss(self.model(theta, inputs), targets)
            (grad,) = torch.autograd.grad(loss * self.scale, theta, create_graph=create_graph)
        return grad / self.scale if self.scale != 1.0 else grad


def _loss_and_gradient(
    final: Tensor, segment: Segment, kept: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The matching loss and its gradient w.r.t. ``final``, in closed form."""
    moved = final - segment.target
    span = (segment.start - segment.target).pow(2)
    if kept is not None:
        moved = moved * kept.to(moved.dtype)
        span = span[kept]
    denominator = span.sum()
    return moved.pow(2).sum() / denominator, 2.0 * moved / denominator


def _add(total: Tensor | None, new: Tensor | None) -> Tensor | None:
    if new is None:
        return total
    return new if total is None else total + new


def _count(kept: Tensor | None, theta: Tensor) -> int:
    return theta.numel() if kept is None else int(kept.sum())
