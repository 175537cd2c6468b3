"""Expert-training recipes of the reference methods, as named presets.

Each value cites its source (docs/methods.md, "Experts"). A config picks a recipe by
name (``--model.recipe tgdd``) and may override any field (``--model.epochs 10``); the resolved
recipe is logged as hyper-parameters and stored in every trajectory file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from lit_distill.presets import override, pick
from lit_distill.space import ImageSpace

RecipeName = Literal["mtt", "ftd", "datm", "tgdd"]
OptimizerName = Literal["sgd", "gsam"]


@dataclass(frozen=True)
class ExpertRecipe:
    """How an expert network is trained on the real data.

    Attributes:
        epochs: training epochs (the trajectory has ``epochs + 1`` snapshots).
        batch_size: real images per step.
        lr, momentum, weight_decay: SGD settings.
        milestones: fractions of ``epochs`` at which the lr is multiplied by ``gamma``.
        gamma: lr decay factor at each milestone.
        augment: DSA strategy applied to every batch ("" for none).
        augment_mode: DSA flavour: "single" (one op per batch, MTT) or "all" (every op).
        augment_space: where DSA and CutMix run: "input" (after normalisation/ZCA, as the
            MTT and TGDD code do) or "pixel".
        cutmix_prob: probability of CutMix per batch (0 disables it).
        optimizer: ``sgd``, or ``gsam`` (two gradients per step, around the same SGD; FTD).
        rho: GSAM's perturbation radius ρ.
        gsam_alpha: GSAM's weight α of the removed orthogonal component.
        gsam_adaptive: GSAM's perturbation scaled by the weights' magnitude (ASAM's ``|w|``).
    """

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    milestones: tuple[float, ...] = ()
    gamma: float = 1.0
    augment: str = ""
    augment_mode: Literal["single", "all", "idc"] = "single"
    augment_space: ImageSpace = "input"
    cutmix_prob: float = 0.0
    optimizer: OptimizerName = "sgd"
    rho: float = 0.0
    gsam_alpha: float = 0.0
    gsam_adaptive: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "gsam"):
            raise ValueError(f"optimizer={self.optimizer!r}: use 'sgd' or 'gsam'")
        if self.optimizer == "gsam" and not self.rho > 0:
            raise ValueError(f"optimizer gsam needs rho > 0 (FTD: 0.01), got rho={self.rho}")
        if not 0 <= self.gsam_alpha <= 1:
            raise ValueError(f"gsam_alpha must lie in [0, 1] (FTD: 0.3), got {self.gsam_alpha}")

    def milestone_epochs(self) -> list[int]:
        return [int(f * self.epochs) for f in self.milestones]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


RECIPES: dict[str, ExpertRecipe] = {
    # MTT (Cazenavette et al. 2022, buffer.py): SGD lr 0.01, no momentum, no weight decay,
    # batch 256, 50 epochs at a constant lr, one DSA op per batch drawn per sample.
    "mtt": ExpertRecipe(
        epochs=50,
        batch_size=256,
        lr=0.01,
        momentum=0.0,
        weight_decay=0.0,
        augment="color_crop_cutout_flip_scale_rotate",
        augment_mode="single",
    ),
    # TGDD (pretrain.py of the TGDD code): SGD lr 0.01, momentum 0.9, wd 5e-4, 60 epochs with
    # lr x0.2 at 2/3 and 5/6 of training (epochs 40 and 50), batch 64, DSA color+crop on every
    # sample, CutMix with p=0.5.
    "tgdd": ExpertRecipe(
        epochs=60,
        batch_size=64,
        lr=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        milestones=(2 / 3, 5 / 6),
        gamma=0.2,
        augment="color_crop",
        augment_mode="all",
        cutmix_prob=0.5,
    ),
}
# FTD (Du et al., CVPR 2023; buffer_FTD.py, run as in the FTD and DATM READMEs): the MTT
# recipe for 100 epochs, each step by GSAM around the same SGD (lr 0.01, no momentum or weight
# decay) with rho 0.01 (constant) and alpha 0.3, in its adaptive form (the code's default).
# DATM and DPD distil from these experts.
RECIPES["ftd"] = replace(
    RECIPES["mtt"], epochs=100, optimizer="gsam", rho=0.01, gsam_alpha=0.3, gsam_adaptive=True
)
# The plain MTT recipe for 100 epochs (DATM's epochs without FTD's GSAM): an ablation.
RECIPES["datm"] = replace(RECIPES["mtt"], epochs=100)


def resolve_recipe(name: str, **overrides: Any) -> ExpertRecipe:
    """The named recipe with every non-``None`` override applied."""
    return override(pick(RECIPES, name, "expert recipe"), "recipe", **overrides)
