"""Distilled sets compared fairly, and as proxies for architecture search, through the app.

Two parts, each one ``lit-distill test`` command as a user runs it:

- ``compare``: ``compare.yaml`` (:class:`lit_distill.evaluation.ComparisonModule`) on the sets
  of the given methods at one dataset and IPC: every set, the random real subset of its IPC
  and the full training data on every architecture, with DD-Ranking's label- and
  augmentation-robust scores (hard labels and no augmentation as well);
- ``nas``: ``nas.yaml`` (:class:`lit_distill.evaluation.NASModule`) with the same sets as
  proxies: Spearman's rho with the real data's ranking of a ConvNet search space, and the time
  of each search.

The sets are the CPU-sized runs of ``compare_methods.py`` (its folders
``<work-dir>/compare/<dataset>_ipc<N>_<method>/``): finished runs of the same settings are kept,
missing ones are distilled first (their experts too). Each part's wall and process CPU time is
reported beside its tables, with the time of the distillations it had to run.

    python benchmarks/fair_eval.py --part compare --dataset mnist --ipc 1 --methods mtt,datm,mct,dpd
    python benchmarks/fair_eval.py --part nas --dataset mnist --ipc 1 --methods tgdd,datm,dpd
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import compare_methods
from common import publish
from distill_accuracy import QUIET, SHARED_DATA, cpu_threads

from lit_distill.main import main as lit_distill

#: The network of the CPU-sized configs (ConvNet-3, width 32), and the same with BatchNorm.
ARCHS = {"convnet3": {"width": 32}, "convnet_bn": {"width": 32, "depth": 3}}

#: The search space at MNIST/CIFAR-10 size (nas.yaml's is sized for 8x8 digits): 72 ConvNets,
#: 30 drawn; real data: 100 images per class for 20 epochs (CPU-sized ground truth).
NAS_SPACE = {
    "widths": [16, 32],
    "depths": [2, 3],
    "norms": ["instance", "batch", "none"],
    "activations": ["relu", "leakyrelu", "sigmoid"],
    "poolings": ["avg", "max"],
}


def data_args(dataset: str, args: argparse.Namespace) -> list[str]:
    """The data of the method configs (class and options), rooted at ``--data-root``."""
    run = compare_methods.DATASETS[dataset]["mtt"].at(args.ipc)
    data, rooted = compare_methods.config_data(run.config, args.data_root)
    return [f"--data={json.dumps(data)}", *rooted]


def sets_of(args: argparse.Namespace, notes: list[str]) -> tuple[dict[str, str], float]:
    """method -> its exported set (distilled first where missing), and the seconds that took."""
    methods = args.methods.split(",")
    settings = ["--work-dir", str(args.work_dir), "--data-root", str(args.data_root)]
    settings += ["--threads", str(args.threads), "--reuse"]
    for flag in ("iterations", "width", "expert_epochs", "num_experts"):  # 0: the configs'
        settings += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    runner = compare_methods.parse_args(settings)
    clock = time.perf_counter()
    runs = compare_methods.distil(args.dataset, args.ipc, methods, runner, notes)
    seconds = time.perf_counter() - clock
    for method, run in runs.items():
        kept = "kept" if run.get("reused") else "distilled now"
        notes.append(f"{method}: `{Path(run['export'])}` ({kept})")
    return {m: r["export"] for m, r in runs.items()}, seconds


def command(args: argparse.Namespace, sets: dict[str, str], folder: Path) -> list[str]:
    """The ``lit-distill test`` arguments of the part."""
    listed = ",".join(sets.values())
    names = ",".join(sets)
    out = ["test", "--config", "compare.yaml" if args.part == "compare" else "nas.yaml"]
    out += [*QUIET, *data_args(args.dataset, args), f"--trainer.default_root_dir={folder}"]
    out += [f"--model.init_args.sets=[{listed}]", f"--model.init_args.names=[{names}]"]
    out += [f"--model.init_args.seed={args.seed}"]
    if args.eval_epochs:
        out += [f"--model.init_args.epochs={args.eval_epochs}"]
    if args.part == "compare":
        archs = {a: ARCHS.get(a, {}) for a in args.archs.split(",")}
        out += [f"--model.init_args.archs=[{','.join(archs)}]"]
        out += [f"--model.init_args.arch_kwargs={json.dumps(archs)}"]
        out += [f"--model.init_args.num_runs={args.runs}"]
        out += [f"--model.init_args.full_epochs={args.full_epochs}"]
    else:
        out += [f"--model.init_args.{k}={json.dumps(v)}" for k, v in NAS_SPACE.items()]
        out += [f"--model.init_args.space_size={args.space_size}"]
        out += [f"--model.init_args.real_per_class={args.real_per_class}"]
        out += [f"--model.init_args.real_epochs={args.real_epochs}"]
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--part", choices=("compare", "nas"), default="compare")
    add("--dataset", choices=("digits", "mnist", "cifar10"), default="mnist")
    add("--ipc", type=int, default=1)
    add("--methods", default="mtt,datm,mct,dpd", help="comma list of methods")
    add("--archs", default="convnet3,convnet_bn", help="compare: architectures")
    add("--runs", type=int, default=3, help="compare: networks per set and cell")
    add("--full-epochs", type=int, default=2, help="compare: epochs of the full-data row")
    add("--space-size", type=int, default=30, help="nas: architectures drawn")
    add("--real-per-class", type=int, default=100, help="nas: real images per class")
    add("--real-epochs", type=int, default=20, help="nas: epochs on the real images")
    add("--eval-epochs", type=int, default=0, help="override of the protocol's epochs (0: none)")
    add("--iterations", type=int, default=0, help="distillation iterations (0: the configs')")
    add("--width", type=int, default=0, help="distillation ConvNet width (0: the configs')")
    add("--expert-epochs", type=int, default=0, help="expert epochs (0: the configs')")
    add("--num-experts", type=int, default=0, help="experts per method (0: the configs')")
    add("--seed", type=int, default=0)
    add("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    add("--data-root", type=Path, default=SHARED_DATA, help="root of the shared datasets")
    add("--work-dir", type=Path, default=Path("runs/bench"), help="experts, sets, results")
    add("--out", type=Path, default=None, help="append the result section to this Markdown file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    notes: list[str] = []
    sets, distil_seconds = sets_of(args, notes)
    folder = args.work_dir / "fair" / f"{args.part}_{args.dataset}_ipc{args.ipc}"
    wall, cpu = time.perf_counter(), time.process_time()
    with cpu_threads(args.threads):
        lit_distill(command(args, sets, folder))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    table = (folder / ("comparison.md" if args.part == "compare" else "nas.md")).read_text()
    body = (
        f"{table.rstrip()}\n\nThe {args.part} took {wall / 60:.1f} min of wall time "
        f"({cpu / 60:.1f} min of process CPU time, {args.threads or 'default'} thread(s)); "
        f"distilling the missing sets before it: {distil_seconds / 60:.1f} min. "
        f"Sets: {'; '.join(notes)}. Tables, CSV"
        f"{' and heat map' if args.part == 'compare' else ''} in `{folder}`.\n"
    )
    title = {
        "compare": f"Distilled sets compared fairly: {args.dataset}, IPC {args.ipc}",
        "nas": f"Architecture search with distilled proxies: {args.dataset}, IPC {args.ipc}",
    }[args.part]
    publish(title, __file__, argv, args, body)
    return body


if __name__ == "__main__":
    main()
