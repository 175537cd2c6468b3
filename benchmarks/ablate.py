"""Settings against each other: one distillation config, several variants, several seeds.

Every variant is the config with a few of its model settings changed (``--variant
name:key=value,key=value``); each (variant, seed) distils in its own process (``--jobs`` at a
time, one thread each), and ONE ``SyntheticEvaluator`` then evaluates every final set, a random
real subset of the same IPC (run r on its own subset) and the start set of the first variant.
A variant may name other experts with ``experts=<expert config>``: they are trained first
(cached under ``<work-dir>/experts/``), like the config's own.

Reported per variant: accuracy over seeds x runs (mean ± std) and each seed's mean, the mean
loss of the last 20 iterations, the learned lr at the end, and the median time per iteration.

    python benchmarks/ablate.py --config benchmarks/configs/mtt_mnist_ipc1_cpu.yaml \\
        --variant base: --variant window2:max_start_epoch=2 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from common import command_line, emit, run_json_worker, section, table
from compare_methods import MethodRun, config_data, ensure_experts, model_args, run_args
from distill_accuracy import QUIET, SHARED_DATA, build_cli, cpu_threads

from lit_distill.cli import resolve_config
from lit_distill.evaluation import SyntheticEvaluator
from lit_distill.evaluation.evaluator import random_real_baseline
from lit_distill.export import load_synthetic
from lit_distill.main import main as lit_distill

BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Variant:
    """A name and the model settings it changes (YAML values)."""

    name: str
    settings: dict

    @classmethod
    def parse(cls, text: str) -> Variant:
        name, _, rest = text.partition(":")
        settings = {}
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            if not eq:
                raise SystemExit(f"--variant {text!r}: settings are key=value, comma separated")
            settings[key.strip()] = yaml.safe_load(value)
        if not name:
            raise SystemExit(f"--variant {text!r}: give it a name (name:key=value,...)")
        return cls(name, settings)

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.items()) or "the config's"


def variant_overrides(variant: Variant, args, data: list[str]) -> list[str]:
    """The lit-distill overrides of one variant (its experts trained first when named)."""
    settings = dict(variant.settings)
    experts = settings.pop("experts", None)
    out = run_args(MethodRun(args.config), "variant", args.ipc, args, data)
    if experts is not None:  # a later --model.init_args.trajectory_dir wins
        out.append(f"--model.init_args.trajectory_dir={train_experts(experts, args, data)}")
    return out + [f"--model.init_args.{k}={_value(v)}" for k, v in settings.items()]


def _value(value) -> str:
    """A setting as the command line takes it (strings bare: a quoted one is not a choice)."""
    return value if isinstance(value, str) else json.dumps(value)


def train_experts(expert_config: str, args, data: list[str]) -> str:
    """The folder of ``expert_config``'s experts under the work dir, trained when missing (as
    many as the distillation config uses)."""
    with open(resolve_config(expert_config), encoding="utf-8") as f:
        name = Path(yaml.safe_load(f)["model"]["init_args"]["trajectory_dir"]).name
    folder = str(args.work_dir / "experts" / name)
    count = args.num_experts or model_args(args.config)["num_experts"]
    if len(list(Path(folder).glob("expert_*.pt"))) < count:
        model = [f"--model.init_args.trajectory_dir={folder}"]
        model.append(f"--model.init_args.num_experts={count}")
        with cpu_threads(args.threads):
            lit_distill(["fit", "--config", resolve_config(expert_config), *QUIET, *data, *model])
    return folder


def run_job(spec: dict) -> dict:
    """One (variant, seed) distillation in its own process (compare_methods' worker). A run
    whose folder holds the result of the same spec is not run again (a rerun resumes)."""
    done_file = Path(spec["root"]) / "ablate_result.json"
    if done_file.is_file():
        saved = json.loads(done_file.read_text())
        if saved["spec"] == spec and Path(saved["result"]["export"]).is_file():
            return saved["result"]
    cmd = [sys.executable, str(BENCH / "compare_methods.py"), "--worker", json.dumps(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"] or 1)}
    result = run_json_worker(cmd, spec["method"], env)
    done_file.write_text(json.dumps({"spec": spec, "result": result}))
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    clock = time.perf_counter()
    data = config_data(args.config, args.data_root)[1]
    run = MethodRun(args.config)
    with cpu_threads(args.threads):
        experts = ensure_experts(run, args, data)
    specs = []
    for variant in args.variants:
        overrides = variant_overrides(variant, args, data)
        for seed in args.seeds:
            root = args.work_dir / "ablate" / Path(args.config).stem / f"{variant.name}_s{seed}"
            specs.append({
                "method": f"{variant.name} seed {seed}", "config": args.config,
                "threads": args.threads, "root": str(root), "accelerator": "cpu",
                "warmup": 3, "start": variant is args.variants[0] and seed == args.seeds[0],
                "overrides": [*overrides, f"--model.init_args.seed={seed}",
                              f"--seed_everything={seed}"],
            })  # fmt: skip
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(run_job, specs))
    results = evaluate(specs, done, args, data)
    minutes = (time.perf_counter() - clock) / 60
    body = report(results, args) + f"\nExperts: {experts}. Total wall time {minutes:.1f} min.\n"
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "accelerator", "width")}
    settings["variants"] = "; ".join(f"{v.name}: {v.describe()}" for v in args.variants)
    title = f"Settings compared: {Path(args.config).name}, IPC {args.ipc}"
    emit(section(title, command_line(__file__, argv), "cpu", settings, body), args.out)
    return results


def evaluate(specs: list[dict], done: list[dict], args, data: list[str]) -> dict:
    """Every final set, the start set and the random real subsets through one evaluator."""
    cli = build_cli(args.config, [*data], args.work_dir / "ablate" / "eval", "cpu")
    dm = cli.datamodule
    dm.setup("fit")
    hp = model_args(args.config)

    def evaluator_of(runs: int) -> SyntheticEvaluator:
        return SyntheticEvaluator(
            hp["arch"], hp.get("arch_kwargs"), args.protocol, runs, epochs=args.eval_epochs
        )

    evaluator = evaluator_of(args.runs)
    facts = (dm.test_set, dm.preprocess(), dm.num_classes, dm.image_shape, "cpu")
    per_variant: dict[str, list] = {}
    with cpu_threads(args.threads):
        for spec, out in zip(specs, done, strict=True):
            name = spec["method"].rsplit(" seed ", 1)[0]
            result = evaluator.evaluate(load_synthetic(out["export"]), *facts)
            per_variant.setdefault(name, []).append((result, out))
            if spec["start"]:
                start = evaluator.evaluate(load_synthetic(out["start_export"]), *facts)
        # The baseline's own subsets vary most at small IPC: it gets its own number of runs.
        runs = args.baseline_runs
        real = random_real_baseline(dm.train_set, args.ipc, dm.zca, evaluator.seed, runs)
        baseline = evaluator_of(runs).evaluate(real, *facts)
    return {"variants": per_variant, "start": start, "random_real": baseline,
            "protocol": evaluator.protocol}  # fmt: skip


def report(results: dict, args) -> str:
    rows = []
    for variant in args.variants:
        entries = results["variants"][variant.name]
        accs = [a for r, _ in entries for a in r.accuracies]
        seeds = ", ".join(f"{100 * r.mean:.1f}" for r, _ in entries)
        outs = [o for _, o in entries]
        acc = f"{100 * np.mean(accs):.2f} ± {100 * np.std(accs):.2f}"
        rows.append([
            variant.name, variant.describe(), acc,
            seeds, f"{np.mean([o['loss_tail'] for o in outs]):.3f}",
            _lr(outs), f"{np.median([o['ms'] for o in outs]):,.0f}",
        ])  # fmt: skip
    for name in ("random_real", "start"):
        r = results[name]
        rows.append([name, "", f"{100 * r.mean:.2f} ± {100 * r.std:.2f}", "", "", "", ""])
    headers = ["variant", "settings", "acc (%)", "per seed (%)", "loss, last 20", "final lr",
               "ms / iteration"]  # fmt: skip
    p = results["protocol"]
    return (
        f"{table(headers, rows)}\n\nAccuracy over {len(args.seeds)} seeds x {args.runs} runs "
        f"(protocol {p.name}: {p.epochs} epochs, lr {p.lr or 'learned'}); random real: "
        f"{args.baseline_runs} runs, each on its own subset; start: the set the first variant's "
        "first seed starts from.\n"
    )


def _lr(outs: list[dict]) -> str:
    lrs = [o["lr"] for o in outs if o.get("lr") is not None]
    return f"{np.mean(lrs):.4g}" if lrs else "—"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--config", required=True, help="a distillation config (shipped name or path)")
    add("--variant", action="append", default=[], help="name:key=value,... (model settings)")
    add("--ipc", type=int, default=None, help="images per class (default: the config's)")
    add("--seeds", default="0,1,2", help="comma list of distillation seeds")
    add("--iterations", type=int, default=0, help="distillation iterations (0: the config's)")
    add("--runs", type=int, default=5, help="evaluation networks per set")
    add("--baseline-runs", type=int, default=20, help="random real subsets (one network each)")
    add("--protocol", default="short", help="evaluation protocol")
    add("--eval-epochs", type=int, default=None, help="override of the protocol's epochs")
    add("--num-experts", type=int, default=0, help="experts (0: the config's)")
    add("--expert-epochs", type=int, default=0, help="expert epochs (0: the expert config's)")
    add("--jobs", type=int, default=2, help="distillations at a time (one thread each)")
    add("--threads", type=int, default=1, help="CPU threads of each process")
    add("--data-root", type=Path, default=SHARED_DATA, help="root of the shared datasets")
    add("--work-dir", type=Path, default=Path("runs/bench"), help="experts cache, run folders")
    add("--out", type=Path, default=None, help="append the result section to this Markdown file")
    args = parser.parse_args(argv)
    args.variants = [Variant.parse(v) for v in args.variant] or [Variant("base", {})]
    if len({v.name for v in args.variants}) != len(args.variants):
        raise SystemExit("--variant names must differ")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if args.ipc is None:  # an IPC-10 config runs at IPC 10 unless told otherwise
        with open(resolve_config(args.config), encoding="utf-8") as f:
            args.ipc = int(yaml.safe_load(f)["model"]["init_args"].get("ipc", 1))
    args.width, args.accelerator = 0, "cpu"
    return args


if __name__ == "__main__":
    main()
