"""lit-distill's MTT against the public MTT code, on the same experts, start images and settings.

Both sides distil from the SAME expert trajectories (lit-distill's files, converted to the
reference's ``replay_buffer_0.pt`` layout), the SAME start images (lit-distill's initial set,
handed to the reference) and the same hyper-parameters; then ONE ``SyntheticEvaluator`` (same
network, protocol, seeds and runs) evaluates both final sets, the start set and a random real
subset of the same IPC. Each distillation seed gives one pair; the table reports every pair and
the mean over seeds.

The reference is a checkout of github.com/GeorgeCazenavette/mtt-distillation (commit 50dccea)
that you patch yourself, outside this repository, so that it runs on a CPU without an account
or a download. ``--reference`` is its folder. The changes, all small:

1. ``utils.py``, ``get_dataset``: an ``MNIST`` branch like the DC code's (1 channel, 28 px,
   mean 0.1307, std 0.3081, ``torchvision.datasets.MNIST(data_path, download=False)``) and,
   for CIFAR-10 from this project's ``.npz`` copy, a ``CIFAR10`` branch that reads
   ``x_train``/``y_train``/``x_test``/``y_test`` when ``data_path`` ends in ``.npz``
   (normalised with the reference's mean and std; only shapes are used, see below).
2. ``utils.py``, ``get_network``: remove the reseed of torch's global RNG from the clock, so a
   run is reproducible from its seed.
3. ``distill.py``: four arguments: ``--seed`` (seeds torch, numpy and random once, after
   parsing), ``--init_path`` (after the initialisation, overwrite ``image_syn`` with this file's
   tensor: start images in network input space), ``--no_eval`` (empty evaluation schedule: the
   evaluation and image-saving block never runs; it calls ``.cuda()``), ``--save_path`` (after
   the loop, ``torch.save`` a dict with ``images`` (``image_syn``), ``labels``, ``lr``
   (``syn_lr.item()``) and ``losses`` (each iteration's ``grand_loss.item()``)).
4. A ``wandb.py`` next to ``distill.py`` that stands in for wandb: ``init(config=args)`` keeps
   ``config._items = vars(args)``, ``run.name`` is a string, and ``log``, ``finish``,
   ``Histogram`` and ``Image`` do nothing.

Nothing else changes: the student loop, its DSA, ``ReparamModule``, the loss and the optimisers
are the reference's own. The reference runs ``Iteration + 1`` updates; it is given
``iterations - 1`` so both sides make the same number. It walks its experts in a shuffled
order, lit-distill draws one at random per iteration (the same distribution).

    python benchmarks/mtt_reference.py --reference ../ref/mtt-distillation
    python benchmarks/mtt_reference.py --reference ../ref/mtt-distillation --dataset cifar10 \\
        --ipc 10 --seeds 0,1 --iterations 500
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import RunTrace, command_line, emit, section, table
from compare_methods import DATA_ARGS, MethodRun, ensure_experts, model_args, run_args
from distill_accuracy import SHARED_DATA, build_cli, cpu_threads

from lit_distill.evaluation import EvalResult, SyntheticEvaluator
from lit_distill.evaluation.evaluator import random_real_baseline
from lit_distill.export import SyntheticData
from lit_distill.trajectory import Trajectory, list_experts

BENCH = Path(__file__).resolve().parent
DATASETS = ("mnist", "cifar10")
REFERENCE_DATASET = {"mnist": "MNIST", "cifar10": "CIFAR10"}
#: lit-distill setting -> the reference's flag (same meaning and units).
FLAGS = {
    "ipc": "--ipc",
    "syn_steps": "--syn_steps",
    "expert_epochs": "--expert_epochs",
    "max_start_epoch": "--max_start_epoch",
    "lr_images": "--lr_img",
    "lr_lr": "--lr_lr",
    "lr_teacher": "--lr_teacher",
    "batch_syn": "--batch_syn",
}
#: The reference names its ConvNet-3 variants by width (``get_network``).
REFERENCE_MODELS = {32: "ConvNetW32", 64: "ConvNetW64", 128: "ConvNet", 256: "ConvNetW256"}


def reference_buffer(experts: Sequence[Path], folder: Path) -> Path:
    """lit-distill trajectories as the reference's ``replay_buffer_0.pt``: a list of experts,
    each a list of epochs, each the list of parameter tensors in the reference ConvNet's order.

    lit-distill's ConvNet names ``features.{i}.conv`` / ``features.{i}.norm`` are the
    reference's ``features.{4i}`` / ``features.{4i+1}`` (conv, norm, relu, pool per block), and
    both list a block's conv then norm parameters: the order is the same, checked here.
    """
    trajectories = []
    for path in experts:
        trajectory = Trajectory.load(path)
        expected = _reference_order(trajectory.param_names)
        if list(trajectory.param_names) != expected:
            raise ValueError(f"{path}: parameter order {trajectory.param_names} is not {expected}")
        sizes = [int(np.prod(s)) for s in trajectory.param_shapes]
        epochs = []
        for row in trajectory.params.float():
            pieces = row.split(sizes)
            epochs.append(
                [p.reshape(s).clone() for p, s in zip(pieces, trajectory.param_shapes, strict=True)]
            )
        trajectories.append(epochs)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "replay_buffer_0.pt"
    torch.save(trajectories, out)
    return out


def _reference_order(names: Sequence[str]) -> list[str]:
    """``names`` sorted as the reference's ConvNet lists them (block by block, conv first)."""

    def key(name: str) -> tuple:
        parts = name.split(".")
        if parts[0] == "classifier":
            return (1, 0, 0, parts[-1] == "bias")
        return (0, int(parts[1]), parts[2] == "norm", parts[-1] == "bias")

    return sorted(names, key=key)


