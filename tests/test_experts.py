"""Expert training: recipes, the trajectory callback and the multi-expert command line."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lit_distill.data import DigitsDataModule
from lit_distill.experts import ExpertModule, resolve_recipe
from lit_distill.models import build_model
from lit_distill.seeding import derive_seed
from lit_distill.trajectory import Trajectory, list_experts


def expert(tmp_path, **kwargs) -> tuple[ExpertModule, DigitsDataModule]:
    dm = DigitsDataModule()
    facts = dict(
        num_classes=dm.num_classes,
        image_shape=dm.image_shape,
        mean=dm.mean,
        std=dm.std,
        dataset=dm.name,
    )
    options = dict(arch_kwargs={"width": 8}, recipe="tgdd", epochs=2, trajectory_dir=str(tmp_path))
    return ExpertModule(**facts, **{**options, **kwargs}), dm


def fit(model, dm, epochs: int) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    return trainer


def flat(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def test_recipes_resolve_with_overrides():
    tgdd = resolve_recipe("tgdd")
    assert (tgdd.epochs, tgdd.batch_size, tgdd.milestone_epochs()) == (60, 64, [40, 50])
    short = resolve_recipe("tgdd", epochs=12, lr=None)
    assert short.milestone_epochs() == [8, 10] and short.lr == 0.01
    with pytest.raises(ValueError, match="unknown expert recipe"):
        resolve_recipe("sgd")


def test_callback_records_initialisation_every_epoch_and_accuracy(tmp_path):
    model, dm = expert(tmp_path)
    torch.manual_seed(derive_seed(0, 0))
    initial = flat(build_model("convnet3", 10, (1, 8, 8), width=8))
    fit(model, dm, epochs=2)
    traj = Trajectory.load(model.trajectory_path(0))
    assert traj.epochs == [0, 1, 2] and traj.num_epochs == 2
    assert torch.equal(traj.params[0], initial)  # epoch 0 is the seeded initialisation
    assert torch.equal(traj.params[-1], flat(model.net))  # the last row is the trained net
    assert not torch.equal(traj.params[1], traj.params[0])
    assert len(traj.test_accuracy) == 2 and all(0 <= a <= 1 for a in traj.test_accuracy)
    assert traj.recipe["momentum"] == 0.9 and traj.dataset == "digits" and not traj.zca
    traj.check_compatible(model.net, dataset="digits", num_classes=10, image_shape=(1, 8, 8))


def test_convex_half_precision_store(tmp_path):
    model, dm = expert(tmp_path, epochs=3, store="convex", store_dtype="float16")
    fit(model, dm, epochs=3)
    traj = Trajectory.load(model.trajectory_path(0))
    assert traj.epochs == [0, 3] and traj.convex
    assert traj.params.dtype == torch.float16
    assert torch.allclose(traj.snapshot(-1), flat(model.net), atol=1e-2)


def test_an_unfinished_expert_writes_nothing(tmp_path):
    model, dm = expert(tmp_path, epochs=3)
    fit(model, dm, epochs=1)  # stopped early (as if interrupted)
    assert list_experts(tmp_path) == []


def test_experts_get_different_seeds(tmp_path):
    model, _ = expert(tmp_path)
    first = flat(model.net)
    model.start_expert(1)
    assert not torch.equal(first, flat(model.net))
    model.start_expert(0)
    assert torch.equal(first, flat(model.net))
