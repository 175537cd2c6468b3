"""What every distillation method shares: the synthetic set and what it learns, the guarded update
loop, the experts, TensorBoard images and export."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lit_distill.console import REPORT
from lit_distill.data import LabeledImages
from lit_distill.distill.update import (
    DynamicLossScale,
    StepOutcome,
    combine_gradients,
    invalid_update,
)
from lit_distill.errors import DivergenceError
from lit_distill.experts.pool import ExpertPool
from lit_distill.export import SyntheticData, image_grid, save_synthetic
from lit_distill.models import build_model
from lit_distill.runs import LOGGER_VERSION
from lit_distill.seeding import generator
from lit_distill.space import ImageSpace, check_space
from lit_distill.synthetic import SyntheticSet
from lit_distill.task import DataTask
from lit_distill.trajectory import SnapshotBank

log = logging.getLogger(__name__)


# Keys of the per-purpose random streams (the iteration number is the next key).
INIT_STREAM = 1
STEP_STREAM = 2


class DistillationModule(DataTask):
    """Base of the distillation methods: owns the :class:`SyntheticSet` and the outer loop.

    One training step is one distillation iteration; the run ends after ``iterations``. A
    method's :meth:`distill_step` writes the gradients of the synthetic set (by any backward it
    likes) and returns a :class:`StepOutcome`; this class combines them over DDP ranks
    (:func:`combine_gradients`), takes one optimiser step and guards it: a non-finite loss,
    gradient, or an update that would make a parameter non-finite or the learned lr not
    positive (checked before it is applied), stops the run with a :class:`DivergenceError`
    naming the iteration, after writing the last good set as ``synthetic_last_good.pt`` (the
    last checkpoint is untouched).

    What is learned is declared, not implied: :meth:`build_synthetic_set` says whether the set
    has soft labels and a learnable lr, and :meth:`param_groups` puts every parameter the set has
    in an optimiser group with its own lr and momentum.

    All randomness of iteration ``i`` on rank ``r`` comes from a generator derived from
    ``(seed, r, i)`` and the iteration counter is a buffer, so a run resumed from ``last.ckpt``
    replays exactly the draws of an uninterrupted one.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        ipc: stored synthetic images per class.
        factor: multi-formation factor (each stored image decodes into ``factor**2``).
        init: initialisation of the images: random real images, correctly classified real
            images (needs experts), or noise.
        init_pick: with ``init: real``, random images of each class, or its first ones in
            dataset order (the IDC/TGDD code).
        init_downsample: with ``factor > 1``, how real images shrink into tiles: ``area``
            averaging, or ``nearest`` (the IDC/TGDD code).
        image_space: where the images live and are optimised: ``pixel`` ([0, 1], clamped after
            every update, TGDD) or ``input`` (the network's normalised or ZCA-whitened input,
            never clamped: DM and trajectory matching, whose image lrs are tuned there).
            Exports are always pixels.
        lr_images: SGD learning rate of the images.
        momentum_images: SGD momentum of the images.
        iterations: distillation iterations.
        image_every: log a grid of the synthetic images every this many iterations (0: never).
        export_dir: where ``synthetic_final.pt`` / ``synthetic_best.pt`` go (default: the
            trainer's ``default_root_dir``).
        real_on_device: keep the real training images on the accelerator (fast sampling).
        seed: seed of every random stream of the method.
    """

    method = "distillation"

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        dataset: str,
        ipc: int = 10,
        factor: int = 1,
        init: Literal["real", "correct", "noise"] = "real",
        init_pick: Literal["random", "first"] = "random",
        init_downsample: Literal["area", "nearest"] = "area",
        image_space: ImageSpace = "pixel",
        lr_images: float = 0.1,
        momentum_images: float = 0.5,
        iterations: int = 1000,
        image_every: int = 500,
        export_dir: str | None = None,
        real_on_device: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(num_classes, image_shape, mean, std, dataset)
        # Collects the arguments of subclasses' __init__ too (Lightning walks the init frames).
        self.save_hyperparameters()
        # The update is written by hand: methods produce gradients in their own ways, and
        # under DDP they are averaged explicitly (see lit_distill.distill.update).
        self.automatic_optimization = False
        if iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations}")
        check_space("image_space", image_space)
        _check_rate("lr_images", lr_images)
        self.synthetic = self.build_synthetic_set()
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        # fp16 loss scaling (used only under 16-mixed), in the checkpoint for an exact resume.
        self.loss_scaler = DynamicLossScale()
        self.register_buffer("loss_scale_state", self.loss_scaler.state)
        self.fp16 = False
        self.real: LabeledImages | None = None
        self.experts: ExpertPool | None = None  # methods guided by experts set this
        self.bank: SnapshotBank | None = None

    def build_synthetic_set(self) -> SyntheticSet:
        """The set this method learns: images only (methods add soft labels or an lr)."""
        hp = self.hparams
        return SyntheticSet(
            self.num_classes, hp.ipc, self.image_shape, factor=hp.factor, space=hp.image_space
        )

    def param_groups(self) -> list[dict[str, Any]]:
        """One SGD group per thing the synthetic set learns, named for logging."""
        hp = self.hparams
        images = self.synthetic.images
        return [{"params": [images], "name": "images", "lr": hp.lr_images,
                 "momentum": hp.momentum_images}]  # fmt: skip

    def build_network(self) -> nn.Module:
        """A network of the method's architecture (``arch``/``arch_kwargs`` hyper-parameters)."""
        hp = self.hparams
        net = build_model(hp.arch, self.num_classes, self.image_shape, **(hp.arch_kwargs or {}))
        return net.requires_grad_(False)

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.datamodule.train_set.check_ipc(self.hparams.ipc * self.hparams.factor**2)
        self.prepare(stage)
        if stage == "fit" and not bool(self.initialized):
            # A resumed run overwrites this with the checkpoint's set right after setup().
            self.initialize_synthetic()
            self.initialized.fill_(True)

    def initialize_synthetic(self) -> None:
        """Set the initial images (methods with soft labels also set the labels)."""
        self.synthetic.initialize(
            self.hparams.init,
            real=self.datamodule.train_set,
            generator=generator(self.hparams.seed, INIT_STREAM),
            classifier=self.init_classifier(),
            preprocess=self.preprocess,
            pick=self.hparams.init_pick,
            downsample=self.hparams.init_downsample,
        )

    def prepare(self, stage: str) -> None:
        """Open the experts, once, when the method has some (lazily: see SnapshotBank)."""
        if self.experts is not None and self.bank is None:
            self.bank = self.experts.load(
                self.build_network(),
                dataset=self.dataset_name,
                num_classes=self.num_classes,
                image_shape=self.image_shape,
                zca=self.zca,
                **self.expert_needs(),
            )

    def expert_needs(self) -> dict[str, Any]:
        """What the method needs of its experts (see :meth:`ExpertPool.load`)."""
        return {}

    def init_classifier(self):
        """For ``init="correct"``: the first expert's final snapshot, on pixels (DATM uses the
        final snapshot, ``Label_Model_Timestamp = -1``)."""
        if self.hparams.init != "correct":
            return None
        if self.bank is None:
            raise ValueError(f"init='correct' needs expert networks, which {self.method} has none")
        device = self.setup_device()
        net = self.build_network().to(device).eval()
        self.bank.load_into(net, 0, self.bank.num_snapshots - 1)
        preprocess = copy.deepcopy(self.preprocess).to(device)
        return lambda pixels: net(preprocess(pixels.to(device)))

    def setup_device(self) -> torch.device:
        """The device the run will use (set-up work runs there before the module moves)."""
        trainer = self._trainer
        return trainer.strategy.root_device if trainer is not None else self.device

    def on_fit_start(self) -> None:
        # 16-mixed autocasts to fp16 and comes with a gradient scaler: scale the losses here.
        self.fp16 = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        self.loss_scaler.state = self.loss_scale_state  # the (restored) buffer, on its device
        train = self.datamodule.train_set
        self.real = train.to(self.device) if self.hparams.real_on_device else train
        if self.bank is not None:
            self.bank.to(self.device)

    def train_dataloader(self) -> range:
        # The real data is sampled class by class inside the step: the loop only needs one
        # tick per iteration. The counter (a buffer) says where a resumed run is.
        return range(self.hparams.iterations)

    def step_generator(self) -> torch.Generator:
        """The random stream of this iteration on this rank."""
        return generator(self.hparams.seed, STEP_STREAM, self.global_rank, int(self.iteration))

    # ------------------------------------------------------------------ the loop
    def configure_optimizers(self):
        groups = self.param_groups()
        _check_groups(self, groups)
        return torch.optim.SGD(groups, lr=groups[0]["lr"])

    def loss_scale(self) -> float:
        """What methods multiply their losses by before a backward (1 except under 16-mixed)."""
        return self.loss_scaler.scale if self.fp16 else 1.0

    def training_step(self, batch: int, batch_idx: int) -> Tensor:
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        scale = self.loss_scale()
        outcome = self.distill_step(self.step_generator())
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if scale != 1.0:
            for p in params:
                if p.grad is not None:
                    p.grad.div_(scale)
        agreed = combine_gradients(params, outcome, self.trainer.world_size)
        # 16-mixed: an overflow skips the update (smaller scale next); elsewhere it stops.
        apply = agreed.contributors > 0 and (not self.fp16 or self._fp16_update(agreed.finite))
        if not agreed.finite and not self.fp16:
            self._diverged(f"the loss or a gradient is not finite ({float(outcome.loss)})")
        if apply:
            bad = invalid_update(optimizer.optimizer)
            if bad:  # checked before stepping: nothing has changed yet
                self._diverged(
                    f"the update would make {', '.join(bad)} invalid (not finite, or lr <= 0)"
                )
            self._step(optimizer)
            self.synthetic.clamp_()  # pixel space only (before any checkpoint is written)
        else:
            _skip(optimizer)
        self.log_dict({**outcome.logs, "train/loss": agreed.loss}, prog_bar=True)
        self.log("train/updated", float(apply))
        # Advanced here, not in on_train_batch_end: checkpoint callbacks save before that hook.
        self.iteration += 1
        return outcome.loss

    def distill_step(self, rng: torch.Generator) -> StepOutcome:
        """One iteration of the method: write the synthetic set's gradients (of its losses times
        :meth:`loss_scale`), return the loss."""
        raise NotImplementedError

    def _fp16_update(self, finite: bool) -> bool:
        """Whether this 16-mixed update may be applied (overflows skip it, repeated ones stop)."""
        try:
            applied = self.loss_scaler.update(finite)
        except FloatingPointError as err:
            self._diverged(str(err))
        self.log_dict(
            {"train/loss_scale": self.loss_scaler.scale, "train/overflow": float(not applied)}
        )
        return applied

    def _step(self, optimizer) -> None:
        """The optimiser step, through Lightning (step counting, precision plugin).

        The gradients were not produced by ``manual_backward``: with a gradient scaler
        (``16-mixed``) they are put at the scaler's scale first, so that its unscaling gives
        them back unchanged.
        """
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            scaler.scale(torch.ones((), device=self.device))  # creates its scale on first use
            scale = scaler.get_scale()
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.mul_(scale)
        optimizer.step()

    def _diverged(self, what: str) -> None:
        step = int(self.iteration)
        path = self.export("last_good") if self.trainer.is_global_zero else None
        rates = ", ".join(f"{g['name']} lr {g['lr']:g}" for g in self.optimizers().param_groups)
        raise DivergenceError(
            f"iteration {step}: {what}. The set before this iteration is in {path}; the last "
            f"checkpoint is unchanged. Lower the learning rates ({rates}: "
            "--model.init_args.lr_images ...) or check the data and experts, then resume "
            "from the last checkpoint."
        )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        for group in self.optimizers().param_groups:
            self.log(f"train/lr_{group.get('name', 'group')}", group["lr"])
        step = int(self.iteration)
        every = self.hparams.image_every
        if every and (step % every == 0 or step == 1):
            self.log_images(step)
        if self.finished:
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A resumed run continues in its own TensorBoard run (lit_distill.cli), not a new one.
        if self.logger is not None and self.logger.version is not None:
            checkpoint[LOGGER_VERSION] = self.logger.version

    @property
    def finished(self) -> bool:
        """Whether every iteration has run (the end-of-fit evaluation comes next)."""
        return int(self.iteration) >= self.hparams.iterations

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        # A resumed run restarts the tick range; stop once the counter says we are done.
        return -1 if self.finished else None

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero and not self.trainer.fast_dev_run:
            path = self.export("final")
            log.info("synthetic set written to %s", path)

    # ------------------------------------------------------------------ outputs
    def synthetic_data(self) -> SyntheticData:
        """The current synthetic set as a detached CPU export object (images as pixels)."""
        dm = self.datamodule
        return SyntheticData.from_synthetic_set(
            self.synthetic,
            class_names=dm.class_names,
            dataset=self.dataset_name,
            zca=self.zca,
            method=self.method,
            iteration=int(self.iteration),
            config=_plain(dict(self.hparams)),
            preprocess=self.preprocess,
        )

    def export(self, tag: str) -> Path:
        """Write ``synthetic_<tag>.pt`` (and its PNG grid) to the export folder."""
        folder = Path(self.hparams.export_dir or self.trainer.default_root_dir)
        path = save_synthetic(folder / f"synthetic_{tag}.pt", self.synthetic_data())
        REPORT.file("synthetic sets", path)
        return path

    @torch.no_grad()
    def log_images(self, step: int) -> None:
        """A grid of the stored images as pixels, one row per class (TensorBoard)."""
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        images = self.synthetic.pixels(self.preprocess).clamp(0, 1).cpu()
        experiment.add_image("synthetic/images", image_grid(images, self.hparams.ipc), step)


def _skip(optimizer) -> None:
    """Count an iteration without an update as an optimiser step (Lightning's step counter,
    hence checkpoints and callbacks, follow the iterations) without touching the parameters,
    their momentum or a gradient scaler."""
    before, after = (getattr(optimizer, n, None) for n in ("_on_before_step", "_on_after_step"))
    if before is None or after is None:  # not a Lightning optimizer: nothing counts steps
        return
    before()
    after()


def _check_rate(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and value == value and 0 < value < float("inf")):
        raise ValueError(f"{name} must be a positive, finite learning rate, got {value}")


def _check_groups(module: nn.Module, groups: list[dict[str, Any]]) -> None:
    """Every trainable parameter of ``module`` is in exactly one group (no silent freeze, and
    nothing DDP would find unused)."""
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p): n for n, p in module.named_parameters() if p.requires_grad}
    left_out = sorted(n for i, n in trainable.items() if i not in grouped)
    if left_out or len(grouped) != len(set(grouped)):
        raise RuntimeError(f"parameters outside the optimiser groups or in two: {left_out}")
    for group in groups:
        _check_rate(f"the learning rate of {group.get('name', 'a group')}", group["lr"])


def _plain(value: Any) -> Any:
    """Hyper-parameters as plain Python types (what a weights-only file may hold)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Tensor):
        return value.tolist()
    return str(value)
