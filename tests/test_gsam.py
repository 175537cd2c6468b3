"""GSAM (FTD's expert optimiser): one step against hand-computed values, experts trained by it."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lit_distill.data import DigitsDataModule
from lit_distill.experts import ExpertModule, resolve_recipe
from lit_distill.experts.gsam import GSAM
from lit_distill.trajectory import Trajectory


def gsam_step(w0, rho, alpha, adaptive, lr=0.1):
    """One GSAM step on f(w) = ½ wᵀ diag(1, 2) w from ``w0``, through the class."""
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    curvature = torch.tensor([1.0, 2.0], dtype=torch.float64)
    sgd = torch.optim.SGD([w], lr=lr)
    gsam = GSAM([w], rho=rho, alpha=alpha, adaptive=adaptive)

    def backward():
        sgd.zero_grad()
        (0.5 * (curvature * w * w).sum()).backward()

    backward()
    gsam.perturb()
    perturbed = w.detach().clone()
    backward()
    gsam.restore()
    direction = w.grad.detach().clone()
    sgd.step()
    return perturbed, direction, w.detach()


def test_one_step_matches_the_hand_computed_one():
    # w = (3, 2): g = (3, 4), |g| = 5. rho 5: e = (3, 4), w + e = (6, 6), g_p = (6, 12).
    # g.g_p = 66, |g_p|^2 = 180: g_par = (66/180)(6, 12) = (2.2, 4.4), g_perp = (0.8, -0.4).
    # alpha 0.5: direction (6, 12) - 0.5 (0.8, -0.4) = (5.6, 12.2); lr 0.1: w = (2.44, 0.78).
    perturbed, direction, after = gsam_step([3.0, 2.0], rho=5.0, alpha=0.5, adaptive=False)
    assert torch.allclose(perturbed, torch.tensor([6.0, 6.0], dtype=torch.float64))
    assert torch.allclose(direction, torch.tensor([5.6, 12.2], dtype=torch.float64))
    assert torch.allclose(after, torch.tensor([2.44, 0.78], dtype=torch.float64))


def test_adaptive_step_scales_the_climb_by_the_weights():
    # Adaptive (ASAM's T = |w|): e = rho T^2 g / |T g|. w = (3, 2), g = (3, 4): T g = (9, 8),
    # |T g| = sqrt(145); rho = sqrt(145): e = (9 * 3, 4 * 4) = (27, 16), w + e = (30, 18).
    # g_p = (30, 36); g.g_p = 234, |g_p|^2 = 2196; g_perp = g - (234 / 2196) g_p.
    rho = 145**0.5
    perturbed, direction, _ = gsam_step([3.0, 2.0], rho=rho, alpha=1.0, adaptive=True)
    assert torch.allclose(perturbed, torch.tensor([30.0, 18.0], dtype=torch.float64))
    g, g_p = torch.tensor([3.0, 4.0]), torch.tensor([30.0, 36.0])
    expected = g_p - (g - (234 / 2196) * g_p)
    assert torch.allclose(direction.float(), expected)


def test_alpha_zero_and_rho_zero_reduce_to_sam_and_sgd():
    _, sam, _ = gsam_step([3.0, 2.0], rho=5.0, alpha=0.0, adaptive=False)
    assert torch.allclose(sam, torch.tensor([6.0, 12.0], dtype=torch.float64))  # g at w + e
    _, sgd, _ = gsam_step([3.0, 2.0], rho=0.0, alpha=0.3, adaptive=False)
    assert torch.allclose(sgd, torch.tensor([3.0, 4.0], dtype=torch.float64))  # plain g


def test_a_non_finite_gradient_perturbs_nothing():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    gsam = GSAM([w], rho=0.01, alpha=0.3)
    w.grad = torch.tensor([float("inf"), 1.0])
    gsam.perturb()
    assert torch.equal(w.detach(), torch.tensor([1.0, 2.0]))
    gsam.restore()
    assert torch.equal(w.detach(), torch.tensor([1.0, 2.0]))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        GSAM([torch.nn.Parameter(torch.ones(1))], rho=0.01, alpha=1.5)
    with pytest.raises(ValueError, match="rho > 0"):
        resolve_recipe("mtt", optimizer="gsam")
    with pytest.raises(ValueError, match="gsam_alpha"):
        resolve_recipe("ftd", gsam_alpha=2.0)


def test_ftd_recipe_is_the_ftd_code_setting():
    r = resolve_recipe("ftd")
    assert (r.optimizer, r.rho, r.gsam_alpha, r.gsam_adaptive, r.epochs) == (
        "gsam",
        0.01,
        0.3,
        True,
        100,
    )
    assert (r.lr, r.momentum, r.weight_decay, r.batch_size) == (0.01, 0.0, 0.0, 256)


def train_one_expert(tmp_path, **kwargs) -> Trajectory:
    dm = DigitsDataModule()
    facts = dict(num_classes=10, image_shape=dm.image_shape, mean=dm.mean, std=dm.std,
                 dataset=dm.name)  # fmt: skip
    model = ExpertModule(
        **facts, arch_kwargs={"width": 8}, epochs=2, batch_size=64, trajectory_dir=str(tmp_path),
        **kwargs,
    )  # fmt: skip
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return Trajectory.load(model.trajectory_path(0))


def test_gsam_experts_train_and_differ_from_sgd_ones(tmp_path):
    ftd = train_one_expert(tmp_path / "ftd", recipe="ftd", rho=0.05, lr=0.1)
    sgd = train_one_expert(tmp_path / "sgd", recipe="ftd", optimizer="sgd", lr=0.1)
    assert ftd.recipe["optimizer"] == "gsam" and sgd.recipe["optimizer"] == "sgd"
    assert torch.equal(ftd.params[0], sgd.params[0])  # same seed, same start
    assert not torch.allclose(ftd.params[-1], sgd.params[-1])  # GSAM took other steps
    # It learns as fast as SGD here (both about 0.44 after 2 epochs; chance is 0.1).
    assert ftd.test_accuracy[-1] > 0.3 and ftd.test_accuracy[-1] > sgd.test_accuracy[-1] - 0.1
