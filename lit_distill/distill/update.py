"""One update of the synthetic set: gradients averaged over ranks, then guarded (plain torch).

Distillation methods write the gradients of the synthetic set themselves (per-class backwards,
the matching engine's vector-Jacobian products), so under DDP they are averaged here with one
explicit all-reduce per step rather than by DDP's hooks. A rank may also decline to contribute
(DATM's loss threshold): the average is then over the ranks that did, and the update is skipped
when none did, exactly as a single process skips it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass
class StepOutcome:
    """What one distillation step produced (the gradients are already in ``.grad``).

    Attributes:
        loss: the step's loss (detached), checked for finiteness.
        contribute: False to leave this rank's gradients out of the update (DATM's threshold).
        logs: scalars to log (``train/...``).
    """

    loss: Tensor
    contribute: bool = True
    logs: dict[str, float | Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Agreement:
    """What every rank agreed on after the all-reduce."""

    contributors: int  # ranks whose gradients are in the average
    finite: bool  # every rank's loss and gradients are finite


def average_gradients(
    params: Sequence[Tensor], outcome: StepOutcome, world_size: int = 1
) -> Agreement:
    """Average ``.grad`` of ``params`` over the contributing ranks, in place, on every rank.

    One flat buffer holds every gradient, the contribution flag and a non-finite flag, so a step
    costs one all-reduce. A rank that does not contribute sends zeros. Afterwards every rank
    holds the same gradients (``None`` grads become zeros when another rank had some). A single
    process only checks its gradients (no copy).
    """
    if world_size == 1:
        return _single_process(params, outcome)
    contributes = outcome.contribute
    pieces = [
        p.grad.reshape(-1) if p.grad is not None and contributes else torch.zeros_like(p).view(-1)
        for p in params
    ]
    device = params[0].device
    local_finite = bool(torch.isfinite(outcome.loss)) and all(
        bool(torch.isfinite(x).all()) for x in pieces
    )
    flags = torch.tensor([float(contributes), float(not local_finite)], device=device)
    flat = torch.cat([*(x.float() for x in pieces), flags])
    if world_size > 1:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    contributors, non_finite = int(flat[-2].item()), int(flat[-1].item())
    if contributors > 0 and non_finite == 0:
        flat[:-2].div_(contributors)
        offset = 0
        for p in params:
            size = p.numel()
            p.grad = flat[offset : offset + size].view_as(p).to(p.dtype)
            offset += size
    else:
        for p in params:
            p.grad = None  # SGD then leaves the parameter and its momentum untouched
    return Agreement(contributors, non_finite == 0)


def _single_process(params: Sequence[Tensor], outcome: StepOutcome) -> Agreement:
    finite = bool(torch.isfinite(outcome.loss)) and all(
        p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params
    )
    if not (finite and outcome.contribute):
        for p in params:
            p.grad = None
    return Agreement(int(outcome.contribute), finite)


#: Values checked per chunk when an update is validated (bounded extra memory).
CHECK_CHUNK = 1 << 22


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
