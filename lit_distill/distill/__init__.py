"""Distillation methods: distribution matching (DM, TGDD) and trajectory matching (MTT, DATM, MCT,
DPD) on one matching engine."""

from lit_distill.distill.base import DistillationModule
from lit_distill.distill.datm import DATMModule
from lit_distill.distill.dm import DMModule
from lit_distill.distill.dpd import DPDModule
from lit_distill.distill.mct import MCTModule
from lit_distill.distill.mtt import MTTModule
from lit_distill.distill.tgdd import TGDDModule
from lit_distill.distill.trajectory_matching import TrajectoryMatchingModule

__all__ = [
    "DATMModule",
    "DMModule",
    "DPDModule",
    "DistillationModule",
    "MCTModule",
    "MTTModule",
    "TGDDModule",
    "TrajectoryMatchingModule",
]
