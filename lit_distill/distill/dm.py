"""DM: distribution matching with freshly initialised feature extractors (the TGDD baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lit_distill.augment import DSA
from lit_distill.distill.base import DistillationModule
from lit_distill.distill.matching import matching_losses
from lit_distill.models import build_model


class DMModule(DistillationModule):
    """Distribution matching (Zhao & Bilen, 2023): match per-class mean features of real and
    synthetic images under a randomly initialised network, a new one every iteration.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        arch: feature-extractor architecture (``lit_distill.models``).
        arch_kwargs: its options.
        augment: DSA strategy applied siamese-wise to each class's real and synthetic batch.
        augment_mode: DSA flavour (``idc``: flip/color/cutout always plus one geometric op).
        real_batch: real images per class and iteration.
        syn_batch: at most this many decoded synthetic images per class and iteration
            (``None``: all of them).
        **kwargs: the :class:`DistillationModule` arguments (ipc, factor, init, lr_images,
            momentum_images, iterations, image_every, export_dir, real_on_device, seed).
    """

    method = "dm"

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        dataset: str,
        arch: str = "convnet3",
        arch_kwargs: dict[str, Any] | None = None,
        augment: str = "color_crop_cutout",
        augment_mode: Literal["single", "all", "idc"] = "idc",
        real_batch: int = 128,
        syn_batch: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, image_shape, mean, std, dataset, **kwargs)
        self.augment = DSA(augment, mode=augment_mode)
        # Working networks: snapshots or fresh weights are copied into them each iteration.
        # Kept out of the module's children so they are neither checkpointed nor DDP-wrapped.
        self._nets = {"extractor": self.build_network(), "template": self.build_network()}

    @property
    def alpha(self) -> float:
        """Weight of the distribution constraint (none in DM)."""
        return 0.0

    def build_network(self) -> nn.Module:
        net = build_model(
            self.hparams.arch,
            self.num_classes,
            self.image_shape,
            **(self.hparams.arch_kwargs or {}),
        )
        return net.requires_grad_(False)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        for name in ("extractor", "critic"):
            if name in self._nets:
                self._nets[name].to(self.device)

    def pick_networks(self, rng: torch.Generator) -> tuple[nn.Module, nn.Module | None]:
        """A freshly initialised extractor (seeded from ``rng``) and no critic."""
        # The template stays on the CPU: a seed then gives the same weights on every device,
        # and only the CPU generator is forked; the copy to the extractor is one small transfer.
        template = self._nets["template"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=rng)))
            for module in template.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        extractor = self._nets["extractor"]
        extractor.load_state_dict(template.state_dict())
        return extractor, None

    def class_batches(self, rng: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
        """Real and (decoded) synthetic pixel batches of every class for this iteration."""
        real, synthetic = [], []
        for c in range(self.num_classes):
            real.append(self.real.sample(c, self.hparams.real_batch, rng).to(self.device))
            syn = self.synthetic.class_images(c)
            limit = self.hparams.syn_batch
            if limit is not None and syn.shape[0] > limit:
                syn = syn[torch.randperm(syn.shape[0], generator=rng)[:limit].to(syn.device)]
            synthetic.append(syn)
        return real, synthetic

    def distill_step(self, rng: torch.Generator) -> Tensor:
        extractor, critic = self.pick_networks(rng)
        real, synthetic = self.class_batches(rng)
        mmd, ce = matching_losses(
            extractor,
            critic if self.alpha > 0 else None,
            real,
            synthetic,
            range(self.num_classes),
            augment=lambda r, s: self.augment(r, s, generator=rng),
            preprocess=self.preprocess,
        )
        loss = mmd + self.alpha * ce
        self.log_dict({"train/mmd": mmd, "train/loss": loss}, prog_bar=True)
        if self.alpha > 0:
            self.log("train/constraint", ce)
        return loss
