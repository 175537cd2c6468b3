"""One script for the first minutes on a GPU: every method on CUDA in every precision, the speed
and memory benchmarks with ``--device cuda``, and a count of host synchronisations.

1. **Methods x precisions.** Every method's digits quick start (``<method>_digits.yaml``; DM is
   TGDD's with ``DMModule``) runs ``--iterations`` distillation iterations in ``32-true``,
   ``bf16-mixed`` and ``16-mixed`` (the CPU has no fp16 autocast: 32 and bf16 there) on small
   experts trained once per expert config, then one short evaluation network. Reported per run:
   whether it finished, seconds per iteration after ``--warmup``, whether the final set is finite
   and the learned lr positive, and on CUDA the host synchronisations per iteration, counted
   with ``torch.cuda.set_sync_debug_mode("warn")`` after the warm-up (each distinct source line
   is listed once).
2. **Speed and memory** with the device: ``tgdd_speed.py``, ``unroll_memory.py``,
   ``expert_throughput.py``, ``eval_speed.py`` (the quick start's evaluation, runs one at a
   time against together) and ``expert_batching.py`` at reduced settings (``--quick`` smaller
   still), each in its own process; their tables are included as they print them.

Everything goes into ONE Markdown section (``--out benchmarks/RESULTS.md``). Data: digits
(embedded) for the methods; CIFAR-10-shaped random images for the speed scripts (their cost
does not depend on the pixels), unless ``--data`` names the real ``.npz``.

    python benchmarks/gpu_check.py --device cuda --out benchmarks/RESULTS.md   # about 10 min
    python benchmarks/gpu_check.py --device cpu --quick                         # the same, tiny
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml
from common import command_line, emit, median, section, table
from distill_accuracy import BARE, build_cli

from lit_distill.cli import resolve_config
from lit_distill.main import main as lit_distill

BENCH = Path(__file__).resolve().parent
METHODS = ("tgdd", "dm", "mtt", "datm", "mct", "dpd")
DM = ["--model=lit_distill.distill.DMModule", "--model.init_args.lr_images=1.0"]
TINY = {"width": 16, "depth": 2}


class SyncCounter(L.Callback):
    """Per-iteration time, and (CUDA) the synchronising calls of iterations after the warm-up."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.times: list[float] = []
        self.syncs: list[int] = []
        self.sources: set[str] = set()
        self._clock = 0.0
        self._caught = None

    def _cuda(self, module) -> bool:
        return module.device.type == "cuda"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._cuda(pl_module):
            torch.cuda.synchronize(pl_module.device)
            if batch_idx >= self.warmup:
                self._caught = warnings.catch_warnings(record=True)
                self._records = self._caught.__enter__()
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
        self._clock = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._caught is not None:
            torch.cuda.set_sync_debug_mode("default")
            self._caught.__exit__(None, None, None)
            syncs = [w for w in self._records if "synchroniz" in str(w.message)]
            self.syncs.append(len(syncs))
            self.sources |= {f"{Path(w.filename).name}:{w.lineno}" for w in syncs}
            self._caught = None
        if self._cuda(pl_module):
            torch.cuda.synchronize(pl_module.device)
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._clock)


def experts_for(config: str, args, trained: dict[str, str]) -> str:
    """Two small 5-epoch experts of ``config``'s expert config, trained once (fp32), shared."""
    with open(resolve_config(config), encoding="utf-8") as f:
        expert_config = yaml.safe_load(f)["model"]["init_args"]["expert_config"]
    if expert_config not in trained:
        folder = args.work_dir / "experts" / Path(expert_config).stem
        lit_distill([
            "fit", "--config", resolve_config(expert_config), *BARE,
            f"--trainer.accelerator={args.accelerator}",
            f"--model.init_args.trajectory_dir={folder}", "--model.init_args.num_experts=2",
            "--model.init_args.epochs=5", f"--model.init_args.arch_kwargs={json.dumps(TINY)}",
        ])  # fmt: skip
        trained[expert_config] = str(folder)
    return trained[expert_config]


def run_method(method: str, precision: str, args, trained: dict[str, str]) -> tuple[list, set]:
    """One method in one precision: its row of the table, and the lines that synchronised."""
    config = f"{'tgdd' if method == 'dm' else method}_digits.yaml"
    overrides = [
        f"--trainer.precision={precision}", f"--model.init_args.iterations={args.iterations}",
        f"--model.init_args.arch_kwargs={json.dumps(TINY)}", "--model.init_args.image_every=0",
        f"--model.init_args.trajectory_dir={experts_for(config, args, trained)}",
        "--model.init_args.num_experts=2", "--model.init_args.train_missing_experts=false",
        *(DM if method == "dm" else []),
    ]  # fmt: skip
    if method in ("mtt", "datm", "dpd"):
        overrides.append("--model.init_args.max_start_epoch=2")
    if method in ("datm", "dpd"):
        overrides.append("--model.init_args.current_max_start_epoch=null")
    root = args.work_dir / f"{method}_{precision}"
    counter = SyncCounter(args.warmup)
    try:
        cli = build_cli(config, overrides, root, args.accelerator)
        cli.trainer.callbacks.append(counter)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        data = cli.model.synthetic_data()
    except Exception as err:  # a failure is a result here: report it and go on
        traceback.print_exc()
        failed = f"FAILED: {type(err).__name__}: {' '.join(str(err).split())[:160]}"
        return [method, precision, failed, "", "", ""], set()
    finite = bool(torch.isfinite(data.images).all()) and (data.lr is None or data.lr > 0)
    syncs = f"{median(counter.syncs):.0f}" if counter.syncs else "n/a (CPU)"
    seconds = f"{median(counter.times):.3f}" if counter.times else "—"
    return [method, precision, "ok", seconds, "yes" if finite else "NO", syncs], counter.sources


