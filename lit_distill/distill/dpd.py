"""DPD: difference-driven pruning distillation (Cao et al., ACML 2025) = DATM + pruning.

After the student's inner loop, the ``⌊a · pruning_rate⌋`` parameters with the largest
difference between the expert's target and the student are dropped from the matching loss
(numerator and denominator; see :mod:`lit_distill.distill.pruning`). Everything else is DATM's.
The same pruning is available to MTT and MCT (``pruning_rate`` on those modules), as the paper's
Table 4 adds it to other methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lit_distill.distill.datm import DATMModule
from lit_distill.distill.pruning import PruningMetric


class DPDModule(DATMModule):
    """DPD: DATM whose matching loss skips the hardest-to-align parameters.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        pruning_rate: share of the parameters dropped (DPD: 0.1, 0.125 for CIFAR-10 IPC 10 and
            Tiny ImageNet IPC 1).
        pruning_metric: ``abs`` (|t − s|, the paper's best), ``relative`` or ``random``.
        **kwargs: the :class:`DATMModule`, :class:`MTTModule`, trajectory-matching and
            :class:`DistillationModule` arguments.
    """

    method = "dpd"

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        dataset: str,
        pruning_rate: float = 0.1,
        pruning_metric: PruningMetric = "abs",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_classes, image_shape, mean, std, dataset, pruning_rate=pruning_rate,
            pruning_metric=pruning_metric, **kwargs,
        )  # fmt: skip
