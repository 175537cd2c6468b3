"""Every method on the same data: accuracy (one evaluation protocol), time and memory per iteration.

For each dataset and IPC, each method runs its own shipped (or CPU-sized benchmark) config
through ``LitDistillCLI``, in its own subprocess (so that memory peaks do not mix), with the
configs' callbacks and logger removed. Each method's experts are trained first with the
config's expert config (cached under ``<work-dir>/experts/``; methods sharing an expert config
share the experts). The parent then evaluates every final set, and a random real subset of the
same IPC (run r on its own subset), with ONE ``SyntheticEvaluator``: same network, protocol,
seeds and runs.

Per method, the worker also measures each iteration (``on_train_batch_start`` to
``on_train_batch_end``: the step, its backward and the guarded update; the first ``--warmup``
dropped, median reported) and the memory from the start of training to its end: peak resident
set (``VmHWM``, reset at the start) minus the resident set at the start on the CPU,
``max_memory_allocated`` minus the allocation at the start on CUDA.

DM is TGDD's config with ``--model lit_distill.distill.DMModule``, its images in normalised
space with DM's own image lr (1). TGDD's image lr follows its code's rule, 0.01 x IPC.

    python benchmarks/compare_methods.py                          # digits + MNIST, IPC 1, CPU
    python benchmarks/compare_methods.py --datasets mnist --ipc 1,10 --methods mtt,datm
    python benchmarks/compare_methods.py --datasets mnist --ipc 10 --reuse  # keep finished runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from common import RunTrace, command_line, emit, median, run_json_worker, section, table
from distill_accuracy import QUIET, SHARED_DATA, build_cli, cpu_threads
from distill_cost import MIB, CostMeter

from lit_distill.cli import resolve_config
from lit_distill.evaluation import EvalResult, SyntheticEvaluator
from lit_distill.evaluation.evaluator import random_real_baseline
from lit_distill.export import load_synthetic, save_synthetic
from lit_distill.main import main as lit_distill

OUTCOME = "outcome.json"  # a finished run's costs, beside its exported set (for --reuse)

BENCH = Path(__file__).resolve().parent
CPU_CONFIGS = BENCH / "configs"


@dataclass(frozen=True)
class MethodRun:
    """Which config a method runs on a dataset, and what it changes in it.

    ``config`` may hold ``{ipc}``: trajectory matching has one config per IPC, as its reference
    settings do (the start window, the number of steps), and each run picks its own.
    """

    config: str
    overrides: tuple[str, ...] = ()
    experts: bool = True  # False: the method uses none (DM run from a TGDD config)

    def at(self, ipc: int) -> MethodRun:
        """This run's config for ``ipc`` images per class."""
        return replace(self, config=self.config.format(ipc=ipc))


DM = ("--model=lit_distill.distill.DMModule", "--model.init_args.lr_images=1.0")


def dm_run(tgdd: MethodRun) -> MethodRun:
    """DM on a TGDD config: its own class, DM's image lr, no experts."""
    return MethodRun(tgdd.config, DM, experts=False)


METHODS = ("tgdd", "dm", "mtt", "datm", "mct", "dpd")


#: Methods whose CPU configs are per IPC (``<method>_<dataset>_ipc<N>_cpu.yaml``).
PER_IPC = ("mtt", "datm", "mct", "dpd")


def cpu_runs(dataset: str) -> dict[str, MethodRun]:
    """The CPU-sized configs of ``dataset`` in ``benchmarks/configs/``: ``tgdd_<dataset>_cpu.yaml``
    (any IPC) and ``<method>_<dataset>_ipc<N>_cpu.yaml`` for trajectory matching."""
    runs = {
        m: MethodRun(str(CPU_CONFIGS / f"{m}_{dataset}_{'ipc{ipc}_' * (m in PER_IPC)}cpu.yaml"))
        for m in METHODS
        if m != "dm"
    }
    runs["dm"] = dm_run(runs["tgdd"])
    return {m: runs[m] for m in METHODS}


DATASETS: dict[str, dict[str, MethodRun]] = {
    "digits": {m: MethodRun(f"{m}_digits.yaml") for m in METHODS if m != "dm"},
    "mnist": cpu_runs("mnist"),
    "cifar10": cpu_runs("cifar10"),
}
DATASETS["digits"]["dm"] = dm_run(DATASETS["digits"]["tgdd"])
DATASETS["digits"] = {m: DATASETS["digits"][m] for m in METHODS}
#: ``--data`` overrides that point a dataset's configs at ``--data-root`` ("{root}").
DATA_ARGS = {
    "mnist": ("--data.init_args.root={root}",),
    "cifar10": ("--data.init_args.path={root}/cifar10/cifar10.npz",),
}
#: The dataset of a config, by its data class (for :func:`config_data`).
DATA_CLASSES = {"MNISTDataModule": "mnist", "NpzDataModule": "cifar10"}


