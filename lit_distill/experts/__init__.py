"""Expert networks trained on real data, whose trajectories guide distillation."""

from lit_distill.experts.module import ExpertModule
from lit_distill.experts.recipes import RECIPES, ExpertRecipe, resolve_recipe

__all__ = ["RECIPES", "ExpertModule", "ExpertRecipe", "resolve_recipe"]
