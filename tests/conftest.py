"""Shared fixtures: tiny trajectories and a quiet, isolated command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lit_distill.main import main
from lit_distill.models import build_model
from lit_distill.trajectory import Trajectory

#: Real datasets for the few tests that need them (they are skipped without): the folder named by
#: LIT_DISTILL_TEST_DATA, else ``../shared/data`` beside the repository. It holds ``MNIST/`` in
#: torchvision's layout (``torchvision.datasets.MNIST(folder, download=True)`` writes it) and
#: ``cifar10/cifar10.npz`` (uint8 ``x_train, y_train, x_test, y_test``, images N x 32 x 32 x 3).
TEST_DATA = Path(
    os.environ.get("LIT_DISTILL_TEST_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
NO_MNIST = "needs MNIST: set LIT_DISTILL_TEST_DATA to a folder with MNIST/ (see tests/conftest.py)"
NO_CIFAR10 = (
    "needs CIFAR-10: set LIT_DISTILL_TEST_DATA to a folder with cifar10/cifar10.npz "
    "(see tests/conftest.py)"
)

# Keep CLI runs in tests quiet and small.
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def quiet_trainer(tmp_path, **kwargs):
    """A one-epoch CPU Trainer that writes nothing but what a test asks for."""
    import lightning as L

    options = dict(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    return L.Trainer(**{**options, **kwargs})


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run the test from an empty folder (relative paths in configs land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def run_cli():
    """``run_cli("fit", "--config", ...)``: the ``lit-distill`` command, quiet."""

    def run(*args: str) -> None:
        main([*args, *QUIET])

    return run


def make_trajectory(
    epochs: int = 3,
    arch: str = "convnet3",
    arch_kwargs: dict | None = None,
    num_classes: int = 10,
    image_shape: tuple[int, int, int] = (1, 8, 8),
    dataset: str = "digits",
    seed: int = 0,
) -> Trajectory:
    """A trajectory whose snapshots drift randomly from a freshly built network."""
    arch_kwargs = {"width": 8} if arch_kwargs is None else arch_kwargs
    torch.manual_seed(seed)
    net = build_model(arch, num_classes, image_shape, **arch_kwargs)
    names = [n for n, _ in net.named_parameters()]
    start = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    steps = torch.randn(epochs, start.numel()).mul(0.01).cumsum(0)
    return Trajectory(
        arch=arch,
        arch_kwargs=arch_kwargs,
        num_classes=num_classes,
        image_shape=list(image_shape),
        dataset=dataset,
        param_names=names,
        param_shapes=[list(p.shape) for p in net.parameters()],
        epochs=list(range(epochs + 1)),
        num_epochs=epochs,
        params=torch.cat([start[None], start + steps]),
        test_accuracy=[0.5] * epochs,
        seed=seed,
    )


@pytest.fixture
def trajectory() -> Trajectory:
    return make_trajectory()


# Real experts for trajectory-matching tests: tiny, trained once per test session.
DIGIT_EXPERTS = dict(arch="convnet", arch_kwargs={"width": 8, "depth": 2})


@pytest.fixture(scope="session")
def digit_experts(tmp_path_factory) -> Path:
    """A folder of 2 real digits experts (ConvNet width 8, depth 2, MTT recipe, 6 epochs)."""
    import lightning as L

    from lit_distill.data import DigitsDataModule
    from lit_distill.experts import ExpertModule
    from lit_distill.experts.runner import train_experts

    folder = tmp_path_factory.mktemp("digit_experts")
    dm = DigitsDataModule()
    facts = dict(num_classes=10, image_shape=(1, 8, 8), mean=dm.mean, std=dm.std, dataset="digits")
    model = ExpertModule(
        **facts, **DIGIT_EXPERTS, recipe="mtt", epochs=6, batch_size=32, num_experts=2,
        trajectory_dir=str(folder),
    )  # fmt: skip

    def make_trainer(**overrides):
        options = dict(accelerator="cpu", logger=False, enable_checkpointing=False)
        options.update(enable_progress_bar=False, enable_model_summary=False)
        return L.Trainer(**{**options, **overrides})

    train_experts(model, dm, make_trainer)
    return folder
