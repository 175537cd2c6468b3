"""Distillation methods: TGDD and its DM baseline (trajectory matching comes next)."""

from lit_distill.distill.base import DistillationModule
from lit_distill.distill.dm import DMModule
from lit_distill.distill.tgdd import TGDDModule

__all__ = ["DMModule", "DistillationModule", "TGDDModule"]
