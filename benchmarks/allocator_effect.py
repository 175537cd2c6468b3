"""Host memory kept for reuse against glibc's defaults, for expert training and TGDD.

``lit-distill`` keeps freed host memory for reuse (:mod:`lit_distill.allocator`); it was
measured on trajectory matching (``unroll_memory.py --allocator``). This measures what the
setting does to the two other CPU-heavy jobs, as the app runs them: an expert trained by
``ExpertModule`` in a Trainer (the recipe's batch, DSA and SGD), and TGDD iterations of
``TGDDModule`` on two expert trajectories of the right shape (``tgdd_speed.py``'s app side).

The setting holds for a whole process, so every measurement is a fresh process: each round runs
one process with freed memory kept and one with glibc's defaults, alternating which goes first.
Each process times its training steps (wall and process CPU time, the first ``--warmup`` steps
dropped) and reports its resident-memory peak; the table gives the medians over rounds and the
ratio kept / system.

    python benchmarks/allocator_effect.py                          # CIFAR-10, width 128, CPU
    python benchmarks/allocator_effect.py --jobs tgdd --width 32 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from common import (
    add_data_arguments,
    add_output_arguments,
    command_line,
    emit,
    keep_memory,
    load_data,
    median,
    rss_bytes,
    run_json_worker,
    section,
    table,
)

MIB = 2**20
JOBS = ("experts", "tgdd")
ALLOCATORS = ("kept", "system")


def expert_steps(args: argparse.Namespace, dm, workdir: Path) -> tuple[list[float], list[float]]:
    """Per training step of one expert (as ``lit-distill fit --config experts_*.yaml`` trains
    it): wall and CPU seconds."""
    import lightning as L
    from tgdd_speed import Clock

    from lit_distill.experts import ExpertModule
    from lit_distill.experts.runner import train_experts

    facts = (dm.num_classes, dm.image_shape, dm.mean, dm.std, dm.name)
    model = ExpertModule(
        *facts, arch="convnet3", arch_kwargs={"width": args.width}, recipe="mtt",
        epochs=args.epochs, trajectory_dir=str(workdir / "experts"), seed=0,
    )  # fmt: skip
    clock = Clock(torch.device("cpu"))

    def make_trainer(**overrides) -> L.Trainer:
        return L.Trainer(
            accelerator="cpu", devices=1, callbacks=[clock], limit_val_batches=0,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            **overrides,
        )  # fmt: skip

    train_experts(model, dm, make_trainer, logger=False)
    return clock.wall, clock.cpu


def tgdd_steps(args: argparse.Namespace, dm, workdir: Path) -> tuple[list[float], list[float]]:
    """Per TGDD iteration of ``TGDDModule`` (IPC 10, factor 2, real batch 128): wall and CPU
    seconds."""
    import tgdd_speed

    folder = workdir / "trajectories"
    tgdd_speed.fake_experts(folder, dm, args.width)
    settings = argparse.Namespace(
        width=args.width, ipc=10, factor=2, real_batch=128, warmup=0, iterations=args.steps,
        accelerator="cpu", device="cpu", channels_last=None, real_forward_batch=None,
    )  # fmt: skip
    return tgdd_speed.app_round(settings, dm, folder)


def child(args: argparse.Namespace) -> dict:
    """One job with one allocator setting, in this (fresh) process."""
    kept = keep_memory(args.allocator == "kept")
    torch.set_num_threads(args.threads)
    if args.child == "tgdd":
        args.subset = 0  # TGDD samples 128 real images per class and iteration: all of them
    dm = load_data(args)
    with tempfile.TemporaryDirectory() as workdir:
        steps = expert_steps if args.child == "experts" else tgdd_steps
        walls, cpus = steps(args, dm, Path(workdir))
    walls, cpus = walls[args.warmup :], cpus[args.warmup :]
    if not walls:
        raise RuntimeError(f"no timed step: raise --steps/--epochs above --warmup {args.warmup}")
    return {
        "wall": median(walls),
        "cpu": median(cpus),
        "steps": len(walls),
        "peak": rss_bytes("VmHWM"),
        "kept": kept,
    }


def run_child(args: argparse.Namespace, job: str, allocator: str, argv: list[str]) -> dict:
    """``child`` in a fresh process (glibc's settings hold for a whole process)."""
    cmd = [sys.executable, __file__, *argv, "--child", job, "--allocator", allocator]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    return run_json_worker(cmd, f"{job} with {allocator} memory", env)


def child_argv(args: argparse.Namespace) -> list[str]:
    """The options a child needs (data, sizes, threads)."""
    argv = ["--data", str(args.data), "--name", args.name, "--subset", str(args.subset)]
    argv += ["--width", str(args.width), "--epochs", str(args.epochs), "--steps", str(args.steps)]
    argv += ["--warmup", str(args.warmup), "--threads", str(args.threads)]
    return argv + (["--zca"] if args.zca else [])


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser, subset=2560)
    parser.add_argument("--jobs", nargs="+", choices=JOBS, default=list(JOBS))
    parser.add_argument("--width", type=int, default=128, help="ConvNet-3 width (papers: 128)")
    parser.add_argument("--epochs", type=int, default=1, help="expert epochs per process")
    parser.add_argument("--steps", type=int, default=4, help="TGDD iterations per process")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps per process")
    parser.add_argument("--rounds", type=int, default=3, help="processes per setting, alternated")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    parser.add_argument("--child", choices=JOBS, help=argparse.SUPPRESS)
    parser.add_argument("--allocator", choices=ALLOCATORS, help=argparse.SUPPRESS)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.child:
        result = child(args)
        print(json.dumps(result))
        return result
    results: dict[str, dict[str, list[dict]]] = {}
    for job in args.jobs:
        results[job] = {allocator: [] for allocator in ALLOCATORS}
        for r in range(args.rounds):
            for allocator in ALLOCATORS if r % 2 == 0 else ALLOCATORS[::-1]:
                results[job][allocator].append(run_child(args, job, allocator, child_argv(args)))
    rows, summary = [], {}
    for job, sides in results.items():
        med = {
            a: {k: median([run[k] for run in runs]) for k in ("wall", "cpu", "peak")}
            for a, runs in sides.items()
        }
        for allocator in ALLOCATORS:
            m = med[allocator]
            rows.append([job, allocator, 1000 * m["wall"], 1000 * m["cpu"], m["peak"] / MIB])
        ratio = {k: med["kept"][k] / med["system"][k] for k in ("wall", "cpu", "peak")}
        rows.append([job, "kept / system", ratio["wall"], ratio["cpu"], ratio["peak"]])
        summary[job] = {
            "median": med, "ratio": ratio,
            "kept": {a: [run["kept"] for run in runs] for a, runs in sides.items()},
        }  # fmt: skip
    body = table(
        ["job", "host memory", "wall / step (ms)", "CPU / step (ms)", "peak RSS (MiB)"], rows
    ) + (
        "\n\nA step is an expert's training step (a batch of the MTT recipe) or a TGDD "
        f"iteration. Medians over {args.rounds} processes per setting, alternated; each process "
        f"drops its first {args.warmup} step(s). kept: freed memory kept for reuse, as "
        "`lit-distill` runs; system: glibc's defaults. The peak is the whole process's resident "
        "memory, the data included. A ratio below 1 is that much less with memory kept.\n"
    )
    settings = {
        "data": f"{args.name} (experts: subset {args.subset or 'all'}; TGDD: all)",
        "network": f"convnet3 width {args.width}",
        "experts": f"MTT recipe, {args.epochs} epoch(s) per process",
        "tgdd": f"IPC 10, factor 2, real batch 128, {args.steps} iterations per process",
        "threads": args.threads,
    }
    title = "Host memory kept for reuse vs glibc's defaults: expert training and TGDD"
    emit(section(title, command_line(__file__, argv), "cpu", settings, body), args.out)
    return summary


if __name__ == "__main__":
    main()
