"""Smoke tests of the distillation benchmarks: their main functions run end to end on digits.

Tiny settings (width 8, a few iterations, one evaluation run of two epochs), so that the scripts
cannot rot; the numbers themselves are not checked here (timing and accuracy belong to the
benchmarks' own output).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import distill_accuracy  # noqa: E402
import distill_cost  # noqa: E402

# One digits expert of two epochs at width 8: shared by both scripts through the work folder.
TINY = ["--width", "8", "--expert-epochs", "2", "--num-experts", "1", "--work-dir", "bench"]


@pytest.mark.slow
def test_accuracy_benchmark_runs_and_writes_its_section(in_tmp):
    out = in_tmp / "accuracy.md"
    argv = ["--datasets", "digits", "--ipc", "1", "--runs", "1", "--iterations", "3"]
    outcomes = distill_accuracy.main([*argv, "--eval-epochs", "2", *TINY, "--out", str(out)])
    (_, ipc, outcome), *_ = outcomes
    assert ipc == 1 and set(outcome["results"]) == {"tgdd", "dm", "random_real", "start"}
    # DM is the TGDD run with its own extractors: nothing else may differ.
    assert set(outcome["differs"]) <= set(distill_accuracy.TGDD_ONLY)
    assert outcome["same_start"]
    text = out.read_text()
    assert "| digits | 1 |" in text and "benchmarks/distill_accuracy.py" in text


@pytest.mark.slow
def test_cost_benchmark_runs_both_methods_in_subprocesses(in_tmp):
    out = in_tmp / "cost.md"
    argv = ["--dataset", "digits", "--ipc", "2", "--warmup", "1", "--iterations", "2"]
    runs = distill_cost.main([*argv, "--rounds", "1", *TINY, "--out", str(out)])
    assert {m: len(r) for m, r in runs.items()} == {"tgdd": 1, "dm": 1}
    assert all(len(r[0]["times"]) == 2 and r[0]["peak"] > 0 for r in runs.values())
    assert runs["tgdd"][0]["bank"] > 0 and runs["dm"][0]["bank"] == 0
    assert "TGDD / DM" in out.read_text()


CONFIGS = sorted((BENCHMARKS / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_benchmark_configs_build(config, in_tmp):
    # MNIST configs read no data at instantiation (torchvision sources only record their facts);
    # the CIFAR-10 ones read the shared .npz.
    dataset = "cifar10" if "cifar10" in config.name else "mnist"
    if dataset == "cifar10" and not (SHARED_DATA / "cifar10" / "cifar10.npz").exists():
        pytest.skip("the shared CIFAR-10 copy is not here")
    args = ["--config", str(config)]
    if dataset == "cifar10":  # the configs' path is relative to the repository
        args.append(f"--data.init_args.path={SHARED_DATA / 'cifar10' / 'cifar10.npz'}")
    cli = distill_accuracy.LitDistillCLI(args=args, run=False)
    assert cli.model.num_classes == 10 and cli.datamodule.name == dataset


@pytest.mark.slow
def test_method_comparison_runs_and_writes_its_section(in_tmp):
    import compare_methods

    out = in_tmp / "compare.md"
    argv = ["--datasets", "digits", "--methods", "tgdd,dm,mct", "--iterations", "4"]
    argv += ["--warmup", "1"]
    argv += ["--runs", "1", "--eval-epochs", "2", "--width", "8", "--expert-epochs", "3"]
    outcomes = compare_methods.main([*argv, "--num-experts", "1", "--work-dir", "bench"])
    ((dataset, ipc, runs, evaluation),) = outcomes
    assert (dataset, ipc, set(runs)) == ("digits", 1, {"tgdd", "dm", "mct"})
    assert set(evaluation["results"]) == {"tgdd", "dm", "mct", "random_real"}
    assert all(r["iterations"] == 4 and r["delta"] >= 0 for r in runs.values())
    compare_methods.main([*argv, "--num-experts", "1", "--work-dir", "bench", "--out", str(out)])
    assert "| digits | 1 | mct |" in out.read_text()


@pytest.mark.slow
def test_unroll_memory_benchmark_runs_both_modes(in_tmp):
    import unroll_memory

    out = in_tmp / "unroll.md"
    argv = ["--steps", "2", "3", "--width", "4", "--ipc", "1", "--repeats", "1", "--out", str(out)]
    summary = unroll_memory.main(argv)
    assert set(summary) == {(m, s) for m in ("unroll", "replay") for s in (2, 3)}
    assert "replay/unroll wall" in out.read_text()
