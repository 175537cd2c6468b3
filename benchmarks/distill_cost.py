"""Cost of one distillation iteration, TGDD against DM: median time and peak memory, one run.

Both methods run in the application's own Trainer, built by ``LitDistillCLI`` from the same
config and overrides as in ``distill_accuracy.py`` (DM: ``--model lit_distill.distill.DMModule``,
every shared setting kept): same data, IPC, width, real batch, augmentation. Each method runs in
its own subprocess (a fresh process, so memory peaks do not mix); the methods alternate
(TGDD, DM, TGDD, DM, ...) for ``--rounds`` so that the noise of a shared machine hits both.

- **time**: a callback takes the time from ``on_train_batch_start`` to ``on_train_batch_end``
  of every iteration, i.e. ``training_step`` + backward + optimizer step (with the pixel clamp)
  as the Trainer runs them (CUDA synchronised at both ends); the first ``--warmup`` iterations
  are dropped, the median of the rest (pooled over rounds) is reported.
- **memory**, measured from the start of training (after set-up: data, networks, TGDD's
  snapshot bank in place) to its end. CUDA: ``torch.cuda.max_memory_allocated`` (stats reset at
  that start); CPU: the peak resident set size ``VmHWM``, reset at that start by writing 5 to
  ``/proc/self/clear_refs`` (where that is refused, ``ru_maxrss``, the peak of the whole
  process, is used and the output says so). Reported: that peak, and the peak minus the memory
  in use at the start (the iterations' own working memory); medians over rounds.

TGDD needs expert trajectories of the right shape (count, epochs, architecture); their values do
not change the cost. Cached experts of ``distill_accuracy.py`` are reused when present, otherwise
small ones are made with the expert config and ``--trainer.limit_train_batches`` (seconds).

    python benchmarks/distill_cost.py                       # MNIST, IPC 10, width 32, CPU
    python benchmarks/distill_cost.py --device cuda --dataset cifar10 --width 128 \\
        --expert-epochs 60 --num-experts 5 --iterations 100
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from common import command_line, emit, rss_bytes, section, table
from distill_accuracy import (
    DATASETS,
    SHARED_DATA,
    build_cli,
    cpu_threads,
    distill_args,
    ensure_experts,
    resolve_setting,
)

from lit_distill.trajectory import list_experts

METHODS = ("tgdd", "dm")
NUMBERS = ("ms", "peak", "delta", "start")  # the summary's numbers with a TGDD / DM ratio
# Settings that drive the cost; both methods must run with the same values.
SHARED = ("arch", "arch_kwargs", "ipc", "factor", "real_batch", "syn_batch", "augment")
SHARED += ("augment_mode", "real_on_device")
MIB = 2**20


class CostMeter(L.Callback):
    """Per-iteration times, and memory at the start of training and its peak afterwards."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.start_bytes = self.peak_bytes = 0
        self.peak_kind = ""
        self._t0 = 0.0

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(pl_module)
        if pl_module.device.type == "cuda":
            self.start_bytes = torch.cuda.memory_allocated(pl_module.device)
            torch.cuda.reset_peak_memory_stats(pl_module.device)
            self.peak_kind = "max_memory_allocated"
            return
        self.start_bytes = rss_bytes("VmRSS") or 0
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.peak_kind = "VmHWM since start"
        except OSError:
            self.peak_kind = "ru_maxrss (whole process)"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        self.times.append(time.perf_counter() - self._t0)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(pl_module.device)
        elif self.peak_kind.startswith("VmHWM"):
            self.peak_bytes = rss_bytes("VmHWM") or 0
        else:  # ru_maxrss is in kB on Linux
            self.peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(method: str, args: argparse.Namespace) -> dict:
    """One method's run in this process: its per-iteration times and memory."""
    setting = resolve_setting(args.dataset, args, args.work_dir)
    setting.trajectory_dir = args.trajectory_dir
    overrides = distill_args(setting, method, args.ipc, args.warmup + args.iterations)
    if args.real_batch:
        overrides.append(f"--model.init_args.real_batch={args.real_batch}")
    overrides += [f"--model.init_args.{setting}" for setting in args.model_arg]
    root = args.work_dir / "cost" / method
    cli = build_cli(setting.spec.distill_config, overrides, root, args.accelerator)
    meter = CostMeter()
    cli.trainer.callbacks.append(meter)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    bank = getattr(cli.model, "bank", None)
    hp = cli.model.hparams
    return {
        "times": meter.times[args.warmup :],
        "start": meter.start_bytes,
        "peak": meter.peak_bytes,
        "kind": meter.peak_kind,
        "bank": 0
        if bank is None
        else sum(t.params.numel() * t.params.element_size() for t in bank.trajectories),
        "settings": {k: hp[k] for k in SHARED if k in hp},
    }


