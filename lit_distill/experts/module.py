"""Training expert networks on real data and recording their trajectories."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lit_distill.augment import DSA, cutmix
from lit_distill.experts.gsam import GSAM
from lit_distill.experts.recipes import OptimizerName, RecipeName, resolve_recipe
from lit_distill.models import build_model
from lit_distill.seeding import derive_seed, generator
from lit_distill.space import ImageSpace, convert
from lit_distill.task import DataTask
from lit_distill.trajectory import TrajectoryCallback, expert_path


class ExpertModule(DataTask):
    """Train ``num_experts`` networks on the real training set, one trajectory file each.

    ``lit-distill fit`` trains the experts one after another, each with its own seed, and skips
    those whose trajectory file already exists, so an interrupted run is simply restarted. The
    training recipe is a named preset (``recipe``) whose fields can be overridden one by one.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        arch: registered architecture (see ``lit_distill.models.available_models``).
        arch_kwargs: its options, e.g. ``{"width": 32}``.
        recipe: ``mtt``, ``ftd`` (DATM's and DPD's experts: GSAM), ``datm`` or ``tgdd`` (see
            ``lit_distill.experts.recipes``).
        epochs, batch_size, lr, momentum, weight_decay, milestones, gamma, augment,
            augment_space, cutmix_prob, optimizer, rho, gsam_alpha, gsam_adaptive: overrides of
            the recipe's fields (``None`` keeps the recipe's value).
        num_experts: how many experts (trajectories) to train.
        trajectory_dir: folder of the trajectory files (``expert_000.pt``, ...).
        store: ``full`` keeps every epoch; ``convex`` only the first and last (MCT).
        store_dtype: precision of the stored snapshots.
        seed: base seed; expert ``i`` uses a seed derived from ``(seed, i)``.
    """

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        dataset: str,
        arch: str = "convnet3",
        arch_kwargs: dict[str, Any] | None = None,
        recipe: RecipeName = "mtt",
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        momentum: float | None = None,
        weight_decay: float | None = None,
        milestones: list[float] | None = None,
        gamma: float | None = None,
        augment: str | None = None,
        augment_space: ImageSpace | None = None,
        cutmix_prob: float | None = None,
        optimizer: OptimizerName | None = None,
        rho: float | None = None,
        gsam_alpha: float | None = None,
        gsam_adaptive: bool | None = None,
        num_experts: int = 1,
        trajectory_dir: str = "runs/experts",
        store: Literal["full", "convex"] = "full",
        store_dtype: Literal["float32", "float16", "bfloat16"] = "float32",
        seed: int = 0,
    ) -> None:
        super().__init__(num_classes, image_shape, mean, std, dataset)
        self.save_hyperparameters()
        if num_experts < 1:
            raise ValueError(f"num_experts must be at least 1, got {num_experts}")
        self.recipe = resolve_recipe(
            recipe,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            milestones=milestones,
            gamma=gamma,
            augment=augment,
            augment_space=augment_space,
            cutmix_prob=cutmix_prob,
            optimizer=optimizer,
            rho=rho,
            gsam_alpha=gsam_alpha,
            gsam_adaptive=gsam_adaptive,
        )
        # GSAM takes two gradients of each batch, which the automatic loop cannot do under
        # 16-mixed (its gradient scaler steps without the closure): the step is written here.
        self.automatic_optimization = self.recipe.optimizer == "sgd"
        self.gsam: GSAM | None = None
        self.arch, self.arch_kwargs = arch, dict(arch_kwargs or {})
        self.augment = DSA(self.recipe.augment, mode=self.recipe.augment_mode, per_sample=True)
        # Inputs are the module's own logits and labels: skip torchmetrics' per-update input
        # checks, ~0.5 ms of every training step on a CPU (benchmarks/expert_throughput.py).
        accuracy = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        metrics = MetricCollection({"acc": accuracy})
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.train_loss = MeanMetric()
        self.start_expert(0)

    # ------------------------------------------------------------------ experts
    def start_expert(self, index: int) -> None:
        """Make this module train expert ``index``: fresh network, seeded by ``(seed, index)``."""
        self.expert_index = index
        torch.manual_seed(derive_seed(self.hparams.seed, index))
        self.net = build_model(self.arch, self.num_classes, self.image_shape, **self.arch_kwargs)
        for metric in (self.train_metrics, self.val_metrics, self.train_loss):
            metric.reset()

    def trajectory_path(self, index: int | None = None) -> Path:
        index = self.expert_index if index is None else index
        return expert_path(self.hparams.trajectory_dir, index)

    def trajectory_metadata(self) -> dict[str, Any]:
        """What the trajectory file records besides the snapshots."""
        return {
            "arch": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "num_classes": self.num_classes,
            "image_shape": list(self.image_shape),
            "dataset": self.dataset_name,
            "zca": self.zca,
            "seed": derive_seed(self.hparams.seed, self.expert_index),
            "recipe": self.recipe.as_dict(),
        }

    def configure_callbacks(self) -> list[L.Callback]:
        return [
            TrajectoryCallback(
                self.trajectory_path(),
                self.recipe.epochs,
                mode=self.hparams.store,
                dtype=self.hparams.store_dtype,
            )
        ]

    # ------------------------------------------------------------------ training
    def train_dataloader(self):
        # Under DDP every rank trains the same expert on its share of each batch, so the recipe's
        # batch (the effective one) is split between the ranks.
        world = self.trainer.world_size
        if self.recipe.batch_size % world:
            raise ValueError(
                f"the expert batch size {self.recipe.batch_size} must be divisible by the "
                f"{world} processes: set --model.init_args.batch_size to a multiple of {world}"
            )
        return self.datamodule.loader("train", self.recipe.batch_size // world, shuffle=True)

    def forward(self, pixels: Tensor) -> Tensor:
        return self.net(self.preprocess(pixels))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        # One random stream per (expert, rank, step): resumable and independent across ranks.
        rng = generator(self.hparams.seed, self.expert_index, self.global_rank, self.global_step)
        space = self.recipe.augment_space
        images = convert(images, "pixel", space, self.preprocess)
        images = self.augment(images, generator=rng)
        images, labels_a, labels_b, lam = cutmix(
            images, labels, generator=rng, prob=self.recipe.cutmix_prob
        )
        inputs = convert(images, space, "input", self.preprocess)
        logits, loss = self._loss(inputs, labels_a, labels_b, lam)
        if self.gsam is not None:
            self._gsam_step(loss, lambda: self._loss(inputs, labels_a, labels_b, lam)[1])
        # Metrics accumulate on the device; values are logged only when they are written, so a
        # step costs no host synchronisation and no logging overhead.
        self.train_metrics.update(logits, labels_a)
        self.train_loss.update(loss.detach())
        if self.logs_this_step():
            self.log("train/loss_step", loss)
        return loss

    def _loss(
        self, inputs: Tensor, labels_a: Tensor, labels_b: Tensor, lam: float
    ) -> tuple[Tensor, Tensor]:
        logits = self.net(inputs)
        loss = F.cross_entropy(logits, labels_a)
        if lam < 1:  # CutMix pasted a box: the loss mixes both labels by area
            loss = lam * loss + (1 - lam) * F.cross_entropy(logits, labels_b)
        return logits, loss

    def _gsam_step(self, loss: Tensor, perturbed_loss) -> None:
        """One GSAM step on this batch: gradient at w, at w + e, then the base SGD step."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        self.gsam.perturb()
        optimizer.zero_grad()
        self.manual_backward(perturbed_loss())  # the same augmented inputs, at w + e
        self.gsam.restore()
        optimizer.step()

    def on_train_epoch_end(self) -> None:
        self.log_dict({**self.train_metrics.compute(), "train/loss": self.train_loss.compute()})
        self.train_metrics.reset(), self.train_loss.reset()
        if not self.automatic_optimization:  # the manual loop steps its schedule itself
            self.lr_schedulers().step()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_metrics.update(logits, labels)
        self.log("val/loss", F.cross_entropy(logits, labels), sync_dist=True)
        self.log_dict(self.val_metrics, prog_bar=True)

    def configure_optimizers(self):
        r = self.recipe
        optimizer = torch.optim.SGD(
            self.net.parameters(), lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=r.milestone_epochs(), gamma=r.gamma
        )
        if r.optimizer == "gsam":
            self.gsam = GSAM(self.net.parameters(), r.rho, r.gsam_alpha, r.gsam_adaptive)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
