"""What every trajectory-matching method shares (MTT, DATM, MCT, DPD), on the matching engine.

Each iteration a method draws a *segment* (a start and a target parameter vector: two snapshots
of an expert for MTT and DATM, two points of MCT's straight line); a student starts at the start
vector, takes ``syn_steps`` SGD steps with the learnable lr on the synthetic set (each minibatch
augmented per sample with one DSA op), and the normalised distance of its end point to the
target is the loss (see :mod:`lit_distill.distill.engine`), optionally on the parameters kept by
DPD's difference-driven pruning. Images and lr are updated by SGD with momentum 0.5, the images
in the network's input space (ZCA or normalised), unclamped, as in the reference code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lit_distill.augment import DSA
from lit_distill.distill.base import DistillationModule, _check_rate
from lit_distill.distill.engine import (
    BackwardMode,
    FlatModel,
    MatchResult,
    Segment,
    StudentStep,
    StudentUnroll,
    plan_steps,
)
from lit_distill.distill.pruning import PruningMetric, check_pruning, difference_mask
from lit_distill.distill.update import StepOutcome
from lit_distill.experts.pool import ExpertPool
from lit_distill.seeding import generator
from lit_distill.space import ImageSpace, check_space, network_inputs
from lit_distill.synthetic import SyntheticSet

#: Key of the random stream of DPD's random-pruning control.
PRUNE_STREAM = 3


class TrajectoryMatchingModule(DistillationModule):
    """Trajectory matching on one engine: subclasses say how a segment is drawn.

    The student's learning rate is learned (the set has an ``lr``), labels are learned when the
    method uses soft labels (DATM, DPD), and the gradient is exact in both backward modes.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        trajectory_dir: folder of the expert trajectories (``expert_000.pt``, ...).
        num_experts: how many experts to draw from (MTT: 100).
        expert_config: config that trains the experts when they are missing.
        train_missing_experts: train missing experts before distilling (else: a clear error).
        arch: the student's architecture (the experts'); ``arch_kwargs``: its options.
        syn_steps: student steps ``N`` per iteration.
        lr_teacher: initial value of the learned student lr (``syn_lr``).
        lr_lr: SGD learning rate of the learned lr; ``momentum_lr`` its momentum (MTT: 0.5).
        batch_syn: synthetic images per student step (``None``: all of them).
        augment: DSA strategy of the student's batches (one op per batch, per-sample
            parameters, synthetic images only), ``"none"`` to disable.
        augment_space: where DSA runs (``input``: after ZCA/normalisation, as the reference).
        backward: ``replay`` (exact, memory constant in ``syn_steps``) or ``unroll`` (exact,
            the reference's graph through every step; memory grows with ``syn_steps``).
        pruning_rate: DPD's share of parameters dropped from the loss, those with the largest
            teacher–student difference (0: every parameter, MTT/DATM/MCT).
        pruning_metric: how the difference is measured (``abs``: |t − s|, DPD's best).
        image_space: MTT optimises the network inputs themselves, unclamped (``input``).
        **kwargs: the :class:`DistillationModule` arguments (ipc, factor, init, lr_images,
            momentum_images, iterations, image_every, export_dir, real_on_device, seed).
    """

    method = "trajectory_matching"

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        dataset: str,
        trajectory_dir: str = "runs/experts",
        num_experts: int = 100,
        expert_config: str | None = None,
        train_missing_experts: bool = True,
        arch: str = "convnet3",
        arch_kwargs: dict[str, Any] | None = None,
        syn_steps: int = 20,
        lr_teacher: float = 0.01,
        lr_lr: float = 1e-5,
        momentum_lr: float = 0.5,
        batch_syn: int | None = None,
        augment: str = "color_crop_cutout_flip_scale_rotate",
        augment_space: ImageSpace = "input",
        backward: BackwardMode = "replay",
        pruning_rate: float = 0.0,
        pruning_metric: PruningMetric = "abs",
        image_space: ImageSpace = "input",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_classes, image_shape, mean, std, dataset, image_space=image_space, **kwargs
        )
        if syn_steps < 1:
            raise ValueError(f"syn_steps must be at least 1, got {syn_steps}")
        if batch_syn is not None and batch_syn < 1:
            raise ValueError(
                f"batch_syn must be positive (or null for all images), got {batch_syn}"
            )
        check_pruning(pruning_rate, pruning_metric)
        _check_rate("lr_teacher", lr_teacher)
        _check_rate("lr_lr", lr_lr)
        check_space("augment_space", augment_space)
        if backward not in ("unroll", "replay"):
            raise ValueError(f"backward={backward!r}: use 'replay' or 'unroll'")
        self.experts = ExpertPool(
            trajectory_dir, num_experts, expert_config, train_missing_experts, arch, arch_kwargs
        )
        self.augment = DSA(augment, mode="single", per_sample=True)
        self.student: FlatModel | None = None

    # ------------------------------------------------------------------ what is learned
    def build_synthetic_set(self) -> SyntheticSet:
        hp = self.hparams
        return SyntheticSet(
            self.num_classes,
            hp.ipc,
            self.image_shape,
            factor=hp.factor,
            soft_labels=self.soft_labels,
            lr=hp.lr_teacher,
            space=hp.image_space,
        )

    @property
    def soft_labels(self) -> bool:
        return False

    def param_groups(self) -> list[dict[str, Any]]:
        hp = self.hparams
        lr = {"params": [self.synthetic.lr], "name": "lr", "lr": hp.lr_lr,
              "momentum": hp.momentum_lr}  # fmt: skip
        return [*super().param_groups(), lr]

    # ------------------------------------------------------------------ one iteration
    def on_fit_start(self) -> None:
        super().on_fit_start()
        net = self.build_network().to(self.device).train()  # BatchNorm: batch statistics
        self.student = FlatModel(net, self.bank.param_names, self.bank.param_shapes)

    def sample_segment(self, rng: torch.Generator) -> tuple[Segment, dict[str, float]]:
        """This iteration's start and target vectors, and what to log about them."""
        raise NotImplementedError

    def distill_step(self, rng: torch.Generator) -> StepOutcome:
        segment, logs = self.sample_segment(rng)
        hp = self.hparams
        plan = plan_steps(
            self.synthetic.num_images, hp.batch_syn or self.synthetic.num_images, hp.syn_steps, rng
        )
        learned = self.synthetic.learned()
        leaves = [learned[name] for name in ("images", "labels") if name in learned]
        engine = StudentUnroll(self.student, self.student_batch, hp.backward, self.loss_scale())
        result = engine.run(segment, plan, self.synthetic.lr, leaves, mask=self.mask)
        for leaf, grad in zip(leaves, result.grads, strict=True):
            leaf.grad = grad
        self.synthetic.lr.grad = result.grad_lr.reshape(self.synthetic.lr.shape)
        logs.update(self.result_logs(result))
        return StepOutcome(result.loss, contribute=self.accept(result.loss), logs=logs)

    def student_batch(self, step: StudentStep) -> tuple[Tensor, Tensor]:
        """Network inputs and targets of one student step (rebuilt identically on replay)."""
        images, targets = self.synthetic.decoded()
        rows = step.indices.to(images.device)
        stream = torch.Generator().manual_seed(step.seed)
        (inputs,) = network_inputs(
            [(images[rows], self.synthetic.space)],
            self.preprocess,
            augment=lambda x: self.augment(x, generator=stream),
            augment_space=self.hparams.augment_space,
        )
        targets = targets[rows]
        return inputs, targets.softmax(dim=1) if targets.dim() == 2 else targets

    def mask(self, final: Tensor, segment: Segment) -> Tensor | None:
        """The parameters the loss is computed on: all, or those DPD's pruning keeps."""
        hp = self.hparams
        rng = None
        if hp.pruning_metric == "random":  # the control draws from the iteration's own stream
            rng = generator(hp.seed, PRUNE_STREAM, self.global_rank, int(self.iteration))
        return difference_mask(final, segment.target, hp.pruning_rate, hp.pruning_metric, rng)

    def accept(self, loss: Tensor) -> bool:
        """Whether this iteration's gradients take part in the update (always: MTT)."""
        return True

    def result_logs(self, result: MatchResult) -> dict[str, float | Tensor]:
        logs = {"train/syn_lr": self.synthetic.lr.detach(), "train/match_loss": result.loss}
        if self.hparams.pruning_rate > 0:
            logs["train/kept_params"] = float(result.kept)
        return logs
