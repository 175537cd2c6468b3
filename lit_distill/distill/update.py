"""One update of the synthetic set: gradients combined over ranks, then guarded (plain torch).

Distillation methods write the gradients of the synthetic set themselves (per-class backwards,
the matching engine's vector-Jacobian products), so under DDP they are combined here with one
explicit all-reduce per step rather than by DDP's hooks, in one of two ways:

* ``mean``: every rank computed a whole estimate (trajectory matching: its own expert segment);
  the update uses their average. A rank may decline to contribute (DATM's loss threshold): the
  average is then over the ranks that did, and the update is skipped when none did, exactly as a
  single process skips it.
* ``sum``: every rank computed a share of one sum (DM and TGDD: its own classes); the update
  uses the sum, which is the single-process gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass
class StepOutcome:
    """What one distillation step produced (the gradients are already in ``.grad``).

    Attributes:
        loss: the step's loss on this rank (detached), checked for finiteness.
        contribute: False to leave this rank's gradients out of the update (DATM's threshold).
        reduce: how ranks combine: ``mean`` of whole estimates, or ``sum`` of shares.
        logs: scalars to log (``train/...``), this rank's.
    """

    loss: Tensor
    contribute: bool = True
    reduce: Literal["mean", "sum"] = "mean"
    logs: dict[str, float | Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Agreement:
    """What every rank agreed on after the all-reduce."""

    contributors: int  # ranks whose gradients are in the update
    finite: bool  # every rank's loss and gradients are finite
    loss: Tensor  # the combined loss (mean or sum over the contributing ranks)


def combine_gradients(
    params: Sequence[Tensor], outcome: StepOutcome, world_size: int = 1
) -> Agreement:
    """Combine ``.grad`` of ``params`` over ranks, in place, so that every rank holds the same.

    One flat buffer holds every gradient, the loss and two flags (contribution, non-finite), so
    a step costs one all-reduce. A rank that does not contribute sends zeros. ``None`` grads
    become zeros when another rank had some. A single process only checks its gradients (no
    copy). When nothing is finite or nobody contributes, every grad is set to None (SGD then
    leaves the parameters and their momentum untouched).
    """
    if world_size == 1:
        return _single_process(params, outcome)
    contributes = outcome.contribute
    pieces = [
        p.grad.reshape(-1) if p.grad is not None and contributes else torch.zeros_like(p).view(-1)
        for p in params
    ]
    device = params[0].device
    loss = outcome.loss.detach().float().reshape(1).to(device)
    local_finite = bool(torch.isfinite(loss).all()) and all(
        bool(torch.isfinite(x).all()) for x in pieces
    )
    loss = loss if contributes else torch.zeros_like(loss)
    flags = torch.tensor([float(contributes), float(not local_finite)], device=device)
    flat = torch.cat([*(x.float() for x in pieces), torch.nan_to_num(loss), flags])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    contributors, non_finite = int(flat[-2].item()), int(flat[-1].item())
    divisor = contributors if outcome.reduce == "mean" else 1
    combined = flat[-3] / max(divisor, 1)
    if contributors > 0 and non_finite == 0:
        flat[:-3].div_(divisor)
        offset = 0
        for p in params:
            size = p.numel()
            p.grad = flat[offset : offset + size].view_as(p).to(p.dtype)
            offset += size
    else:
        for p in params:
            p.grad = None
    return Agreement(contributors, non_finite == 0, combined)


def _single_process(params: Sequence[Tensor], outcome: StepOutcome) -> Agreement:
    finite = bool(torch.isfinite(outcome.loss)) and all(
        p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params
    )
    if not (finite and outcome.contribute):
        for p in params:
            p.grad = None
    return Agreement(int(outcome.contribute), finite, outcome.loss.detach())


#: Values checked per chunk when an update is validated (bounded extra memory).
CHECK_CHUNK = 1 << 20


@torch.no_grad()
def invalid_update(optimizer: torch.optim.SGD, positive: Sequence[str] = ("lr",)) -> list[str]:
    """What the next step of ``optimizer`` would break, computed before taking it.

    For every parameter with a gradient, the SGD update (momentum as torch applies it: the
    first step uses the gradient itself) is evaluated chunk by chunk, without being applied and
    without a copy of the parameter: a group is reported when a value would become non-finite,
    or, for the groups named in ``positive`` (the learned lr), not positive. Checking first means
    a refused update leaves parameters and optimiser state exactly as they were.
    """
    bad = []
    for group in optimizer.param_groups:
        if group.get("nesterov") or group.get("weight_decay") or group.get("dampening"):
            raise ValueError("invalid_update checks plain SGD with momentum only")
        name = group.get("name", "group")
        for p in group["params"]:
            if p.grad is None:
                continue
            buffer = optimizer.state.get(p, {}).get("momentum_buffer")
            momentum = group["momentum"] if buffer is not None else 0.0
            pieces = zip(
                p.detach().reshape(-1).split(CHECK_CHUNK),
                p.grad.reshape(-1).split(CHECK_CHUNK),
                (p.grad if buffer is None else buffer).reshape(-1).split(CHECK_CHUNK),
                strict=True,
            )
            for value, grad, buf in pieces:
                new = value - group["lr"] * (momentum * buf + grad)
                if not bool(torch.isfinite(new).all()) or (
                    name in positive and bool((new <= 0).any())
                ):
                    bad.append(
                        f"{name} ({float(new.view(-1)[0]):.3g})" if new.numel() == 1 else name
                    )
                    break
    return bad


class DynamicLossScale:
    """Loss scaling for fp16 autocast (``16-mixed``), for gradients the methods compute themselves.

    Losses are multiplied by :attr:`scale` before every backward (the matching engine scales its
    inner gradients too) and the gradients divided by it afterwards, so small fp16 gradients do
    not flush to zero. An overflow (a non-finite loss or gradient) skips the update and halves
    the scale; ``growth_interval`` good steps in a row double it. A run whose updates keep
    overflowing is stopped rather than silently skipping every step: after ``max_skips``
    skipped updates in a row :meth:`update` raises.

    The state lives in three tensors so that a checkpoint resumes it exactly.
    """

    def __init__(
        self, init: float = 2.0**16, growth_interval: int = 2000, max_skips: int = 25
    ) -> None:
        # scale, good steps in a row, skipped updates in a row
        self.state = torch.tensor([init, 0.0, 0.0], dtype=torch.float64)
        self.growth_interval, self.max_skips = growth_interval, max_skips

    @property
    def scale(self) -> float:
        return float(self.state[0])

    def update(self, finite: bool) -> bool:
        """Record a step; True when its update may be applied."""
        scale, good, skipped = self.state.tolist()
        if finite:
            good += 1
            if good >= self.growth_interval:
                scale, good = scale * 2.0, 0
            self.state.copy_(torch.tensor([scale, good, 0.0], dtype=torch.float64))
            return True
        skipped += 1
        self.state.copy_(torch.tensor([scale / 2.0, 0.0, skipped], dtype=torch.float64))
        if skipped >= self.max_skips:
            raise FloatingPointError(
                f"{int(skipped)} updates in a row overflowed in fp16 (loss scale now "
                f"{scale / 2:g}): the loss or its gradients do not fit fp16; use "
                "--trainer.precision bf16-mixed (or 32)"
            )
        return False
