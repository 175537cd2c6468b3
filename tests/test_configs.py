"""Every shipped config runs end to end (fast_dev_run) on tiny generated data of its shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from conftest import make_trajectory

from lit_distill.cli import resolve_config, shipped_configs
from lit_distill.export import SyntheticData, save_synthetic
from lit_distill.trajectory import expert_path

TINY = {"width": 8}
ZCA_CONFIG = "experts_cifar10.yaml"


def fake_npz(folder, name: str, num_classes: int, shape, per_class: int = 4) -> str:
    """A small .npz dataset with the class count and image shape of ``name``."""
    rng = np.random.default_rng(0)
    channels, height, width = shape
    n = num_classes * per_class
    images = rng.integers(0, 256, (n, height, width, channels), dtype=np.uint8)
    labels = np.repeat(np.arange(num_classes), per_class).astype(np.uint8)
    path = folder / f"{name}.npz"
    np.savez(path, x_train=images, y_train=labels, x_test=images, y_test=labels)
    return str(path)


def data_of(config: dict) -> tuple[str, int, tuple[int, int, int]]:
    source = config["data"]["class_path"].rsplit(".", 1)[-1]
    return {
        "CIFAR10DataModule": ("cifar10", 10, (3, 32, 32)),
        "CIFAR100DataModule": ("cifar100", 100, (3, 32, 32)),
        "MNISTDataModule": ("mnist", 10, (1, 28, 28)),
        "DigitsDataModule": ("digits", 10, (1, 8, 8)),
        "TinyImageNetDataModule": ("tinyimagenet", 200, (3, 64, 64)),
    }[source]


def stand_in_set(folder, dataset: str, num_classes: int, shape) -> str:
    """An exported one-image-per-class set of ``dataset``, for configs that compare sets."""
    one = SyntheticData(
        images=torch.rand(num_classes, *shape), labels=torch.arange(num_classes),
        label_logits=None, lr=None, factor=1, ipc=1, num_classes=num_classes,
        class_names=[str(c) for c in range(num_classes)], dataset=dataset,
        image_shape=list(shape), zca=False, method="dm",
    )  # fmt: skip
    return str(save_synthetic(folder / "set.pt", one))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(shipped_configs()))
def test_config_runs_with_fast_dev_run(name, in_tmp, run_cli):
    path = resolve_config(name)
    with open(path) as f:
        config = yaml.safe_load(f)
    dataset, num_classes, shape = data_of(config)
    npz = fake_npz(in_tmp, dataset, num_classes, shape)
    args = ["--config", path, "--data=NpzDataModule", f"--data.path={npz}"]
    args.append(f"--data.name={dataset}")
    model = config["model"]["class_path"].rsplit(".", 1)[-1]
    arch = config["model"]["init_args"].get("arch", "convnet3")
    if model == "EvaluationModule":
        run_cli("test", *args, "--model.init_args.ipc=1", "--model.init_args.epochs=2")
        return
    if model in ("ComparisonModule", "NASModule"):
        path = stand_in_set(in_tmp, dataset, num_classes, shape)
        tiny = ["--model.init_args.epochs=1"]
        if model == "ComparisonModule":
            tiny += ["--model.init_args.num_runs=1", "--model.init_args.full_epochs=1"]
        else:  # a few small architectures, trained briefly
            tiny += [
                "--model.init_args.space_size=2",
                "--model.init_args.real_epochs=1",
                "--model.init_args.widths=[8]",
                "--model.init_args.real_per_class=4",
            ]
        run_cli("test", *args, f"--model.init_args.sets=[{path}]", *tiny)
        return
    args += [f"--model.init_args.arch_kwargs={TINY}", "--trainer.fast_dev_run=true"]
    matching = model in ("MTTModule", "DATMModule", "MCTModule", "DPDModule")
    if model == "TGDDModule" or matching:
        # Every start window of the shipped configs ends by epoch 72 (DATM CIFAR-100 IPC 50).
        epochs = 80 if matching else 3
        for i in range(2):
            traj = make_trajectory(
                epochs=epochs, arch=arch, num_classes=num_classes, image_shape=shape,
                dataset=dataset,
            )  # fmt: skip
            traj.save(expert_path(in_tmp / "experts", i))
        args += ["--model.init_args.trajectory_dir=experts", "--model.init_args.num_experts=2"]
        args += ["--model.init_args.ipc=1"]
    if model in ("TGDDModule", "DMModule"):
        args += ["--model.init_args.ipc=1", "--model.init_args.factor=1"]
        args += ["--model.init_args.real_batch=2"]
    if matching:  # a short student; random experts classify nothing: real init
        args += ["--model.init_args.syn_steps=2", "--model.init_args.init=real"]
    if name != ZCA_CONFIG:  # one config fits a (small) ZCA; 64x64x3 ones take minutes on a CPU
        args += ["--data.init_args.zca=false"]
    run_cli("fit", *args)