def model_args(config: str) -> dict:
    with open(resolve_config(config), encoding="utf-8") as f:
        return yaml.safe_load(f)["model"]["init_args"]


def config_data(config: str, root: Path | str) -> tuple[dict, list[str]]:
    """A config's ``data`` section and the overrides that root it at ``root``."""
    with open(resolve_config(config), encoding="utf-8") as f:
        data = yaml.safe_load(f)["data"]
    dataset = DATA_CLASSES.get(data["class_path"].rsplit(".", 1)[-1])
    return data, [a.format(root=root) for a in DATA_ARGS.get(dataset, ())]


def arch_kwargs(run: MethodRun, args: argparse.Namespace) -> dict:
    """The network options of a run: its config's, with ``--width``."""
    kwargs = dict(model_args(run.config).get("arch_kwargs") or {})
    return {**kwargs, "width": args.width} if args.width else kwargs


def experts_of(run: MethodRun, args: argparse.Namespace) -> tuple[str, str, int] | None:
    """(expert config, cached trajectory folder, number) of a method's config, if it has any."""
    hp = model_args(run.config)
    if not run.experts or "expert_config" not in hp:
        return None
    name = Path(hp["trajectory_dir"]).name
    if args.width or args.expert_epochs:  # other experts than the configs': their own folder
        name += f"_w{args.width or 'cfg'}_e{args.expert_epochs or 'cfg'}"
    count = args.num_experts or hp["num_experts"]
    return hp["expert_config"], str(args.work_dir / "experts" / name), count


def ensure_experts(run: MethodRun, args: argparse.Namespace, data_args: list[str]) -> str:
    found = experts_of(run, args)
    if found is None:
        return "none"
    config, folder, count = found
    done = len(list(Path(folder).glob("expert_*.pt")))
    if done < count:
        model = [f"--model.init_args.trajectory_dir={folder}"]
        model.append(f"--model.init_args.num_experts={count}")
        model.append(f"--model.init_args.arch_kwargs={json.dumps(arch_kwargs(run, args))}")
        if args.expert_epochs:
            model.append(f"--model.init_args.epochs={args.expert_epochs}")
        lit_distill(["fit", "--config", resolve_config(config), *QUIET, *data_args, *model])
    return f"{count} from `{Path(config).name}` in `{folder}`"


def run_args(run: MethodRun, method: str, ipc: int, args: argparse.Namespace, data_args) -> list:
    """The ``lit-distill`` overrides of one method's run."""
    hp = model_args(run.config)
    out = [*data_args, *run.overrides, f"--model.init_args.ipc={ipc}"]
    if args.iterations:
        out.append(f"--model.init_args.iterations={args.iterations}")
    if method == "tgdd":  # TGDD code: lr_img = 0.01 x IPC (configs hold the IPC-1 value)
        out.append(f"--model.init_args.lr_images={hp['lr_images'] / hp['ipc'] * ipc:g}")
    out.append(f"--model.init_args.arch_kwargs={json.dumps(arch_kwargs(run, args))}")
    found = experts_of(run, args)
    if found is not None:
        out += [f"--model.init_args.trajectory_dir={found[1]}"]
        out += [f"--model.init_args.num_experts={found[2]}"]
        out += ["--model.init_args.train_missing_experts=false"]
    return out


def worker(spec: dict) -> dict:
    """One method's distillation in this process: export, per-iteration times and memory."""
    root = Path(spec["root"])
    with cpu_threads(spec["threads"]):
        cli = build_cli(spec["config"], spec["overrides"], root, spec["accelerator"])
        meter, trace = CostMeter(), RunTrace()
        cli.trainer.callbacks += [meter, trace]
        clock = time.perf_counter()
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        seconds = time.perf_counter() - clock
    times = meter.times[spec["warmup"] :]
    start = None
    if spec.get("start"):  # the set before the first iteration, for an evaluation of it
        start = str(save_synthetic(root / "synthetic_start.pt", trace.start, grid=False))
    outcome = {
        "export": str(root / "synthetic_final.pt"),
        "start_export": start,
        "loss_tail": trace.loss_tail(),
        "lr": trace.lrs[-1] if trace.lrs else None,
        "ms": 1000 * median(times) if times else float("nan"),
        "delta": meter.peak_bytes - meter.start_bytes,
        "peak_kind": meter.peak_kind,
        "seconds": seconds,
        "iterations": int(cli.model.iteration),
    }
    (root / OUTCOME).write_text(json.dumps(outcome))
    return outcome


