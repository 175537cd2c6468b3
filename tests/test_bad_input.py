"""Bad input through the command line: one line naming the setting, exit status 2, nothing written.

The battery runs ``lit_distill.main.main`` in this process (the console script's own code path,
fast enough for the default run), and again, every case, through the real command line in a
subprocess (marked slow: CI runs it).
Each case checks: exit status 2, exactly one ``lit-distill: error`` line on stderr that names the
setting, no traceback and no parser dump, and no new file that a later command would load
(trajectories, exports, checkpoints).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DIGIT_EXPERTS, make_trajectory
from test_configs import fake_npz

from lit_distill.export import SyntheticData, save_synthetic
from lit_distill.main import main
from lit_distill.trajectory import expert_path

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
TINY = ["--model.init_args.arch_kwargs={width: 8, depth: 2}"]
TGDD = ["fit", "--config", "tgdd_digits.yaml", *TINY, "--model.init_args.iterations=2"]
TGDD += ["--model.init_args.trajectory_dir=experts", "--model.init_args.num_experts=2"]
MCT = ["fit", "--config", "mct_digits.yaml", *TINY, "--model.init_args.iterations=2"]
MCT += ["--model.init_args.trajectory_dir=experts", "--model.init_args.num_experts=2"]
TEST = ["test", "--config", "eval.yaml", "--model.init_args.epochs=1"]
LOADABLE = (".pt", ".ckpt")


def write_experts(folder: Path, **kwargs) -> None:
    for i in range(2):
        options = {**DIGIT_EXPERTS, "epochs": 4, "seed": i, **kwargs}
        make_trajectory(**options).save(expert_path(folder, i))


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def bad(in_tmp) -> Path:
    """Files for every case: datasets, experts, exports and checkpoints, good and broken."""
    return make_bad(in_tmp)


@pytest.fixture(scope="module")
def bad_shared(tmp_path_factory) -> Path:
    """``bad`` made once for the subprocess battery (its cases write nothing, checked)."""
    return make_bad(tmp_path_factory.mktemp("bad"))


def make_bad(in_tmp: Path) -> Path:
    write_experts(in_tmp / "experts")
    write_experts(in_tmp / "wide", arch_kwargs={"width": 16, "depth": 2})
    write_experts(in_tmp / "mnist_experts", dataset="mnist")
    (in_tmp / "truncated").mkdir()
    write_experts(in_tmp / "truncated")
    truncate(expert_path(in_tmp / "truncated", 1))
    npz = Path(fake_npz(in_tmp, "cifar10", 10, (3, 32, 32)))
    (in_tmp / "trunc.npz").write_bytes(npz.read_bytes()[:2000])
    rng = np.random.default_rng(0)
    floats = rng.random((8, 32, 32, 3)).astype(np.float32)
    labels = np.arange(8) % 2
    np.savez(in_tmp / "float.npz", x_train=floats, y_train=labels, x_test=floats, y_test=labels)
    np.savez(in_tmp / "keys.npz", images=floats)
    digits = torch.rand(10, 1, 8, 8)
    export = SyntheticData(
        images=digits, labels=torch.arange(10), label_logits=None, lr=None, factor=1, ipc=1,
        num_classes=10, class_names=[str(i) for i in range(10)], dataset="digits",
        image_shape=[1, 8, 8], zca=False, method="dm",
    )  # fmt: skip
    save_synthetic(in_tmp / "digits_set.pt", export)
    save_synthetic(in_tmp / "trunc_set.pt", export)
    truncate(in_tmp / "trunc_set.pt")
    (in_tmp / "trunc.ckpt").write_bytes(b"PK\x03\x04 not a whole archive")
    (in_tmp / "a_file").write_text("not a folder")
    return in_tmp


CASES = {
    "npz missing": (["fit", "--config", "dm_cifar10.yaml", "--data=NpzDataModule",
                     "--data.path=missing.npz"], "--data.init_args.path"),
    "npz truncated": (["fit", "--config", "dm_cifar10.yaml", "--data=NpzDataModule",
                       "--data.path=trunc.npz"], "damaged or not an .npz"),
    "npz of floats": (["fit", "--config", "dm_cifar10.yaml", "--data=NpzDataModule",
                       "--data.path=float.npz"], "uint8"),
    "npz keys": (["fit", "--config", "dm_cifar10.yaml", "--data=NpzDataModule",
                  "--data.path=keys.npz"], "lacks x_train"),
    "mnist root": (["fit", "--config", "experts_mnist.yaml", "--data.init_args.download=false",
                    "--data.init_args.root=nowhere"], "root"),
    "ipc 0": ([*TGDD, "--model.init_args.ipc=0"], "ipc=0"),
    "ipc above a class": ([*TGDD, "--model.init_args.ipc=500"], "ipc=500"),
    "alpha -1": ([*TGDD, "--model.init_args.alpha=-1"], "alpha"),
    "unknown arch": ([*TGDD, "--model.init_args.arch=convnet9"], "unknown arch 'convnet9'"),
    "arch_kwargs typo": ([*TGDD, "--model.init_args.arch_kwargs={widht: 8}"], "widht"),
    "negative image lr": ([*TGDD, "--model.init_args.lr_images=-1"], "lr_images"),
    "nan image lr": ([*TGDD, "--model.init_args.lr_images=.nan"], "lr_images"),
    "bad callback value": ([*TGDD, "--trainer.callbacks+=lit_distill.evaluation.EvaluationCallback",
                            "--trainer.callbacks.num_runs=0"], "num_runs"),
    "config key typo": ([*TGDD, "--model.init_args.ipcc=1"], "'ipcc' is not accepted"),
    "experts of another width": ([*TGDD, "--model.init_args.trajectory_dir=wide"], "width=16"),
    "experts of another norm": ([*TGDD[:3], "--model.init_args.arch_kwargs={width: 8, depth: 2, "
                                 "norm: batch}", *TGDD[4:]], "norm=batch"),
    "experts of another dataset": ([*TGDD, "--model.init_args.trajectory_dir=mnist_experts"],
                                   "dataset 'mnist'"),
    "truncated trajectory": ([*TGDD, "--model.init_args.trajectory_dir=truncated"],
                             "expert_001.pt"),
    "missing experts, dry run": ([*TGDD, "--model.init_args.trajectory_dir=none",
                                  "--trainer.fast_dev_run=true"], "fast_dev_run"),
    "missing ckpt": ([*TGDD, "--ckpt_path=runs/x/last.ckpt"], "--ckpt_path"),
    "truncated ckpt": ([*TGDD, "--ckpt_path=trunc.ckpt"], "not a complete checkpoint"),
    "unwritable export folder": ([*TGDD, "--model.init_args.export_dir=a_file/out"],
                                 "cannot be written"),
    "mct: empty lambda range": ([*MCT, "--model.init_args.lambda_min=0.6",
                                 "--model.init_args.lambda_max=0.4"], "lambda_min 0.6"),
    "mct: lambda_max above 1": ([*MCT, "--model.init_args.lambda_max=1.5"], "lambda_max"),
    "mct: window past the experts": ([*MCT, "--model.init_args.max_start_epoch=3"],
                                     "max_start_epoch 3"),
    "compare: set of another dataset": (["test", "--config", "compare.yaml", "--data=NpzDataModule",
                                         "--data.path=cifar10.npz",
                                         "--model.sets=[digits_set.pt]"], "distilled from"),
    "compare: no such set": (["test", "--config", "compare.yaml", "--model.sets=[nothing.pt]"],
                             "--model.sets"),
    "compare: unknown arch": (["test", "--config", "compare.yaml", "--model.sets=[digits_set.pt]",
                               "--model.archs=[convnet9]"], "unknown arch 'convnet9'"),
    "nas: unknown norm": (["test", "--config", "nas.yaml", "--model.sets=[digits_set.pt]",
                           "--model.norms=[instance,groupy]"], "groupy"),
    "nas: too deep for the images": (["test", "--config", "nas.yaml",
                                      "--model.sets=[digits_set.pt]", "--model.depths=[4]"],
                                     "depth 4"),
    "test: set of another dataset": ([*TEST, "--data=NpzDataModule", "--data.path=cifar10.npz",
                                      "--model.synthetic=digits_set.pt"], "distilled from"),
    "test: no such set": ([*TEST, "--model.synthetic=nothing.pt"], "--model.synthetic"),
    "test: truncated set": ([*TEST, "--model.synthetic=trunc_set.pt"], "trunc_set.pt"),
}  # fmt: skip


def loadable(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.suffix in LOADABLE}


def everything(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def fails_cleanly(args: list[str], names: str, capsys, folder: Path) -> str:
    before, files = loadable(folder), everything(folder)
    with pytest.raises(SystemExit) as exit_info:
        main([*args, *QUIET])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, err
    assert names in errors[0], errors[0]
    assert "Traceback" not in err and "Given value" not in err, err
    assert loadable(folder) == before  # nothing a later command would load
    assert everything(folder) == files, everything(folder) - files  # nor anything else
    return errors[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line(case, bad, capsys):
    args, names = CASES[case]
    fails_cleanly(args, names, capsys, bad)


def test_resume_refuses_settings_that_define_the_run(bad, capsys):
    ckpt = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.dirpath=runs/ckpt", "--trainer.callbacks.save_last=true",
            "--trainer.callbacks.every_n_train_steps=1", "--trainer.logger=false"]  # fmt: skip
    main([*TGDD, *ckpt, *QUIET])
    line = fails_cleanly(
        [*TGDD, *ckpt, "--ckpt_path=runs/ckpt/last.ckpt", "--model.init_args.ipc=2"],
        "ipc: checkpoint 1, now 2", capsys, bad,
    )  # fmt: skip
    assert "cannot change on resume" in line
    # A setting that may change (iterations) takes the new value.
    main([*TGDD, *ckpt, "--ckpt_path=runs/ckpt/last.ckpt", "--model.init_args.iterations=3",
          *QUIET])  # fmt: skip
    assert torch.load("runs/tgdd_digits/synthetic_final.pt", weights_only=True)["iteration"] == 3


def test_a_finished_run_is_not_started_over_silently(bad, capsys):
    main([*TGDD, "--trainer.logger=false", *QUIET])
    line = fails_cleanly([*TGDD, "--trainer.logger=false"], "already holds a finished run",
                         capsys, bad)  # fmt: skip
    assert "--overwrite true" in line
    main([*TGDD, "--trainer.logger=false", "--overwrite=true", *QUIET])  # explicitly allowed


def test_a_diverging_run_stops_with_a_non_zero_exit(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*TGDD, "--model.init_args.lr_images=1e38", "--trainer.logger=false", *QUIET])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert re.search(r"error: DivergenceError: iteration \d+: ", err), err
    assert Path("runs/tgdd_digits/synthetic_last_good.pt").exists()


def command_line(args: list[str], folder: Path) -> subprocess.CompletedProcess:
    """``lit-distill ARGS`` as a user runs it: a new interpreter in ``folder``."""
    return subprocess.run(
        [sys.executable, "-m", "lit_distill", *args, *QUIET], cwd=folder, capture_output=True,
        text=True, timeout=300, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_from_a_real_command_line(case, bad_shared):
    args, names = CASES[case]
    before = loadable(bad_shared)
    done = command_line(args, bad_shared)
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert done.returncode == 2 and len(errors) == 1 and names in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "Given value" not in done.stderr, done.stderr
    assert loadable(bad_shared) == before


@pytest.mark.slow
def test_a_nan_learning_rate_from_a_yaml_config_stops_the_real_command_line(bad_shared):
    (bad_shared / "nan.yaml").write_text("model:\n  init_args:\n    lr_images: .nan\n")
    done = command_line([*TGDD, "--config", "nan.yaml"], bad_shared)
    assert done.returncode == 2 and "lr_images" in done.stderr, done.stderr
    assert not (bad_shared / "runs").exists()


# ---------------------------------------------------------------------- files that run code
class Evil:
    """Unpickling this would create a marker file: loading must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_no_file_lit_distill_reads_can_run_code(in_tmp):
    from lit_distill.data.images import read_cache
    from lit_distill.errors import SyntheticSetError, TrajectoryCorruptError
    from lit_distill.export import load_synthetic
    from lit_distill.runs import RunStateError, checkpoint_hparams
    from lit_distill.trajectory import Trajectory

    marker = in_tmp / "pwned"
    for name in ("expert.pt", "export.pt", "cache.pt", "last.ckpt"):
        torch.save({"payload": Evil(marker)}, in_tmp / name)
    with pytest.raises(TrajectoryCorruptError):
        Trajectory.load(in_tmp / "expert.pt")  # also what the "expert complete" check reads
    with pytest.raises(SyntheticSetError):
        load_synthetic(in_tmp / "export.pt")
    assert read_cache(in_tmp / "cache.pt", "key") is None  # ZCA and decoded-image caches
    with pytest.raises(RunStateError):
        checkpoint_hparams(in_tmp / "last.ckpt")  # read before Lightning resumes from it
    assert not marker.exists()


def test_a_resumed_checkpoint_is_read_once_and_again_when_it_changes(in_tmp, monkeypatch):
    import lit_distill.runs as runs

    path = in_tmp / "last.ckpt"
    hparams = {"ipc": 1}
    torch.save({"hyper_parameters": hparams, "state_dict": {"iteration": torch.tensor(7)}}, path)
    reads = []
    load = runs._load
    monkeypatch.setattr(runs, "_load", lambda p: reads.append(p) or load(p))
    assert runs.checkpoint_hparams(path) == {"ipc": 1}
    assert runs.checkpoint_progress(path) == (7, None)
    runs.checkpoint_hparams(path)["ipc"] = 5  # a caller's copy: the stored facts stay as read
    assert runs.checkpoint_hparams(path) == {"ipc": 1} and len(reads) == 1
    torch.save({"hyper_parameters": {"ipc": 10}, runs.LOGGER_VERSION: 3}, path)  # rewritten
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    assert runs.checkpoint_progress(path) == (None, 3) and len(reads) == 2
    assert runs.checkpoint_hparams(path) == {"ipc": 10} and len(reads) == 2