def run_ours(config: str, overrides: list[str], root: Path, seed: int, iterations: int) -> dict:
    """lit-distill's MTT for ``iterations``: its start and final sets, losses, lrs, seconds."""
    args = [*overrides, f"--model.init_args.seed={seed}", f"--seed_everything={seed}"]
    args.append(f"--model.init_args.iterations={iterations}")
    cli = build_cli(config, args, root, "cpu")
    trace = RunTrace()
    cli.trainer.callbacks.append(trace)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return {"cli": cli, "start": trace.start, "final": cli.model.synthetic_data(), "log": trace}


def reference_args(hp: dict, args: argparse.Namespace, buffer_root: Path) -> list[str]:
    """The reference's command-line flags for lit-distill's hyper-parameters ``hp``."""
    width = (hp.get("arch_kwargs") or {}).get("width", 128)
    if hp["arch"] not in ("convnet3", "convnet") or width not in REFERENCE_MODELS:
        raise ValueError(f"the reference has no network like {hp['arch']} width {width}")
    flags = [
        "--dataset", REFERENCE_DATASET[args.dataset], "--model", REFERENCE_MODELS[width],
        "--buffer_path", str(buffer_root), "--Iteration", str(hp["iterations"] - 1),
        "--no_eval", "--pix_init", "real", "--dsa", "True",
        "--dsa_strategy", hp["augment"],
    ]  # fmt: skip
    for key, flag in FLAGS.items():
        if hp.get(key) is not None:
            flags += [flag, f"{hp[key]:g}" if isinstance(hp[key], float) else str(hp[key])]
    if hp["augment"] == "none":
        flags += ["--dsa", "False"]
    return flags


def start_reference(
    reference: Path, flags: list[str], init: Path, out: Path, seed: int, data: str, threads: int
) -> subprocess.Popen:
    """Launch the patched reference in its own folder (its ``wandb.py`` stands in for wandb)."""
    cmd = [sys.executable, "distill.py", *flags, "--data_path", data, "--seed", str(seed)]
    cmd += ["--init_path", str(init.resolve()), "--save_path", str(out.resolve())]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log = open(out.with_suffix(".log"), "w", encoding="utf-8")  # noqa: SIM115 (closed by the OS)
    return subprocess.Popen(cmd, cwd=reference, env=env, stdout=log, stderr=subprocess.STDOUT)


def reference_set(out: Path, ours: SyntheticData, preprocess: torch.nn.Module) -> SyntheticData:
    """The reference's final images (network inputs) as a lit-distill export object."""
    saved = torch.load(out, weights_only=True)
    with torch.no_grad():
        pixels = preprocess.inverse(saved["images"].float())
    if not torch.equal(saved["labels"].long(), ours.labels):
        raise ValueError("the reference's labels are not in lit-distill's class-major order")
    return replace(ours, images=pixels, lr=float(saved["lr"]), method="mtt_reference")


def check_reference(reference: Path) -> None:
    """A clear error when ``reference`` is not a patched MTT checkout."""
    distill = reference / "distill.py"
    if not distill.is_file():
        raise SystemExit(f"--reference {reference}: no distill.py (a checkout of mtt-distillation)")
    text = distill.read_text(encoding="utf-8")
    missing = [f for f in ("--init_path", "--save_path", "--no_eval", "--seed") if f not in text]
    if missing or not (reference / "wandb.py").is_file():
        raise SystemExit(
            f"--reference {reference} is not patched: missing {missing or 'wandb.py'} (the "
            "changes are listed in this script's docstring)"
        )


