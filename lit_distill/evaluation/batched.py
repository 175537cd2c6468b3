"""Training the runs of one evaluation together: one network over stacked parameters.

An evaluation trains several fresh networks of one architecture on tiny sets (IPC 1: ten images),
where a step is a handful of small kernel calls per network. Here the R runs take their
steps together: their parameters are stacked along a new first dimension, one forward and one
backward serve every network, and one SGD updates the stacked tensors (SGD, momentum and
weight decay act element by element, so this is R independent optimisers with one lr).

The forward of all runs is, for the plain convolutional networks (ConvNet, VGG-11, AlexNet:
blocks of conv, GroupNorm or none, activation and pooling, then one Linear), a single *grouped*
network: run r's images are channels ``r*C .. (r+1)*C - 1`` of one batch, every convolution has
``groups=R`` (on a CPU the first may be computed from the image patches instead,
:func:`_unfold_pays`), GroupNorm has R times the groups, and the classifiers are one batched
matrix product (:func:`grouped_forward`). Any other network is vmapped (``torch.func.vmap`` of
``functional_call``), which costs more per step on a CPU. Each run keeps its own seed: its
initialisation, minibatch order, DSA and CutMix draws come from its own generator, in the order
:func:`lit_distill.evaluation.train.train_on_synthetic` draws them, and the DSA of all runs is
applied in a few calls (runs that drew the same op share one). The result is the sequential
runs' to float rounding (tested).

Only networks without running statistics or randomness of their own (BatchNorm, dropout) can be
vmapped this way; :func:`can_batch` says which, and the evaluator falls back to one run at a
time for the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.modules.utils import _pair

from lit_distill.augment import DSA
from lit_distill.evaluation.protocols import EvalProtocol
from lit_distill.evaluation.train import (
    _minibatches,
    _sgd,
    finish_batch,
    mixed_loss,
    training_set,
)
from lit_distill.models.convnet import ConvBlock, FeatureClassifier

#: ``on_checkpoint(epoch, run, net)``: run ``run``'s network after ``epoch`` (weights copied in).
BatchedCheckpoint = Callable[[int, int, nn.Module], None]

#: Layers whose forward updates state or draws random numbers: not vmapped.
_STATEFUL = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)

#: Layers that act on each channel of each image alone: the same in a grouped network.
_PER_CHANNEL = (
    nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Sigmoid, nn.AvgPool2d, nn.MaxPool2d, nn.Identity
)  # fmt: skip

#: Largest feature map (values) pooled by sums of halves on a CPU: about where ``avg_pool2d``
#: becomes the faster of the two (forward and backward, one thread).
_HALVES_MAX = 1 << 22

#: Pixels of a run's batch (images x height x width) up to which the first convolution of
#: images of several channels is computed from patches on a CPU (see :func:`_unfold_pays`).
_PATCHES_MAX = 1 << 14

#: ``forward(stacked parameters, inputs (R, B, C, H, W)) -> logits (R, B, classes)``.
StackedForward = Callable[[dict[str, Tensor], Tensor], Tensor]


def can_batch(net: nn.Module) -> bool:
    """Whether runs of ``net`` may be trained together (no BatchNorm, no dropout)."""
    return not any(isinstance(m, _STATEFUL) for m in net.modules())


def train_together(
    nets: Sequence[nn.Module],
    sets: Sequence[tuple[Tensor, Tensor]],
    protocol: EvalProtocol,
    preprocess: nn.Module,
    lr: float,
    generators: Sequence[torch.Generator],
    on_checkpoint: BatchedCheckpoint | None = None,
) -> list[nn.Module]:
    """Train ``nets[r]`` on ``sets[r]`` with ``generators[r]``, all in one vmapped loop.

    Every set must hold as many images; the networks must share one architecture and be on the
    images' device. Returns the networks, trained in place.
    """
    if not nets or len({len(nets), len(sets), len(generators)}) != 1:
        raise ValueError("one set and one generator per network")
    with torch.inference_mode(False), torch.enable_grad():
        data = [training_set(images, targets, protocol, preprocess) for images, targets in sets]
        if len({images.shape for images, _ in data}) != 1:
            raise ValueError("runs trained together need sets of one shape")
        template = nets[0]
        names = [name for name, _ in template.named_parameters()]
        stacked = _stack(nets, names)
        optimizer, scheduler = _sgd(list(stacked.values()), protocol, lr)
        augment = DSA(protocol.augment, mode=protocol.augment_mode, per_sample=protocol.per_sample)
        forward = grouped_forward(template) or vmap(
            lambda params, x: functional_call(template, params, (x,))
        )
        checkpoints = set(protocol.checkpoint_epochs())
        template.train()
        for epoch in range(1, protocol.epochs + 1):
            orders = [_minibatches(data[0][0].shape[0], protocol.batch_size, g) for g in generators]
            for step in range(len(orders[0])):
                rows = [order[step] for order in orders]
                batches = _augmented(data, rows, augment, preprocess, protocol, generators)
                logits = forward(stacked, torch.stack([b.inputs for b in batches]))
                loss = sum(mixed_loss(out, b) for out, b in zip(logits, batches, strict=True))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            scheduler.step()
            if on_checkpoint is not None and epoch in checkpoints:
                _unstack(stacked, nets)
                for run, net in enumerate(nets):
                    on_checkpoint(epoch, run, net)
        _unstack(stacked, nets)
    return list(nets)


def grouped_forward(net: nn.Module) -> StackedForward | None:
    """The forward of R stacked copies of ``net`` as one grouped network, or None when ``net``
    is not a plain convolutional network (a :class:`FeatureClassifier` whose ``features`` are
    :class:`ConvBlock` s of a zero-padded conv, GroupNorm or none, and per-channel layers)."""
    if not _plain_convolutional(net):
        return None
    blocks = list(net.features)

    def forward(params: dict[str, Tensor], x: Tensor) -> Tensor:
        runs, batch = x.shape[:2]
        h = x.transpose(0, 1).reshape(batch, runs * x.shape[2], *x.shape[3:])
        for i, block in enumerate(blocks):
            conv, prefix = block.conv, f"features.{i}."
            weight, bias = params[prefix + "conv.weight"], params.get(prefix + "conv.bias")
            if _unfold_pays(conv, h):
                h = _unfolded_conv(h, conv, weight, bias)
            else:
                h = F.conv2d(
                    h, weight.flatten(0, 1), _flat(bias), conv.stride, conv.padding,
                    conv.dilation, groups=runs,
                )  # fmt: skip
            if isinstance(block.norm, nn.GroupNorm):
                weight, bias = params.get(prefix + "norm.weight"), params.get(prefix + "norm.bias")
                h = F.group_norm(
                    h, runs * block.norm.num_groups, _flat(weight), _flat(bias), block.norm.eps
                )
            h = _pool(block.pool, block.act(h))
        features = h.reshape(batch, runs, -1).transpose(0, 1)  # (R, B, D): each run's embed
        logits = features @ params["classifier.weight"].transpose(1, 2)
        bias = params.get("classifier.bias")
        return logits if bias is None else logits + bias.unsqueeze(1)

    return forward


def _unfold_pays(conv: nn.Conv2d, h: Tensor) -> bool:
    """Whether :func:`_unfolded_conv` computes this grouped convolution of ``h``: on a CPU, for
    an input that needs no gradient (the first layer's images), of one channel per run or of at
    most :data:`_PATCHES_MAX` pixels per run's batch, where ``benchmarks/eval_conv.py`` measured
    it faster than the grouped convolution, forward and backward."""
    if h.device.type != "cpu" or h.requires_grad or not isinstance(conv.padding, tuple):
        return False
    return conv.in_channels == 1 or h.shape[0] * h.shape[-2] * h.shape[-1] <= _PATCHES_MAX


def _unfolded_conv(h: Tensor, conv: nn.Conv2d, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The grouped convolution of ``h`` (B, R*C, H, W) by the stacked ``weight`` (R, O, C, k, k)
    as one broadcast matrix product with the image patches (``unfold``): a grouped convolution
    of few input channels is a poor fit for the CPU's convolution kernels."""
    runs, out_channels = weight.shape[:2]
    kernel = weight.shape[-2:]
    patches = F.unfold(h, kernel, conv.dilation, conv.padding, conv.stride)  # (B, R*C*k*k, L)
    height, width = (
        (size + 2 * pad - dil * (k - 1) - 1) // stride + 1
        for size, pad, dil, k, stride in zip(
            h.shape[-2:], conv.padding, conv.dilation, kernel, conv.stride, strict=True
        )
    )
    patches = patches.view(h.shape[0], runs, -1, height * width)
    out = weight.flatten(2).unsqueeze(0) @ patches  # (B, R, O, L)
    if bias is not None:
        out = out + bias.view(1, runs, out_channels, 1)
    return out.view(h.shape[0], runs * out_channels, height, width)


def _flat(param: Tensor | None) -> Tensor | None:
    """A stacked (R, C) parameter as the grouped layer's (R*C,) one; None stays None."""
    return None if param is None else param.flatten()


def _pool(pool: nn.Module, h: Tensor) -> Tensor:
    """``pool(h)``; on a CPU, a 2x2 average of even-sized maps of at most
    :data:`_HALVES_MAX` values as two sums of halves, which cost about half of ``avg_pool2d``
    forward and backward there at an evaluation's map sizes, and more above."""
    height, width = h.shape[-2:]
    if not (
        h.device.type == "cpu"
        and h.numel() <= _HALVES_MAX
        and height % 2 == 0
        and width % 2 == 0
        and _is_2x2_average(pool)
    ):
        return pool(h)
    rows = h.unflatten(-2, (height // 2, 2))
    rows = rows[..., 0, :] + rows[..., 1, :]
    cols = rows.unflatten(-1, (width // 2, 2))
    return (cols[..., 0] + cols[..., 1]) * 0.25


def _is_2x2_average(pool: nn.Module) -> bool:
    """Whether ``pool`` is a plain 2x2, stride-2 average pooling."""
    if type(pool) is not nn.AvgPool2d:
        return False
    return (
        _pair(pool.kernel_size) == (2, 2)
        and _pair(pool.stride) == (2, 2)
        and _pair(pool.padding) == (0, 0)
        and not pool.ceil_mode
        and pool.divisor_override is None
    )


def _plain_convolutional(net: nn.Module) -> bool:
    """Whether :func:`grouped_forward` computes ``net``'s forward (see there)."""
    cls = type(net)
    if not (
        isinstance(net, FeatureClassifier)
        and cls.forward is FeatureClassifier.forward
        and cls.embed is FeatureClassifier.embed
        and type(net.features) is nn.Sequential
        and type(net.classifier) is nn.Linear
    ):
        return False
    return all(
        type(block) is ConvBlock
        and type(block.conv) is nn.Conv2d
        and block.conv.groups == 1
        and block.conv.padding_mode == "zeros"
        and isinstance(block.norm, (nn.GroupNorm, nn.Identity))
        and isinstance(block.act, _PER_CHANNEL)
        and isinstance(block.pool, _PER_CHANNEL)
        for block in net.features
    )


def _stack(nets: Sequence[nn.Module], names: list[str]) -> dict[str, Tensor]:
    """Each parameter of every network, stacked along a new first dimension (leaf tensors)."""
    params = [dict(net.named_parameters()) for net in nets]
    return {
        name: torch.stack([p[name].detach() for p in params]).requires_grad_(True) for name in names
    }


@torch.no_grad()
def _unstack(stacked: dict[str, Tensor], nets: Sequence[nn.Module]) -> None:
    """Copy each run's slice of the stacked parameters into its network."""
    for run, net in enumerate(nets):
        for name, param in net.named_parameters():
            param.copy_(stacked[name][run])


@torch.no_grad()
def _augmented(data, rows, augment: DSA, preprocess, protocol: EvalProtocol, generators):
    """Every run's batch, augmented: DSA plans drawn per run (its own stream, in the sequential
    order), applied together for the runs that drew the same ops, then CutMix per run."""
    images = [data[r][0][rows[r].to(data[r][0].device)] for r in range(len(data))]
    plans = [augment.draw(x.shape, g) for x, g in zip(images, generators, strict=True)]
    augmented = _apply_grouped(augment, images, plans) if protocol.per_sample else [
        augment.apply(x, plan) for x, plan in zip(images, plans, strict=True)
    ]  # fmt: skip
    return [
        finish_batch(x, data[r][1][rows[r].to(x.device)], preprocess, protocol, generators[r])
        for r, x in enumerate(augmented)
    ]


def _apply_grouped(augment: DSA, images: list[Tensor], plans: list) -> list[Tensor]:
    """``augment.apply(images[r], plans[r])`` for every run, one call per distinct op list:
    per-sample parameters of the runs in a group are concatenated like their images."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for run, plan in enumerate(plans):
        groups.setdefault(tuple(op for op, _ in plan), []).append(run)
    out: list[Tensor | None] = [None] * len(images)
    for runs in groups.values():
        merged = []
        for i, (op, _) in enumerate(plans[runs[0]]):
            params = zip(*(plans[r][i][1] for r in runs), strict=True)
            merged.append((op, tuple(torch.cat(parts) for parts in params)))
        result = augment.apply(torch.cat([images[r] for r in runs]), merged)
        for r, piece in zip(runs, result.split([images[r].shape[0] for r in runs]), strict=True):
            out[r] = piece
    return out
