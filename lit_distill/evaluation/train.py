"""Training a fresh network on a synthetic set, and measuring it on real images (plain torch).

Everything runs on the device of the images it is given, and every random draw (minibatch
order, DSA, CutMix) comes from the caller's generator: a run never touches the global random
state and is reproducible (bit for bit on the CPU; on a GPU up to its non-deterministic
kernels, unless ``torch.use_deterministic_algorithms`` is on).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR
from torchmetrics.classification import MulticlassAccuracy

from lit_distill.augment import DSA, cutmix
from lit_distill.data import LabeledImages
from lit_distill.evaluation.protocols import EvalProtocol

Checkpoint = Callable[[int, nn.Module], None]


def train_on_synthetic(
    net: nn.Module,
    images: Tensor,
    targets: Tensor,
    protocol: EvalProtocol,
    preprocess: nn.Module,
    lr: float,
    generator: torch.Generator,
    on_checkpoint: Checkpoint | None = None,
) -> nn.Module:
    """Train ``net`` on ``(images, targets)`` with ``protocol``; return it (trained in place).

    Args:
        net: a freshly initialised network, moved to the images' device.
        images: training images (N, C, H, W), float pixels.
        targets: int64 labels (N,), or label logits (N, num_classes) for soft labels.
        protocol: epochs, optimiser, augmentation (see :class:`EvalProtocol`).
        preprocess: pixels -> network input (normalisation or ZCA); never trained.
        lr: the SGD learning rate (see :meth:`EvalProtocol.learning_rate`).
        generator: CPU generator of every random draw.
        on_checkpoint: called as ``on_checkpoint(epoch, net)`` after each epoch of
            :meth:`EvalProtocol.checkpoint_epochs` (the last one included).
    """
    # Inference tensors (made under a Lightning test loop) cannot be saved for backward.
    with torch.inference_mode(False), torch.enable_grad():
        images, targets = training_set(images, targets, protocol, preprocess)
        net.to(images.device).train()
        optimizer, scheduler = _sgd(net, protocol, lr)
        augment = DSA(protocol.augment, mode=protocol.augment_mode, per_sample=protocol.per_sample)
        checkpoints = set(protocol.checkpoint_epochs())
        for epoch in range(1, protocol.epochs + 1):
            for batch in _minibatches(images.shape[0], protocol.batch_size, generator):
                batch = batch.to(images.device)
                loss = _loss(
                    net, images[batch], targets[batch], augment, preprocess, protocol, generator
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            scheduler.step()
            if on_checkpoint is not None and epoch in checkpoints:
                on_checkpoint(epoch, net)
    return net


def training_set(
    images: Tensor, targets: Tensor, protocol: EvalProtocol, preprocess: nn.Module
) -> tuple[Tensor, Tensor]:
    """The images as the protocol augments them (network inputs in ``input`` space, pixels
    otherwise) and the targets it trains against (see :func:`_training_targets`); copies."""
    images, targets = images.detach().clone(), _training_targets(targets, protocol)
    if protocol.augment_space == "input":  # augment network inputs: map them once
        with torch.no_grad():
            images = preprocess(images)
    return images, targets


def _sgd(
    net: nn.Module | list[Tensor], protocol: EvalProtocol, lr: float
) -> tuple[Optimizer, LRScheduler]:
    """SGD with the protocol's momentum and weight decay, decayed per epoch at the milestones."""
    params = net.parameters() if isinstance(net, nn.Module) else net
    optimizer = torch.optim.SGD(
        params, lr=lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay
    )
    scheduler = MultiStepLR(optimizer, protocol.milestone_epochs(), gamma=protocol.gamma)
    return optimizer, scheduler


def _training_targets(targets: Tensor, protocol: EvalProtocol) -> Tensor:
    """Hard labels as given; logits as probabilities (soft) or as their arg-max (hard)."""
    targets = targets.detach().clone()
    if targets.dim() == 1:
        return targets.long()
    if protocol.soft_labels == "hard":
        return targets.argmax(dim=1)
    return targets.float().softmax(dim=1)


def _minibatches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """One shuffled epoch of indices (CPU). A trailing batch of one image is dropped when there
    are others, because BatchNorm networks cannot train on a single image."""
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(batches) > 1 and batches[-1].numel() == 1:
        batches.pop()
    return batches