def finished(spec: dict) -> dict | None:
    """``--reuse``: the outcome of a finished run of the same settings in the spec's folder.

    A run counts as finished when its final set was exported; it is the same run when the
    seed, model and data of its saved ``config.yaml`` equal the ones this spec would use.
    Runs from before ``outcome.json`` was written keep their set but not their costs.
    """
    root = Path(spec["root"])
    saved, final = root / "config.yaml", root / "synthetic_final.pt"
    if not (saved.exists() and final.exists()):
        return None
    cli = build_cli(spec["config"], spec["overrides"], root, spec["accelerator"])
    wanted = yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))
    found = yaml.safe_load(saved.read_text())
    if any(wanted.get(k) != found.get(k) for k in ("seed_everything", "model", "data")):
        return None
    if (root / OUTCOME).exists():
        return {**json.loads((root / OUTCOME).read_text()), "reused": True}
    nan = float("nan")
    return {"export": str(final), "start_export": None, "reused": True,
            "ms": nan, "delta": nan, "seconds": nan}  # fmt: skip


def run_worker(spec: dict) -> dict:
    if spec.get("reuse") and (done := finished(spec)) is not None:
        return done
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"] or os.cpu_count())}
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    return run_json_worker(cmd, spec["method"], env)


def evaluate(dataset: str, ipc: int, runs: dict[str, dict], args, data_args) -> dict:
    """Every method's final set and the random real baseline through one evaluator."""
    first = next(iter(DATASETS[dataset].values())).at(ipc)
    cli = build_cli(first.config, [*data_args], args.work_dir / "eval", args.accelerator)
    dm = cli.datamodule
    dm.setup("fit")
    hp = model_args(first.config)
    kwargs = arch_kwargs(first, args)
    evaluator = SyntheticEvaluator(
        hp["arch"], kwargs, args.protocol, args.runs, epochs=args.eval_epochs
    )
    preprocess = dm.preprocess()
    facts = (dm.test_set, preprocess, dm.num_classes, dm.image_shape, args.device)
    results = {m: evaluator.evaluate(load_synthetic(r["export"]), *facts) for m, r in runs.items()}
    # The baseline's subsets vary most at small IPC: it gets its own number of runs.
    real = random_real_baseline(dm.train_set, ipc, dm.zca, evaluator.seed, args.baseline_runs)
    baseline = SyntheticEvaluator(
        hp["arch"], kwargs, args.protocol, args.baseline_runs, epochs=args.eval_epochs
    )
    results["random_real"] = baseline.evaluate(real, *facts)
    return {
        "results": results,
        "protocol": evaluator.protocol,
        "arch": (hp["arch"], hp.get("arch_kwargs")),
    }


def pct(result: EvalResult) -> str:
    return f"{100 * result.mean:.2f} ± {100 * result.std:.2f}"


