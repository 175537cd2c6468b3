"""The command line: shipped configs, data facts linking, multi-expert runs, clear errors."""

from __future__ import annotations

import re

import pytest
import yaml
from test_configs import data_of, fake_npz, stand_in_set

from lit_distill.cli import LitDistillCLI, resolve_config, shipped_configs
from lit_distill.errors import ConfigNotFoundError
from lit_distill.main import main
from lit_distill.models import build_model
from lit_distill.trajectory import Trajectory, list_experts

CONFIGS = sorted(shipped_configs())
# What a config needs from the command line to have something to do.
REQUIRED = {"eval.yaml": ["--model.init_args.ipc=1"]}


def test_configs_are_shipped_and_listed(capsys):
    assert "experts_digits.yaml" in CONFIGS
    main(["configs"])
    listing = capsys.readouterr().out
    assert all(name in listing for name in CONFIGS)


def stand_in_for_tiny_imagenet(name: str, folder) -> list[str]:
    """Tiny ImageNet is read at instantiation: a generated .npz of its shape stands in for it."""
    with open(resolve_config(name)) as f:
        if "TinyImageNet" not in yaml.safe_load(f)["data"]["class_path"]:
            return []
    npz = fake_npz(folder, "tinyimagenet", 200, (3, 64, 64), per_class=1)
    return ["--data=NpzDataModule", f"--data.path={npz}", "--data.name=tinyimagenet"]


def sets_to_compare(name: str, folder) -> list[str]:
    """Configs that compare exported sets need one: a generated set of their dataset."""
    with open(resolve_config(name)) as f:
        config = yaml.safe_load(f)
    if "sets" not in config["model"].get("init_args", {}):
        return []
    return [f"--model.init_args.sets=[{stand_in_set(folder, *data_of(config))}]"]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_config_instantiates(name, in_tmp):
    args = [*REQUIRED.get(name, []), *stand_in_for_tiny_imagenet(name, in_tmp)]
    args += sets_to_compare(name, in_tmp)
    cli = LitDistillCLI(args=["--config", resolve_config(name), *args], run=False)
    # Data facts reach the model from the datamodule, never from the YAML.
    assert cli.model.num_classes == cli.datamodule.num_classes
    assert cli.model.image_shape == cli.datamodule.image_shape
    assert cli.model.dataset_name == cli.datamodule.name
    with open(resolve_config(name)) as f:
        config = yaml.safe_load(f)
    assert "num_classes" not in config["model"].get("init_args", {})


def test_config_names_resolve_from_any_directory(in_tmp):
    assert resolve_config("experts_digits") == resolve_config("experts_digits.yaml")
    assert resolve_config("configs/experts_digits.yaml").endswith("experts_digits.yaml")
    with pytest.raises(ConfigNotFoundError, match="Shipped configs: .*experts_digits.yaml"):
        resolve_config("nope.yaml")


def test_bad_config_name_is_one_clear_line(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "tgdd_nope.yaml"])
    assert exit_info.value.code == 2
    assert "ConfigNotFoundError" in capsys.readouterr().err


def test_print_config_omits_linked_facts(in_tmp, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", "experts_digits.yaml", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert "num_classes" not in printed["model"]["init_args"]
    assert printed["model"]["init_args"]["recipe"] == "tgdd"


@pytest.mark.slow
def test_cli_trains_two_experts_then_skips_them(in_tmp, run_cli):
    args = [
        "fit",
        "--config",
        "experts_digits.yaml",
        "--model.init_args.epochs=2",
        "--model.init_args.num_experts=2",
        "--model.init_args.arch_kwargs={width: 8}",
    ]
    run_cli(*args)
    paths = list_experts(in_tmp / "runs/experts/digits_tgdd")
    assert [p.name for p in paths] == ["expert_000.pt", "expert_001.pt"]
    net = build_model("convnet3", 10, (1, 8, 8), width=8)
    trajectories = [Trajectory.load(p) for p in paths]
    for traj in trajectories:
        traj.check_compatible(net, dataset="digits", num_classes=10, image_shape=(1, 8, 8))
        assert traj.epochs == [0, 1, 2]
    assert trajectories[0].seed != trajectories[1].seed
    assert not trajectories[0].params[0].equal(trajectories[1].params[0])
    stamps = [p.stat().st_mtime_ns for p in paths]
    run_cli(*args)  # a restart trains nothing: both experts are complete
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    assert (in_tmp / "runs/tb/experts_digits/expert_001").is_dir()


def test_expert_runs_refuse_ckpt_path(in_tmp, run_cli, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", "experts_digits.yaml", "--ckpt_path", "x.ckpt")
    assert exit_info.value.code == 2 and "resume per expert" in capsys.readouterr().err


def test_distillation_without_experts_names_the_command(in_tmp, run_cli, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            "fit",
            "--config",
            "tgdd_digits.yaml",
            "--model.init_args.train_missing_experts=false",
        )
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "TrajectoryNotFoundError" in error
    assert "lit-distill fit --config experts_digits.yaml" in error


@pytest.mark.slow
def test_quick_start_trains_experts_distils_and_reports(in_tmp, run_cli, capsys):
    run_cli(
        "fit",
        "--config",
        "tgdd_digits.yaml",
        "--model.init_args.iterations=20",
    )
    assert len(list_experts(in_tmp / "runs/experts/digits_tgdd")) == 3
    for name in ("synthetic_final.pt", "synthetic_final.png", "checkpoints/last.ckpt"):
        assert (in_tmp / "runs/tgdd_digits" / name).exists()
    summary = capsys.readouterr().out  # the summary closes the command
    assert "| tgdd | convnet | 1 | short |" in summary
    assert "| random_real | convnet | 1 | short |" in summary
    assert "experts: runs/experts/digits_tgdd/expert_000.pt" in summary
    assert re.search(r"synthetic sets: .*runs/tgdd_digits/synthetic_final\.pt", summary)
    assert re.search(r"wall time: experts .*\(3 trained, 0 reused\), distillation", summary)
