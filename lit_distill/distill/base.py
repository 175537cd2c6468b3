"""What every distillation method shares: the synthetic set, its optimiser, the iteration loop,
TensorBoard images and export."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from lit_distill.data import LabeledImages
from lit_distill.export import SyntheticData, image_grid, save_synthetic
from lit_distill.seeding import generator
from lit_distill.synthetic import SyntheticSet
from lit_distill.task import DataTask

log = logging.getLogger(__name__)

# Keys of the per-purpose random streams (the iteration number is the next key).
INIT_STREAM = 1
STEP_STREAM = 2


class DistillationModule(DataTask):
    """Base of the distillation methods: owns the :class:`SyntheticSet` and the outer loop.

    One training step is one distillation iteration; the run ends after ``iterations``. All
    randomness of iteration ``i`` on rank ``r`` comes from a generator derived from
    ``(seed, r, i)`` and the iteration counter is a buffer, so a run resumed from ``last.ckpt``
    replays exactly the draws of an uninterrupted one.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        ipc: stored synthetic images per class.
        factor: multi-formation factor (each stored image decodes into ``factor**2``).
        init: initialisation of the images: random real images, correctly classified real
            images, or noise.
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
        if iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations}")
        self.synthetic = SyntheticSet(num_classes, ipc, image_shape, factor=factor)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.real: LabeledImages | None = None

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.datamodule.train_set.check_ipc(self.hparams.ipc * self.hparams.factor**2)
        self.prepare(stage)
        if stage == "fit" and not bool(self.initialized):
            # A resumed run overwrites this with the checkpoint's set right after setup().
            self.synthetic.initialize(
                self.hparams.init,
                real=self.datamodule.train_set,
                generator=generator(self.hparams.seed, INIT_STREAM),
                classifier=self.init_classifier(),
            )
            self.initialized.fill_(True)

    def prepare(self, stage: str) -> None:
        """Load what the method needs besides the data (e.g. expert trajectories)."""

    def init_classifier(self):
        """A network for ``init="correct"`` (methods with experts override this)."""
        if self.hparams.init == "correct":
            raise ValueError(f"init='correct' needs expert networks, which {self.method} has none")
        return None

    def on_fit_start(self) -> None:
        train = self.datamodule.train_set
        self.real = train.to(self.device) if self.hparams.real_on_device else train

    def train_dataloader(self) -> range:
        # The real data is sampled class by class inside the step: the loop only needs one
        # tick per iteration. The counter (a buffer) says where a resumed run is.
        return range(self.hparams.iterations)

    def step_generator(self) -> torch.Generator:
        """The random stream of this iteration on this rank."""
        return generator(self.hparams.seed, STEP_STREAM, self.global_rank, int(self.iteration))

    # ------------------------------------------------------------------ the loop
    def configure_optimizers(self):
        # Named groups: their learning rates are logged as train/lr_<name>.
        images = {"params": [self.synthetic.images], "name": "images"}
        return torch.optim.SGD(
            [images], lr=self.hparams.lr_images, momentum=self.hparams.momentum_images
        )

    def training_step(self, batch: int, batch_idx: int) -> Tensor | None:
        loss = self.distill_step(self.step_generator())
        # Advanced here, not in on_train_batch_end: checkpoint callbacks save before that hook.
        self.iteration += 1
        return loss

    def distill_step(self, rng: torch.Generator) -> Tensor | None:
        """One iteration of the method: the loss to minimise (``None`` skips the update)."""
        raise NotImplementedError

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.synthetic.clamp_()  # pixels stay in [0, 1] (before any checkpoint is written)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        for group in self.optimizers().optimizer.param_groups:
            self.log(f"train/lr_{group.get('name', 'group')}", group["lr"])
        step = int(self.iteration)
        every = self.hparams.image_every
        if every and (step % every == 0 or step == 1):
            self.log_images(step)
        if step >= self.hparams.iterations:
            self.trainer.should_stop = True

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        # A resumed run restarts the tick range; stop once the counter says we are done.
        return -1 if int(self.iteration) >= self.hparams.iterations else None

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero and not self.trainer.fast_dev_run:
            path = self.export("final")
            log.info("synthetic set written to %s", path)

    # ------------------------------------------------------------------ outputs
    def synthetic_data(self) -> SyntheticData:
        """The current synthetic set as a detached CPU export object."""
        dm = self.datamodule
        return SyntheticData.from_synthetic_set(
            self.synthetic,
            class_names=dm.class_names,
            dataset=self.dataset_name,
            zca=self.zca,
            method=self.method,
            iteration=int(self.iteration),
            config=_plain(dict(self.hparams)),
            with_lr=False,
        )

    def export(self, tag: str) -> Path:
        """Write ``synthetic_<tag>.pt`` (and its PNG grid) to the export folder."""
        folder = Path(self.hparams.export_dir or self.trainer.default_root_dir)
        return save_synthetic(folder / f"synthetic_{tag}.pt", self.synthetic_data())

    @torch.no_grad()
    def log_images(self, step: int) -> None:
        """A grid of the stored images, one row per class (TensorBoard)."""
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        images = self.synthetic.images.detach().clamp(0, 1).cpu()
        experiment.add_image("synthetic/images", image_grid(images, self.hparams.ipc), step)


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