def run_worker(method: str, argv: Sequence[str], trajectory_dir: str) -> dict:
    """``measure(method)`` in a fresh Python process (its own memory peak)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, __file__, *argv, "--worker", method]
        command += ["--trajectory-dir", trajectory_dir, "--result", str(result)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the {method} worker failed:\n{done.stderr[-4000:]}")
        return json.loads(result.read_text())


# Quick experts for TGDD's cost: the right shape in seconds (their values do not matter here).
QUICK = ["--trainer.limit_train_batches=4", "--trainer.limit_val_batches=0"]


def prepare_experts(args: argparse.Namespace) -> tuple[str, str]:
    """The trajectory folder TGDD reads, and how it came to be."""
    setting = resolve_setting(args.dataset, args, args.work_dir)
    if len(list_experts(setting.trajectory_dir)) >= setting.num_experts:
        return setting.trajectory_dir, "reused the cached experts of distill_accuracy.py"
    setting.trajectory_dir += "_quick"
    note = ensure_experts(setting, args.accelerator, QUICK)
    return setting.trajectory_dir, f"{note}; quick experts ({QUICK[0]}: same shape)"


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Median time (pooled over rounds), its quartiles, and median memory per method."""
    out = {}
    for method, results in runs.items():
        times = [t for r in results for t in r["times"]]
        q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times * 3)
        out[method] = {
            "ms": 1e3 * statistics.median(times),
            "iqr": f"{1e3 * q1:.1f}–{1e3 * q3:.1f}",
            "peak": statistics.median(r["peak"] for r in results) / MIB,
            "delta": statistics.median(r["peak"] - r["start"] for r in results) / MIB,
            "start": statistics.median(r["start"] for r in results) / MIB,
        }
    return out


def report(runs: dict[str, list[dict]], note: str) -> str:
    """The summary table (with TGDD/DM ratios) and what exactly was measured."""
    s = summarize(runs)
    rows = [
        [m.upper(), f"{s[m]['ms']:.1f}", s[m]["iqr"], f"{s[m]['peak']:.1f}",
         f"{s[m]['delta']:.1f}", f"{s[m]['start']:.1f}"]
        for m in METHODS
    ]  # fmt: skip
    ratio = {k: s["tgdd"][k] / s["dm"][k] if s["dm"][k] else float("nan") for k in NUMBERS}
    rows.append(["TGDD / DM", f"{ratio['ms']:.2f}", "", f"{ratio['peak']:.2f}",
                 f"{ratio['delta']:.2f}", f"{ratio['start']:.2f}"])  # fmt: skip
    headers = ["method", "time / iteration, median (ms)", "quartiles (ms)", "peak memory (MiB)",
               "peak − start (MiB)", "at start (MiB)"]  # fmt: skip
    first = runs["tgdd"][0]
    per_round = "; ".join(
        f"{m}: " + ", ".join(f"{1e3 * statistics.median(r['times']):.1f}" for r in runs[m])
        for m in METHODS
    )
    return (
        f"{table(headers, rows)}\n\n"
        f"- memory measure: {first['kind']} (see the script's docstring); TGDD's experts: "
        f"{first['bank'] / MIB:.1f} MiB of snapshots, memory-mapped and read lazily\n"
        f"- run settings: {first['settings']}; the same for DM: "
        f"{all(r['settings'] == first['settings'] for r in runs['dm'])}\n"
        f"- timed iterations per method: {sum(len(r['times']) for r in runs['tgdd'])} "
        f"({len(runs['tgdd'])} rounds)\n"
        f"- experts: {note}\n"
        f"- per-round median time (ms): {per_round}\n"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--dataset", default="mnist", choices=sorted(DATASETS))
    add("--ipc", type=int, default=10, help="images per class")
    add("--width", type=int, default=0, help="ConvNet width (0: the config's)")
    add("--real-batch", type=int, default=0, help="real images per class (0: the config's)")
    add("--warmup", type=int, default=5, help="iterations dropped before timing")
    add("--iterations", type=int, default=40, help="timed iterations per round")
    add("--rounds", type=int, default=3, help="alternating runs of each method")
    add("--expert-epochs", type=int, default=0, help="expert epochs (0: the expert config's)")
    add("--num-experts", type=int, default=0, help="experts (0: the expert config's)")
    add("--device", default="cpu", help="cpu or cuda")
    add(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE",
        help="a module setting for both methods, e.g. channels_last=false (repeatable)",
    )  # fmt: skip
    add("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    add("--data-root", type=Path, default=SHARED_DATA, help="root of the shared datasets")
    add("--work-dir", type=Path, default=Path("runs/bench"), help="experts cache, run folders")
    add("--out", type=Path, default=None, help="append the result section to this Markdown file")
    add("--worker", choices=METHODS, help=argparse.SUPPRESS)
    add("--trajectory-dir", help=argparse.SUPPRESS)
    add("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, list[dict]]:
    """Run the benchmark; print the table, append the section to ``--out``; return raw runs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    with cpu_threads(args.threads):
        return run(args, argv)


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, list[dict]]:
    """A worker's measurement (``--worker``), or the whole benchmark."""
    if args.worker:
        args.result.write_text(json.dumps(measure(args.worker, args)))
        return {}
    trajectory_dir, note = prepare_experts(args)
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    for _ in range(args.rounds):
        for method in METHODS:
            runs[method].append(run_worker(method, argv, trajectory_dir))
    settings = {k: v for k, v in vars(args).items() if v is not None and k != "accelerator"}
    settings.pop("out")
    text = section("Distillation cost per iteration: TGDD vs DM", command_line(__file__, argv),
                   args.device, settings, report(runs, note))  # fmt: skip
    emit(text, args.out)
    return runs


if __name__ == "__main__":
    main()