def head_to_head(seed: int, args: argparse.Namespace, run: MethodRun, data_args: list[str]):
    """One seed: both distillations (in parallel, one thread each), then their sets."""
    root = args.work_dir / "mtt_reference" / f"{args.dataset}_ipc{args.ipc}_seed{seed}"
    root.mkdir(parents=True, exist_ok=True)
    overrides = run_args(run, "mtt", args.ipc, args, data_args) + args.set
    # The start set, from a one-iteration run (the initialisation depends only on the seed).
    probe = run_ours(run.config, overrides, root / "probe", seed, 1)
    hp = dict(probe["cli"].model.hparams)
    hp["iterations"] = args.iterations or model_args(run.config)["iterations"]
    preprocess = probe["cli"].model.preprocess
    init = root / "init.pt"
    torch.save(preprocess(probe["start"].images).contiguous(), init)
    experts = list_experts(hp["trajectory_dir"])[: hp["num_experts"]]
    buffer_root = root / "buffers"
    model_folder = REFERENCE_MODELS[(hp.get("arch_kwargs") or {}).get("width", 128)]
    reference_buffer(experts, buffer_root / REFERENCE_DATASET[args.dataset] / model_folder)
    out = root / "reference.pt"
    data_root = args.data_root.resolve()  # the reference runs in its own folder
    data = str(data_root if args.dataset == "mnist" else data_root / "cifar10/cifar10.npz")
    flags = reference_args(hp, args, buffer_root.resolve())
    clock = time.perf_counter()
    proc = start_reference(args.reference, flags, init, out, seed, data, args.threads)
    ours = run_ours(run.config, overrides, root / "ours", seed, hp["iterations"])
    if proc.wait() != 0:
        raise RuntimeError(f"the reference failed: see {out.with_suffix('.log')}")
    ref_seconds = time.perf_counter() - clock
    if not torch.allclose(ours["start"].images, probe["start"].images):
        raise RuntimeError("the two lit-distill runs of one seed started from different images")
    ref = reference_set(out, ours["final"], preprocess)
    saved = torch.load(out, weights_only=True)
    return {
        "ours": ours, "ref": ref, "ref_losses": saved["losses"], "start": ours["start"],
        "ref_seconds": ref_seconds, "flags": flags, "hp": hp,
    }  # fmt: skip


def tail(values: Sequence[float], n: int = 20) -> float:
    return float(np.mean(values[-n:])) if values else float("nan")


def pct(result: EvalResult) -> str:
    return f"{100 * result.mean:.2f} ± {100 * result.std:.2f}"


def report(pairs: dict[int, dict], results: dict, baseline: EvalResult, args) -> str:
    rows, gaps = [], []
    for seed, pair in pairs.items():
        ours, ref, start = results[seed]
        gap = 100 * (ours.mean - ref.mean)
        gaps.append(gap)
        log = pair["ours"]["log"]
        rows.append([
            seed, pct(ours), pct(ref), f"{gap:+.2f}", pct(start),
            f"{log.loss_tail():.3f}", f"{tail(pair['ref_losses']):.3f}",
            f"{log.lrs[-1]:.5f}", f"{pair['ref'].lr:.5f}",
            f"{log.seconds:.0f}", f"{pair['ref_seconds']:.0f}",
        ])  # fmt: skip
    ours_all = [a for seed in pairs for a in results[seed][0].accuracies]
    ref_all = [a for seed in pairs for a in results[seed][1].accuracies]
    headers = [
        "seed", "lit-distill (%)", "reference (%)", "difference (pts)", "start set (%)",
        "lit-distill loss, last 20", "reference loss, last 20", "lit-distill lr",
        "reference lr", "lit-distill fit (s)", "reference process (s)",
    ]  # fmt: skip
    summary = (
        f"Over {len(pairs)} seeds x {args.runs} evaluation runs: lit-distill "
        f"{100 * np.mean(ours_all):.2f} ± {100 * np.std(ours_all):.2f} %, reference "
        f"{100 * np.mean(ref_all):.2f} ± {100 * np.std(ref_all):.2f} %, difference of the means "
        f"{np.mean(gaps):+.2f} points (target: no less than -1); random real {pct(baseline)} % "
        f"({len(baseline.accuracies)} subsets)."
    )
    pair = next(iter(pairs.values()))
    p = next(iter(results.values()))[0]
    hp = pair["hp"]
    listed = ", ".join(f"{k}={hp[k]}" for k in FLAGS)
    notes = (
        f"Settings (both sides): {listed}, iterations={hp['iterations']}, arch={hp['arch']} "
        f"{hp['arch_kwargs']}, augment={hp['augment']}; reference flags: "
        f"`{' '.join(_relative(pair['flags']))}`. Evaluation: protocol {p.protocol}, "
        f"{args.runs} runs of "
        f"{p.arch} per set. The two distillations of a seed ran side by side, one thread each "
        "(the reference's seconds include its start-up: reading the data, the experts)."
    )
    return f"{table(headers, rows)}\n\n{summary}\n\n{notes}\n"