def _loss(
    net: nn.Module,
    images: Tensor,
    targets: Tensor,
    augment: DSA,
    preprocess: nn.Module,
    protocol: EvalProtocol,
    generator: torch.Generator,
) -> Tensor:
    """Augment a batch (DSA, then CutMix) in the protocol's space, forward it, and return the
    (mixed) loss. In ``input`` space the images are already network inputs."""
    with torch.no_grad():  # the images are constants here: no graph through the pipeline
        images = augment.apply(images, augment.draw(images.shape, generator))
        batch = finish_batch(images, targets, preprocess, protocol, generator)
    return mixed_loss(net(batch.inputs), batch)


@dataclass
class Batch:
    """One training batch after augmentation: network inputs and the (CutMix-mixed) targets."""

    inputs: Tensor
    targets: Tensor
    targets_b: Tensor
    lam: float


def finish_batch(
    images: Tensor,
    targets: Tensor,
    preprocess: nn.Module,
    protocol: EvalProtocol,
    generator: torch.Generator,
) -> Batch:
    """CutMix (when the protocol has it) on DSA-augmented images, then the network inputs."""
    lam, targets_b = 1.0, targets
    if protocol.cutmix_prob > 0:
        images, targets, targets_b, lam = cutmix(
            images, targets, generator, protocol.cutmix_beta, protocol.cutmix_prob
        )
    inputs = preprocess(images) if protocol.augment_space == "pixel" else images
    return Batch(inputs, targets, targets_b, lam)


def mixed_loss(logits: Tensor, batch: Batch) -> Tensor:
    """The batch's cross-entropy; with CutMix, both targets weighted by area."""
    loss = _cross_entropy(logits, batch.targets)
    if batch.lam < 1.0:  # CutMix pasted a box: the loss mixes both targets by area
        loss = batch.lam * loss + (1.0 - batch.lam) * _cross_entropy(logits, batch.targets_b)
    return loss


def _cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy against int labels, or against probability vectors (soft labels)."""
    if targets.dim() == 1:
        return F.cross_entropy(logits, targets)
    return -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()


def accuracy(
    net: nn.Module,
    test: LabeledImages,
    preprocess: nn.Module,
    batch_size: int = 500,
    channels_last: bool | None = None,
) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``net`` on ``test``, on the test images' device.

    The network is put in eval mode for the measurement and given back in the mode it had.

    Args:
        channels_last: measure a channels-last copy of the network (the same values to float
            rounding; ``net`` itself is not changed). None: as :func:`measured_channels_last`
            decides (on a CPU, a network with convolutions on large images).
    """
    if channels_last is None:
        channels_last = measured_channels_last(net, test.device, test.images.shape)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    was_training = net.training
    model = copy.deepcopy(net).to(memory_format=layout) if channels_last else net
    # No cross-process sync: every caller measures the whole test split itself.
    metric = MulticlassAccuracy(test.num_classes, average="micro", sync_on_compute=False)
    metric = metric.to(test.device)
    model.eval()
    try:
        with torch.no_grad():
            for rows in torch.arange(len(test)).split(batch_size):
                inputs = preprocess(test.pixels(rows))
                logits = model(inputs.contiguous(memory_format=layout) if channels_last else inputs)
                metric.update(logits, test.labels[rows.to(test.device)])
        return float(metric.compute())
    finally:
        net.train(was_training)


#: Smallest image side measured channels-last on a CPU. There, measuring a ConvNet (width 32)
#: channels-last took 0.63-0.73x the time at 64 and 128 px, 0.92-1.01x at 28-32 px (but twice
#: the time with 3 channels at 28 px) and twice the time at 8-24 px
#: (``benchmarks/inference_layout.py``).
CHANNELS_LAST_MIN_SIDE = 64


def measured_channels_last(
    net: nn.Module, device: torch.device, image_shape: Sequence[int]
) -> bool:
    """Whether ``net`` is measured in the channels-last layout: on a CPU, a network with
    convolutions, on images of at least :data:`CHANNELS_LAST_MIN_SIDE` pixels a side
    (oneDNN's faster layout there for inference at those sizes)."""
    return (
        device.type == "cpu"
        and min(image_shape[-2:]) >= CHANNELS_LAST_MIN_SIDE
        and any(isinstance(m, nn.Conv2d) for m in net.modules())
    )
