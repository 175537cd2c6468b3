"""Distillation methods: distribution matching (DM, TGDD) and trajectory matching (MTT, DATM)."""

from lit_distill.distill.base import DistillationModule
from lit_distill.distill.datm import DATMModule
from lit_distill.distill.dm import DMModule
from lit_distill.distill.mtt import MTTModule
from lit_distill.distill.tgdd import TGDDModule

__all__ = ["DATMModule", "DMModule", "DistillationModule", "MTTModule", "TGDDModule"]
