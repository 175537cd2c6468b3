"""The console: one status line per phase, banners and model summary once, a summary at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings

import pytest

from lit_distill.console import (
    DEPENDENCY_WARNINGS,
    PhaseProgressBar,
    RunReport,
    StatusLine,
    duration,
    quiet_dependency_warnings,
)

EXPERTS = ["fit", "--config", "experts_digits_mtt.yaml", "--model.init_args.num_experts=2"]
EXPERTS += ["--model.init_args.epochs=2", "--model.init_args.arch_kwargs={width: 8, depth: 2}"]


def test_phase_times_exclude_nested_phases():
    report = RunReport()
    with report.phase("distillation"):
        time.sleep(0.05)
        with report.phase("evaluation"):
            time.sleep(0.1)
        time.sleep(0.05)
    assert report.seconds["evaluation"] == pytest.approx(0.1, abs=0.04)
    assert report.seconds["distillation"] == pytest.approx(0.1, abs=0.04)  # not 0.2


def test_report_lists_files_once_relative_and_in_order(in_tmp):
    report = RunReport()
    report.start()
    with report.phase("evaluation"):
        pass
    with report.phase("experts"):
        pass
    for i in range(5):
        report.file("experts", in_tmp / f"runs/e/expert_{i:03d}.pt")
    report.file("synthetic sets", "runs/x/synthetic_final.pt")
    report.file("synthetic sets", "runs/x/synthetic_final.pt")
    report.table("| a |\n|---|", "Accuracy:")
    text = report.render()
    assert "experts: runs/e/expert_000.pt … expert_004.pt (5 files)" in text
    assert text.count("synthetic_final.pt") == 1
    assert text.index("wall time: experts") < text.index("evaluation")  # canonical order
    assert text.rstrip().endswith("Accuracy:\n| a |\n|---|")
    assert RunReport().render() == ""  # nothing done, nothing printed


def test_durations_read_well():
    assert duration(4.25) == "4.2 s" and duration(42) == "42 s"
    assert duration(185) == "3 min 05 s" and duration(7620) == "2 h 07 min"


def test_status_line_rewrites_in_place_on_a_terminal_and_throttles_in_a_log(capsys):
    class Terminal:
        def __init__(self):
            self.text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

        def isatty(self):
            return True

    line, terminal = StatusLine(refresh_s=0.0), Terminal()
    line.__class__ = type("T", (StatusLine,), {"stream": property(lambda self: terminal)})
    line.update("iteration 1/10")
    line.update("iteration 2/10")
    line.clear()
    assert (
        terminal.text.startswith("\riteration 1/10\riteration 2/10\r") and "\n" not in terminal.text
    )
    log = StatusLine(log_every_s=3600)
    log.update("first", force=True)
    log.update("second")  # within the hour: not printed
    assert capsys.readouterr().err == "first\n"


def test_dependency_warnings_are_filtered_and_say_why():
    assert all(len(why) > 20 for *_, why in DEPENDENCY_WARNINGS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_dependency_warnings()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, ...", FutureWarning, 1)
        warnings.warn("a setting you can change", UserWarning, 1)
    assert [str(w.message) for w in caught] == ["a setting you can change"]


def command(args: list[str], folder) -> subprocess.CompletedProcess:
    """``lit-distill ARGS`` as a user runs it (Lightning's own log handler writes to the real
    stderr, which only a new process captures)."""
    return subprocess.run(
        [sys.executable, "-m", "lit_distill", *args], cwd=folder, capture_output=True, text=True,
        timeout=300, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


@pytest.mark.slow
def test_expert_command_prints_banners_and_summary_once_and_a_line_per_expert(in_tmp):
    done = command([*EXPERTS, "--trainer.enable_progress_bar=true"], in_tmp)
    err = done.stderr
    assert err.count("GPU available") == 1  # not once per expert
    assert err.count("Trainable params") == 1  # the model summary of the first expert only
    assert "LeafSpec" not in err and "Trainer.fit` stopped" not in err
    assert "expert 1/2 done in" in err and "expert 2/2 done in" in err
    assert "-> runs/experts/digits_mtt/expert_001.pt" in err
    assert "wall time: experts" in done.stdout and "(2 trained, 0 reused)" in done.stdout
    again = command(EXPERTS, in_tmp)  # both exist now: reused, in one line
    assert "all 2 experts already in runs/experts/digits_mtt: reused" in again.stderr
    assert "(0 trained, 2 reused)" in again.stdout


def test_progress_bar_shows_expert_epochs_and_eta(in_tmp, capsys):
    import lightning as L

    from lit_distill.data import DigitsDataModule
    from lit_distill.experts import ExpertModule

    dm = DigitsDataModule()
    facts = dict(num_classes=10, image_shape=dm.image_shape, mean=dm.mean, std=dm.std,
                 dataset=dm.name)  # fmt: skip
    model = ExpertModule(**facts, arch_kwargs={"width": 8}, epochs=2, num_experts=3,
                         trajectory_dir="experts")  # fmt: skip
    bar = PhaseProgressBar(log_every_s=0.0)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, callbacks=[bar],
                        enable_checkpointing=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    lines = capsys.readouterr().err.splitlines()
    status = [line for line in lines if line.startswith("expert 1/3")]
    assert [line.split("  ")[1] for line in status] == ["epoch 1/2", "epoch 2/2"]
    assert all("s/epoch" in line and "ETA" in line and "test acc" in line for line in status)


@pytest.mark.slow
def test_resume_says_so_once_and_continues_its_tensorboard_run(in_tmp):
    run = ["fit", "--config", "tgdd_digits.yaml", "--model.init_args.num_experts=1"]
    command([*run, "--model.init_args.iterations=60"], in_tmp)
    last = "runs/tgdd_digits/checkpoints/last.ckpt"
    done = command([*run, "--model.init_args.iterations=80", f"--ckpt_path={last}"], in_tmp)
    assert done.stderr.count(f"resuming {last} at iteration 50 of 80") == 1
    for noise in ("unreliable results", "Restoring states", "exists and is not empty"):
        assert noise not in done.stderr
    assert sorted(p.name for p in (in_tmp / "runs/tgdd_digits/tb").iterdir()) == ["version_0"]
    assert "TensorBoard: runs/tgdd_digits/tb/version_0" in done.stdout
