"""Differentiable siamese augmentation (DSA) and CutMix, in pixel space [0, 1]."""

from lit_distill.augment.cutmix import cutmix
from lit_distill.augment.dsa import DSA, GEOMETRIC_OPS, OPS, DSAMode, parse_strategy

__all__ = ["DSA", "DSAMode", "GEOMETRIC_OPS", "OPS", "cutmix", "parse_strategy"]
