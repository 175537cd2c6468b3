"""Smoke tests of the distillation benchmarks: their main functions run end to end on digits.

Tiny settings (width 8, a few iterations, one evaluation run of two epochs), so that the scripts
cannot rot; the numbers themselves are not checked here (timing and accuracy belong to the
benchmarks' own output).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import NO_CIFAR10, NO_MNIST, TEST_DATA

from lit_distill.allocator import glibc

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
    if dataset == "cifar10" and not (TEST_DATA / "cifar10" / "cifar10.npz").exists():
        pytest.skip(NO_CIFAR10)
    args = ["--config", str(config)]
    if dataset == "cifar10":  # the configs' path is relative to the repository
        args.append(f"--data.init_args.path={TEST_DATA / 'cifar10' / 'cifar10.npz'}")
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
    # --reuse keeps the finished runs of the same settings, with their recorded costs ...
    again = compare_methods.main([*argv, "--num-experts", "1", "--work-dir", "bench", "--reuse"])
    ((_, _, kept, _),) = again
    assert all(r.get("reused") and r["iterations"] == 4 for r in kept.values())
    # ... and not a run whose settings differ
    args = compare_methods.parse_args([*argv, "--iterations", "5", "--work-dir", "bench"])
    run = compare_methods.DATASETS["digits"]["mct"].at(1)
    spec = {"config": run.config, "overrides": compare_methods.run_args(run, "mct", 1, args, [])}
    spec |= {"root": str(in_tmp / "bench" / "compare" / "digits_ipc1_mct"), "accelerator": "cpu"}
    assert compare_methods.finished(spec) is None
    spec["overrides"] = compare_methods.run_args(
        run,
        "mct",
        1,
        compare_methods.parse_args([*argv, "--num-experts", "1", "--work-dir", "bench"]),
        [],
    )
    assert compare_methods.finished(spec)["iterations"] == 4


def test_ablation_runs_at_the_configs_ipc_unless_told():
    import ablate

    config = str(BENCHMARKS / "configs" / "mct_cifar10_ipc10_cpu.yaml")
    assert ablate.parse_args(["--config", config]).ipc == 10
    assert ablate.parse_args(["--config", config, "--ipc", "1"]).ipc == 1


def test_benchmark_configs_are_pointed_at_the_data_root():
    import compare_methods

    configs = BENCHMARKS / "configs"
    data, rooted = compare_methods.config_data(str(configs / "mct_mnist_ipc10_cpu.yaml"), "R")
    assert data["class_path"].endswith("MNISTDataModule") and rooted == ["--data.init_args.root=R"]
    _, rooted = compare_methods.config_data(str(configs / "mct_cifar10_ipc1_cpu.yaml"), "R")
    assert rooted == ["--data.init_args.path=R/cifar10/cifar10.npz"]
    assert compare_methods.config_data("tgdd_digits.yaml", "R")[1] == []  # embedded: no root


@pytest.mark.slow
def test_fair_evaluation_benchmark_compares_and_searches(in_tmp):
    import fair_eval

    out = in_tmp / "fair.md"
    argv = ["--dataset", "digits", "--methods", "tgdd,mct", "--iterations", "2", "--width", "8"]
    argv += ["--expert-epochs", "3", "--num-experts", "1", "--work-dir", "bench", "--out", str(out)]
    argv += ["--eval-epochs", "2", "--runs", "1", "--full-epochs", "1"]
    body = fair_eval.main([*argv, "--part", "compare", "--archs", "convnet"])
    assert "| tgdd |" in body and "| random real (IPC 1) |" in body and "LRS" in body
    assert (in_tmp / "bench" / "fair" / "compare_digits_ipc1" / "comparison.png").exists()
    # the search uses the same sets: nothing is distilled again
    body = fair_eval.main([*argv, "--part", "nas", "--space-size", "3", "--real-per-class", "5"])
    assert "(kept)" in body and "distilled now" not in body and "rho" in body
    assert out.read_text().count("## ") == 2


@pytest.mark.slow
def test_unroll_memory_benchmark_runs_both_modes(in_tmp):
    import unroll_memory

    out = in_tmp / "unroll.md"
    argv = ["--steps", "2", "3", "--width", "4", "--ipc", "1", "--repeats", "1", "--out", str(out)]
    summary = unroll_memory.main(argv)
    assert set(summary) == {(m, s) for m in ("unroll", "replay", "plain") for s in (2, 3)}
    text = out.read_text()
    assert "replay/unroll wall" in text and "unroll/plain CPU" in text
    assert "engine: freed memory kept (as lit-distill runs); plain: glibc defaults" in text


@pytest.mark.slow
def test_ablation_runs_variants_and_seeds(in_tmp):
    import ablate

    out = in_tmp / "ablate.md"
    argv = [
        "--config",
        "mct_digits.yaml",
        "--variant",
        "line:",
        "--variant",
        "window:max_start_epoch=2",
    ]
    argv += ["--seeds", "0,1", "--iterations", "2", "--runs", "1", "--baseline-runs", "2"]
    argv += ["--eval-epochs", "2", "--num-experts", "1", "--expert-epochs", "4", "--jobs", "2"]
    results = ablate.main([*argv, "--work-dir", "bench", "--out", str(out)])
    assert set(results["variants"]) == {"line", "window"}
    assert all(len(runs) == 2 for runs in results["variants"].values())  # one per seed
    assert len(results["random_real"].accuracies) == 2
    assert "| window | max_start_epoch=2 |" in out.read_text()


@pytest.mark.slow
def test_mct_convergence_runs_every_method(in_tmp):
    import mct_convergence

    argv = ["--iterations", "2", "--eval-every", "1", "--runs", "1", "--eval-epochs", "2"]
    progress = mct_convergence.main([*argv, "--work-dir", "bench"])
    assert set(progress) == {"mtt", "mct_window", "mct_line"}
    assert all(len(p.losses) == 2 and set(p.accuracy) == {0, 1, 2} for p in progress.values())


FAKE_REFERENCE = '''
"""Stands in for the patched MTT checkout: checks what it is given, returns the start images."""
import argparse, json, sys, torch
parser = argparse.ArgumentParser()
for flag in ("dataset", "model", "buffer_path", "data_path", "init_path", "save_path"):
    parser.add_argument("--" + flag)
parser.add_argument("--Iteration", type=int)
parser.add_argument("--ipc", type=int)
parser.add_argument("--seed", type=int)
parser.add_argument("--no_eval", action="store_true")
args, rest = parser.parse_known_args()
buffer = torch.load(f"{args.buffer_path}/{args.dataset}/{args.model}/replay_buffer_0.pt")
# The reference ConvNetW32 on 1-channel 28 px input: per block conv (w, b) then norm (w, b).
shapes = [(32, 1, 3, 3), (32,), (32,), (32,), (32, 32, 3, 3), (32,), (32,), (32,),
          (32, 32, 3, 3), (32,), (32,), (32,), (10, 512), (10,)]
for expert in buffer:
    for epoch in expert:
        assert [tuple(p.shape) for p in epoch] == shapes, [tuple(p.shape) for p in epoch]
images = torch.load(args.init_path)
labels = torch.arange(10).repeat_interleave(args.ipc)
losses = [1.0] * (args.Iteration + 1)
torch.save({"images": images, "labels": labels, "lr": 0.02, "losses": losses}, args.save_path)
json.dump({"argv": sys.argv[1:], "experts": len(buffer)}, open(args.save_path + ".json", "w"))
'''


@pytest.mark.slow
def test_mtt_reference_head_to_head_plumbing(in_tmp):
    """The harness converts the experts to the reference's layout, hands it the start images and
    the settings, and evaluates what comes back (a stand-in plays the reference)."""
    import mtt_reference
    from conftest import make_trajectory

    from lit_distill.trajectory import expert_path

    if not (TEST_DATA / "MNIST").exists():
        pytest.skip(NO_MNIST)
    reference = in_tmp / "reference"
    reference.mkdir()
    (reference / "distill.py").write_text(
        FAKE_REFERENCE + "# --init_path --save_path --no_eval --seed\n"
    )
    (reference / "wandb.py").write_text("")
    folder = in_tmp / "bench/experts/mnist_mtt_convnet3_w32_e8_wcfg_e4"
    expert = make_trajectory(4, arch_kwargs={"width": 32}, image_shape=(1, 28, 28), dataset="mnist")
    expert.save(expert_path(folder, 0))
    argv = ["--reference", str(reference), "--seeds", "0", "--iterations", "2", "--runs", "1"]
    argv += ["--eval-epochs", "1", "--num-experts", "1", "--expert-epochs", "4"]
    argv += ["--data-root", str(TEST_DATA), "--work-dir", "bench", "--out", "ref.md"]
    out = mtt_reference.main(argv)
    pair = out["pairs"][0]
    assert pair["ref"].lr == 0.02 and pair["ref"].method == "mtt_reference"
    # Handed back unchanged, the start images come out as the start set's pixels.
    assert torch.allclose(pair["ref"].images, pair["start"].images, atol=1e-5)
    seen = json.loads(
        (in_tmp / "bench/mtt_reference/mnist_ipc1_seed0/reference.pt.json").read_text()
    )
    assert seen["experts"] == 1 and "--Iteration" in seen["argv"]
    assert seen["argv"][seen["argv"].index("--Iteration") + 1] == "1"  # it runs Iteration + 1
    assert seen["argv"][seen["argv"].index("--max_start_epoch") + 1] == "2"
    assert "| 0 |" in (in_tmp / "ref.md").read_text()


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(in_tmp):
    """The GPU check script, in its reduced CPU form, so that it works the day a GPU is lent."""
    import gpu_check

    out = in_tmp / "gpu.md"
    argv = ["--device", "cpu", "--quick", "--methods", "tgdd,mtt,dpd", "--work-dir", "bench"]
    result = gpu_check.main([*argv, "--out", str(out)])
    assert result["failed"] == 0, result["body"]
    assert [row[:3] for row in result["rows"]] == [
        [m, p, "ok"] for m in ("tgdd", "mtt", "dpd") for p in ("32-true", "bf16-mixed")
    ]
    text = out.read_text()
    for script in (
        "tgdd_speed.py",
        "unroll_memory.py",
        "expert_throughput.py",
        "eval_speed.py",
        "expert_batching.py",
    ):
        assert f"### {script}" in text
    assert "0 failures" in text


@pytest.mark.slow
@pytest.mark.skipif(glibc() is None, reason="the setting exists only with glibc on Linux")
def test_allocator_benchmark_runs_each_setting_in_its_own_process(in_tmp):
    import allocator_effect
    from gpu_check import random_cifar

    data = random_cifar(in_tmp / "cifar.npz", 130)  # TGDD draws 128 real images per class
    out = in_tmp / "alloc.md"
    argv = ["--data", str(data), "--width", "4", "--subset", "512", "--epochs", "2"]
    argv += ["--steps", "2", "--rounds", "1", "--out", str(out)]
    summary = allocator_effect.main(argv)
    assert set(summary) == {"experts", "tgdd"}
    for job in summary.values():  # the setting took effect in its process, and only there
        assert job["kept"] == {"kept": [True], "system": [False]}
        assert all(job["median"][side]["wall"] > 0 for side in ("kept", "system"))
    assert "| experts | kept / system |" in out.read_text()


@pytest.mark.slow
def test_evaluation_speed_benchmark_compares_both_ways(in_tmp):
    import eval_speed

    result = eval_speed.main(["--rounds", "1", "--epochs", "3", "--runs", "2", "--allocator",
                              "system"])  # fmt: skip
    assert result["difference"] < 0.02  # the same runs, trained one at a time or together
    assert set(result["median"]) == {"off", "auto", "joint"}
    assert result["testing"]["auto"] > 0 and result["testing"]["own"] > 0


def test_plain_loop_of_the_speed_benchmark_computes_the_engines_gradient():
    """The plain MTT-shaped loop the engine is timed against does the same computation."""
    import unroll_memory

    from lit_distill.distill.engine import FlatModel, Segment, StudentUnroll, plan_steps
    from lit_distill.models import build_model

    torch.manual_seed(0)
    net = build_model("convnet3", 10, (3, 16, 16), width=4).train()
    model = FlatModel(net)
    start = model.flatten()
    segment = Segment(start, start + 0.01 * torch.randn_like(start))
    images = torch.randn(10, 3, 16, 16, requires_grad=True)
    labels = torch.arange(10)
    lr = torch.tensor(0.01, requires_grad=True)
    plan = plan_steps(10, 10, 3, torch.Generator().manual_seed(0))
    result = StudentUnroll(model, lambda step: (images[step.indices], labels[step.indices]),
                           "unroll").run(segment, plan, lr, [images])  # fmt: skip
    flat = unroll_memory.FlatForward(build_model("convnet3", 10, (3, 16, 16), width=4).train())
    unroll_memory.plain_iteration(
        flat, segment, plan, lr, lambda step: (images[step.indices], labels[step.indices])
    )
    torch.testing.assert_close(images.grad, result.grads[0], rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(lr.grad, result.grad_lr, rtol=1e-4, atol=1e-8)


def test_arithmetic_benchmark_counts_what_each_side_computes(in_tmp):
    import tm_arithmetic

    out = in_tmp / "arithmetic.md"
    argv = ["--width", "4", "--ipc", "1", "--steps", "2", "--out", str(out)]
    counted = tm_arithmetic.main(argv)["results"]
    unroll, replay, plain = (counted[(mode, 2)] for mode in ("unroll", "replay", "plain"))
    # Unroll convolves as often as the plain loop and skips the start vector's gradient, which
    # the loop's backward computes and nothing uses; replay rebuilds every step once more.
    assert unroll["convolution"] == plain["convolution"] > 0
    assert replay["convolution"] > unroll["convolution"]
    assert unroll["flops"] < plain["flops"] < replay["flops"]
    assert "FLOPs / plain" in out.read_text()


@pytest.mark.slow
def test_expert_batching_benchmark_times_every_way():
    import expert_batching

    rows = expert_batching.main(["--widths", "4", "--experts", "2", "--batch", "8", "--steps", "1"])
    assert len(rows) == 1 and all(ms > 0 for ms in rows[0][2:5])


def test_inference_layout_benchmark_times_both_layouts_and_reports_the_choice():
    import inference_layout

    argv = ["--sizes", "1x8", "3x64", "--images", "20", "--rounds", "1", "--allocator", "system"]
    results = inference_layout.main(argv)
    assert [r["chosen"] for r in results] == [False, True]  # own at 8 px, channels-last at 64
    assert all(r["own"] > 0 and r["channels_last"] > 0 for r in results)


@pytest.mark.slow
def test_grouping_benchmark_times_both_ways_and_reports_the_choice():
    import eval_grouping

    argv = ["--configs", "digits:1", "--epochs", "1", "--rounds", "1", "--allocator", "system"]
    (result,) = eval_grouping.main(argv)
    assert result["pixels"] == 10 * 8 * 8 and result["auto"]  # digits IPC 1: together
    assert result["work"] == 10 * 8 * 8 * 32  # x the ConvNet's width
    assert result["off"] > 0 and result["together"] > 0


def test_first_convolution_benchmark_times_both_ways_and_reports_the_choice():
    import eval_conv

    argv = ["--configs", "3x4x1x8:8:3", "2x50x3x32:8", "--repeats", "1", "--rounds", "1"]
    small, large = eval_conv.main([*argv, "--allocator", "system"])
    assert small["used"] and not large["used"]  # one channel: patches; 51,200 px a run: grouped
    assert min(small["grouped"], small["unfold"], large["grouped"], large["unfold"]) > 0


def test_results_name_paths_relative_to_the_repository():
    from common import REPOSITORY, relative_paths

    text = f"data_root={REPOSITORY.parent}/shared/data, work_dir={REPOSITORY}/runs/bench"
    assert relative_paths(text) == "data_root=../shared/data, work_dir=runs/bench"
