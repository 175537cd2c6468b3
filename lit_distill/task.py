"""The base of every lit-distill LightningModule."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from torch import nn

from lit_distill.data import ImageDataModule, Normalize


class DataTask(L.LightningModule):
    """A task on one image dataset: the data facts and how pixels become network inputs.

    The first five arguments are *data facts*: the command line links them from the datamodule
    (``--data``), so they are never written in a config. Images are kept in pixel space [0, 1]
    everywhere (real batches, augmentation, synthetic images); ``preprocess`` maps them to the
    network input: per-channel normalisation, or the datamodule's fitted ZCA whitening.

    Args:
        num_classes: number of classes (linked from the datamodule).
        image_shape: ``(channels, height, width)`` (linked).
        mean: per-channel pixel mean, [0, 1] units (linked).
        std: per-channel pixel standard deviation (linked).
        dataset: dataset name, recorded in every artefact for later validation (linked).
    """

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        dataset: str,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.image_shape = tuple(image_shape)
        self.dataset_name = dataset
        self.zca = False
        self.set_preprocess(Normalize(mean, std))

    # The pixel-to-input map follows the module's device like a child, without being one: its
    # buffers (a ZCA fit is 2 x 37.7 MB on CIFAR) come from the datamodule at set-up, so they stay
    # out of checkpoints, and DDP does not broadcast them at every step.
    @property
    def preprocess(self) -> nn.Module:
        """Pixels in [0, 1] -> network input (normalisation or the datamodule's ZCA)."""
        return self.__dict__["_preprocess"][0]

    def set_preprocess(self, module: nn.Module) -> None:
        self.__dict__["_preprocess"] = [module]  # not registered as a child (see above)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.preprocess._apply(fn)
        return self

    @property
    def datamodule(self) -> ImageDataModule:
        """The lit-distill datamodule this task runs on (clear error when there is none)."""
        dm = getattr(self._trainer, "datamodule", None)
        if not isinstance(dm, ImageDataModule):
            raise RuntimeError(
                f"{type(self).__name__} runs on a lit-distill datamodule: pass --data "
                "(for example --data DigitsDataModule) or trainer.fit(model, datamodule=...)"
            )
        return dm

    def logs_this_step(self) -> bool:
        """Whether the trainer writes step logs after this training step.

        Lightning writes step values only every ``log_every_n_steps`` steps, yet ``self.log``
        costs about a millisecond on every call; tasks log step values only when they are kept.
        """
        every = self.trainer.log_every_n_steps
        return every > 0 and (self.global_step + 1) % every == 0

    def setup(self, stage: str) -> None:
        dm = self.datamodule
        if dm.name != self.dataset_name or dm.num_classes != self.num_classes:
            raise ValueError(
                f"this {type(self).__name__} was built for {self.dataset_name} "
                f"({self.num_classes} classes) but the datamodule is {dm.name} "
                f"({dm.num_classes} classes)"
            )
        dm.setup(stage)
        self.zca = dm.zca
        self.set_preprocess(dm.preprocess().to(self.device))
