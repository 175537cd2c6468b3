"""DATM: difficulty-aligned trajectory matching (Guo et al., ICLR 2024), on MTT.

What DATM adds to MTT, each checked against the public DATM code (``distill/DATM.py``):

* initialisation from real images that an expert classifies correctly (``init: correct``);
* learnable soft labels, initialised with the experts' logits on the initial images, averaged
  over the experts that classify each image correctly, trained by their own SGD (``lr_labels``,
  momentum 0.9), used through a soft cross-entropy in the student's steps and in evaluation;
* sequential generation: the upper bound of the start epoch grows from
  ``current_max_start_epoch`` to ``max_start_epoch`` over the first ``expansion_end``
  iterations, ``current + int((max − current) · it / expansion_end)``;
* the update is skipped when the matching loss exceeds ``threshold``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from lit_distill.distill.base import _check_rate
from lit_distill.distill.mtt import MTTModule
from lit_distill.space import network_inputs

log = logging.getLogger(__name__)

#: Images classified per forward when computing the initial soft labels (bounded memory).
LABEL_CHUNK = 256


class DATMModule(MTTModule):
    """DATM: MTT with soft labels, difficulty-aligned start epochs and a loss threshold.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        lr_labels: SGD learning rate of the label logits (DATM's ``lr_y``).
        momentum_labels: their momentum (DATM's ``Momentum_y``: 0.9).
        threshold: skip the update when the matching loss is above this (DATM: 1.1 for
            CIFAR-10 IPC 1, 1.0 otherwise).
        current_max_start_epoch: initial upper bound of the start epoch (sequential
            generation); ``None`` draws from the whole window from the start.
        expansion_end: iterations over which the upper bound grows to ``max_start_epoch``.
        label_experts: how many experts' final snapshots label the initial images (``None``:
            all ``num_experts``).
        init: DATM initialises from correctly classified real images.
        **kwargs: the :class:`MTTModule` and :class:`DistillationModule` arguments.
    """

    method = "datm"

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        dataset: str,
        lr_labels: float = 2.0,
        momentum_labels: float = 0.9,
        threshold: float = 1.0,
        current_max_start_epoch: int | None = None,
        expansion_end: int | None = None,
        label_experts: int | None = None,
        init: Literal["real", "correct", "noise"] = "correct",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, image_shape, mean, std, dataset, init=init, **kwargs)
        _check_rate("lr_labels", lr_labels)
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        hp = self.hparams
        if current_max_start_epoch is not None:
            if not hp.min_start_epoch < current_max_start_epoch <= hp.max_start_epoch:
                raise ValueError(
                    f"current_max_start_epoch must lie in (min_start_epoch, max_start_epoch] = "
                    f"({hp.min_start_epoch}, {hp.max_start_epoch}], got {current_max_start_epoch}"
                )
            if expansion_end is None or expansion_end < 1:
                raise ValueError(
                    "sequential generation (current_max_start_epoch) needs expansion_end >= 1, "
                    f"the iterations over which the upper bound grows; got {expansion_end}"
                )
        if label_experts is not None and not 1 <= label_experts <= hp.num_experts:
            raise ValueError(f"label_experts must lie in [1, num_experts], got {label_experts}")

    @property
    def soft_labels(self) -> bool:
        return True

    def param_groups(self) -> list[dict[str, Any]]:
        hp = self.hparams
        labels = {"params": [self.synthetic.label_logits], "name": "labels",
                  "lr": hp.lr_labels, "momentum": hp.momentum_labels}  # fmt: skip
        return [*super().param_groups(), labels]

    # ------------------------------------------------------------------ initialisation
    def initialize_synthetic(self) -> None:
        super().initialize_synthetic()
        logits, fallback = self.expert_logits()
        self.synthetic.initialize_soft_labels(logits)
        if fallback:
            log.warning(
                "%d of %d initial images are classified correctly by none of the labelling "
                "experts: their soft labels average all experts' logits",
                fallback,
                logits.shape[0],
            )

    @torch.no_grad()
    def expert_logits(self) -> tuple[Tensor, int]:
        """Per stored image, the mean logits of the experts (final snapshots) that classify it
        correctly; where none does, the mean over all of them. Also returns how many images
        took that fallback (never a division by zero)."""
        count = self.hparams.label_experts or self.bank.num_trajectories
        device = self.setup_device()
        net = self.build_network().to(device).eval()
        (inputs,) = network_inputs([(self.synthetic.images, self.synthetic.space)], self.preprocess)
        inputs, labels = inputs.to(device), self.synthetic.labels.to(device)
        total = torch.zeros(inputs.shape[0], self.num_classes, device=device)
        correct_total = torch.zeros_like(total)
        hits = torch.zeros(inputs.shape[0], device=device)
        for expert in range(count):
            self.bank.load_into(net, expert, self.bank.num_snapshots - 1)
            logits = torch.cat([net(chunk) for chunk in inputs.split(LABEL_CHUNK)]).float()
            right = (logits.argmax(dim=1) == labels).float()
            total += logits
            correct_total += logits * right[:, None]
            hits += right
        fallback = hits == 0
        mean = correct_total / hits.clamp(min=1)[:, None]
        mean[fallback] = total[fallback] / count
        return mean.to(self.synthetic.images.device), int(fallback.sum())

    # ------------------------------------------------------------------ the window and skip
    def start_window(self) -> tuple[int, int]:
        hp = self.hparams
        if hp.current_max_start_epoch is None:
            return hp.min_start_epoch, hp.max_start_epoch
        grown = hp.current_max_start_epoch + int(
            (hp.max_start_epoch - hp.current_max_start_epoch)
            * int(self.iteration)
            / hp.expansion_end
        )
        return hp.min_start_epoch, min(grown, hp.max_start_epoch)

    def accept(self, loss: Tensor) -> bool:
        return bool(loss <= self.hparams.threshold)

    def result_logs(self, result) -> dict[str, float | Tensor]:
        logs = super().result_logs(result)
        logs["train/upper_start_epoch"] = float(self.start_window()[1])
        return logs