def random_cifar(path: Path, per_class: int) -> Path:
    """A CIFAR-10-shaped ``.npz`` of random pixels (timing only)."""
    rng = np.random.default_rng(0)
    n = 10 * per_class
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
        y_train=np.arange(n) % 10,
        x_test=rng.integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8),
        y_test=np.arange(1000) % 10,
    )
    return path


def speed_scripts(args) -> list[tuple[str, list[str]]]:
    """The speed and memory benchmarks with this device, at reduced settings."""
    data = str(args.data) if args.data else str(random_cifar(args.work_dir / "cifar.npz", 300))
    quick = args.quick
    device = ["--device", args.device]
    return [
        ("tgdd_speed.py", [*device, "--data", data, "--width", "32" if quick else "128",
                           "--ipc", "2" if quick else "10", "--iterations", "2" if quick else "20",
                           "--rounds", "2", "--work-dir", str(args.work_dir / "tgdd_speed")]),
        ("unroll_memory.py", [*device, "--width", "8" if quick else "128", "--ipc", "1" if quick
                              else "10", "--steps", *(["2", "4"] if quick else ["10", "20", "40"]),
                              "--repeats", "1"]),
        ("expert_throughput.py", [*device, "--data", data, "--width", "8" if quick else "128",
                                  "--subset", "200" if quick else "3000", "--epochs", "2",
                                  "--repeats", "1" if quick else "2"]),
        ("eval_speed.py", [*device, "--epochs", "2" if quick else "100", "--rounds",
                           "1" if quick else "3", "--runs", "2" if quick else "5"]),
        ("expert_batching.py", [*device, "--widths", *(["4"] if quick else ["32", "128"]),
                                "--experts", *(["2"] if quick else ["2", "4", "8"]),
                                "--batch", "8" if quick else "256", "--steps", "1" if quick
                                else "5"]),
    ]  # fmt: skip


def run_script(name: str, argv: list[str], out: Path) -> str:
    """A benchmark script in its own process; its section's body (or the error)."""
    done = subprocess.run(
        [sys.executable, str(BENCH / name), *argv, "--out", str(out)],
        capture_output=True, text=True, check=False,  # in this folder: paths stay relative
    )  # fmt: skip
    if done.returncode != 0:
        return f"`{name}` FAILED:\n\n```\n{done.stderr[-2000:]}\n```\n"
    text = out.read_text(encoding="utf-8")
    body = text.split("\n\n", 1)[1] if "\n\n" in text else text  # its own title dropped
    return f"`python benchmarks/{name} {' '.join(argv)}`\n\n{body.strip()}\n"


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="the smallest settings (a smoke test)")
    parser.add_argument("--iterations", type=int, default=None, help="per method and precision")
    parser.add_argument("--warmup", type=int, default=2, help="iterations before timing/counting")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--skip-scripts", action="store_true", help="only the methods")
    parser.add_argument("--data", type=Path, default=None, help="CIFAR-10 .npz for the scripts")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench/gpu_check"))
    parser.add_argument("--out", type=Path, default=None, help="append the section to this file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU is visible (torch.cuda.is_available() is False)")
    args.accelerator = "gpu" if args.device == "cuda" else "cpu"
    args.iterations = args.iterations or (4 if args.quick else 12)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    precisions = ["32-true", "bf16-mixed"] + (["16-mixed"] if args.device == "cuda" else [])
    rows, sources, trained = [], set(), {}
    for method in args.methods.split(","):
        for precision in precisions:
            row, found = run_method(method, precision, args, trained)
            rows.append(row)
            sources |= found
    headers = ["method", "precision", "run", "s / iteration", "finite set, lr > 0", "syncs / it"]
    body = table(headers, rows) + "\n"
    if sources:
        body += "\nSynchronising lines (after the warm-up): " + ", ".join(sorted(sources)) + "\n"
    if not args.skip_scripts:
        with tempfile.TemporaryDirectory() as tmp:
            for name, script_args in speed_scripts(args):
                body += f"\n### {name}\n\n" + run_script(name, script_args, Path(tmp) / name)
    failed = sum("FAILED" in str(r[2]) for r in rows) + body.count("` FAILED")
    minutes = (time.perf_counter() - clock) / 60
    body += f"\n{failed} failures. Total wall time {minutes:.1f} min.\n"
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "accelerator")}
    title = f"GPU check ({args.device}{', quick' if args.quick else ''})"
    emit(section(title, command_line(__file__, argv), args.device, settings, body), args.out)
    return {"rows": rows, "failed": failed, "body": body}


if __name__ == "__main__":
    main()