def report(outcomes: list[tuple[str, int, dict, dict]], args, notes: list[str], minutes) -> str:
    rows, raw = [], []
    for dataset, ipc, runs, evaluation in outcomes:
        res = evaluation["results"]
        for method in [*runs, "random_real"]:
            r = runs.get(method)
            cost = ["—", "—", "—"] if r is None else [r["ms"], r["delta"] / MIB, r["seconds"]]
            cost = ["—" if v != v else v for v in cost]  # NaN: reused, costs not recorded
            if r is not None and r.get("reused"):
                kept = "" if r["seconds"] == r["seconds"] else ", costs not recorded"
                notes.append(
                    f"{dataset} IPC {ipc} {method}: reused `{Path(r['export']).parent}`{kept}"
                )
            rows.append([dataset, ipc, method, pct(res[method]), *cost])
            accs = ", ".join(f"{100 * a:.2f}" for a in res[method].accuracies)
            raw.append(f"{dataset} IPC {ipc} {method}: {accs}")
        p = evaluation["protocol"]
        notes.append(
            f"{dataset} IPC {ipc}: evaluated with protocol {p.name} ({p.epochs} epochs, batch "
            f"{p.batch_size}, lr {'learned, else 0.01' if p.lr is None else p.lr}), "
            f"{args.runs} runs of {evaluation['arch'][0]} {evaluation['arch'][1]}"
        )
    headers = ["dataset", "IPC", "method", "acc (%)", "ms / iteration", "peak − start (MiB)"]
    headers.append("fit (s)")
    configs = "; ".join(
        f"{d}: " + ", ".join(f"{m} `{Path(r.config).name}`{' (DM)' if r.overrides else ''}"
                             for m, r in DATASETS[d].items())
        for d in args.datasets.split(",")
    ).replace("{ipc}", "<IPC>")  # fmt: skip
    return (
        f"{table(headers, rows)}\n\nConfigs: {configs}. Notes: {'; '.join(notes)}. Total wall "
        f"time {minutes:.1f} min.\n\nAccuracy per run (%): " + "; ".join(raw) + "\n"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--datasets", default="digits,mnist", help=f"comma list of {sorted(DATASETS)}")
    add("--methods", default=",".join(METHODS), help="comma list of methods")
    add("--ipc", default="1", help="comma list of images per class")
    add("--runs", type=int, default=3, help="evaluation networks per set")
    add("--baseline-runs", type=int, default=10, help="random real subsets (one network each)")
    add("--jobs", type=int, default=1, help="distillations at a time (one thread each)")
    add("--iterations", type=int, default=0, help="distillation iterations (0: each config's)")
    add("--width", type=int, default=0, help="ConvNet width (0: the configs')")
    add("--expert-epochs", type=int, default=0, help="expert epochs (0: the expert configs')")
    add("--num-experts", type=int, default=0, help="experts per method (0: the configs')")
    add("--warmup", type=int, default=3, help="iterations left out of the time per iteration")
    add("--protocol", default="short", help="evaluation protocol")
    add("--eval-epochs", type=int, default=None, help="override of the protocol's epochs")
    add("--device", default="cpu", help="cpu or cuda")
    add("--threads", type=int, default=1, help="torch CPU threads per run (0: torch's default)")
    add("--data-root", type=Path, default=SHARED_DATA, help="root of the shared datasets")
    add("--work-dir", type=Path, default=Path("runs/bench"), help="experts cache, run folders")
    add("--out", type=Path, default=None, help="append the result section to this Markdown file")
    add("--reuse", action="store_true", help="keep finished runs of the same settings")
    add("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    return args


def distil(dataset: str, ipc: int, methods: Sequence[str], args, notes: list[str]) -> dict:
    """Every method's run at ``dataset`` and ``ipc`` (experts first): method -> its outcome."""
    data_args = [a.format(root=args.data_root) for a in DATA_ARGS.get(dataset, ())]
    plan = {m: run.at(ipc) for m, run in DATASETS[dataset].items() if m in methods}
    with cpu_threads(args.threads):
        for method, run in plan.items():
            found = ensure_experts(run, args, data_args)
            notes.append(f"{dataset} IPC {ipc} {method} experts: {found}")
    specs = [
        {
            "method": method, "config": run.config, "threads": args.threads,
            "overrides": run_args(run, method, ipc, args, data_args),
            "root": str(args.work_dir / "compare" / f"{dataset}_ipc{ipc}_{method}"),
            "accelerator": args.accelerator, "warmup": args.warmup, "reuse": args.reuse,
        }
        for method, run in plan.items()
    ]  # fmt: skip
    with ThreadPoolExecutor(args.jobs) as pool:
        return dict(zip(plan, pool.map(run_worker, specs), strict=True))


def main(argv: Sequence[str] | None = None) -> list:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return []
    clock, outcomes, notes = time.perf_counter(), [], []
    methods = args.methods.split(",")
    for dataset in args.datasets.split(","):
        data_args = [a.format(root=args.data_root) for a in DATA_ARGS.get(dataset, ())]
        for ipc in (int(v) for v in args.ipc.split(",")):
            runs = distil(dataset, ipc, methods, args, notes)
            with cpu_threads(args.threads):
                outcomes.append((dataset, ipc, runs, evaluate(dataset, ipc, runs, args, data_args)))
    minutes = (time.perf_counter() - clock) / 60
    body = report(outcomes, args, notes, minutes)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "accelerator", "worker")}
    title = "Every method on the same data: accuracy, time and memory"
    emit(section(title, command_line(__file__, argv), args.device, settings, body), args.out)
    return outcomes


if __name__ == "__main__":
    main()