def _relative(flags: list[str]) -> list[str]:
    """The flags with this machine's absolute paths shown relative to the working folder."""
    here = Path.cwd()
    return [
        str(Path(f).relative_to(here)) if Path(f).is_absolute() and Path(f).is_relative_to(here)
        else f
        for f in flags
    ]  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--reference", type=Path, required=True, help="the patched mtt-distillation checkout")
    add("--dataset", default="mnist", choices=DATASETS)
    add("--ipc", type=int, default=1, help="images per class (its mtt_<dataset>_ipc<N>_cpu.yaml)")
    add("--seeds", default="0,1,2", help="comma list of distillation seeds")
    add("--iterations", type=int, default=0, help="distillation iterations (0: the config's)")
    add("--runs", type=int, default=5, help="evaluation networks per set")
    add("--baseline-runs", type=int, default=20, help="random real subsets (one network each)")
    add("--protocol", default="short", help="evaluation protocol")
    add("--eval-epochs", type=int, default=None, help="override of the protocol's epochs")
    add("--set", action="append", default=[], help="extra lit-distill override, both sides")
    add("--width", type=int, default=0, help=argparse.SUPPRESS)
    add("--expert-epochs", type=int, default=0, help="expert epochs (0: the expert config's)")
    add("--num-experts", type=int, default=0, help="experts (0: the config's)")
    add("--threads", type=int, default=1, help="CPU threads of each side")
    add("--data-root", type=Path, default=SHARED_DATA, help="root of the shared datasets")
    add("--work-dir", type=Path, default=Path("runs/bench"), help="experts cache, run folders")
    add("--out", type=Path, default=None, help="append the result section to this Markdown file")
    args = parser.parse_args(argv)
    args.set = [s if s.startswith("--") else f"--model.init_args.{s}" for s in args.set]
    args.accelerator = "cpu"
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    args.reference = args.reference.resolve()
    check_reference(args.reference)
    clock = time.perf_counter()
    run = MethodRun(str(BENCH / "configs" / f"mtt_{args.dataset}_ipc{args.ipc}_cpu.yaml"))
    if not Path(run.config).is_file():
        raise SystemExit(f"no CPU config for MTT on {args.dataset} at IPC {args.ipc}: {run.config}")
    data_args = [a.format(root=args.data_root) for a in DATA_ARGS[args.dataset]]
    with cpu_threads(args.threads):
        experts = ensure_experts(run, args, data_args)
        pairs = {int(s): head_to_head(int(s), args, run, data_args) for s in args.seeds.split(",")}
        cli = next(iter(pairs.values()))["ours"]["cli"]
        hp = model_args(run.config)
        evaluator = SyntheticEvaluator(
            hp["arch"], hp.get("arch_kwargs"), args.protocol, args.runs, epochs=args.eval_epochs
        )
        dm = cli.datamodule
        facts = (dm.test_set, cli.model.preprocess, dm.num_classes, dm.image_shape, "cpu")
        results = {
            seed: tuple(
                evaluator.evaluate(data, *facts)
                for data in (pair["ours"]["final"], pair["ref"], pair["start"])
            )
            for seed, pair in pairs.items()
        }
        runs = args.baseline_runs
        real = random_real_baseline(dm.train_set, args.ipc, cli.model.zca, 0, runs)
        baseline = SyntheticEvaluator(
            hp["arch"], hp.get("arch_kwargs"), args.protocol, runs, epochs=args.eval_epochs
        ).evaluate(real, *facts)
    minutes = (time.perf_counter() - clock) / 60
    body = report(pairs, results, baseline, args)
    body += f"\nExperts: {experts}. Total wall time {minutes:.1f} min.\n"
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "accelerator", "width")}
    settings["reference"] = "the patched checkout (see the script's docstring)"
    title = f"MTT: lit-distill against the reference code ({args.dataset}, IPC {args.ipc})"
    emit(section(title, command_line(__file__, argv), "cpu", settings, body), args.out)
    return {"pairs": pairs, "results": results, "baseline": baseline}


if __name__ == "__main__":
    main()
