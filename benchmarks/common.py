"""What every benchmark script shares: the machine description, Markdown output, a data subset.

The scripts print one Markdown section and can append it to a file (``--out``) together with
the exact command line, the date, the machine and the settings, so every published number can
be traced to the run that produced it and rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import lightning
import lightning as L
import numpy as np
import torch

from lit_distill.allocator import keep_freed_memory
from lit_distill.data import LabeledImages, NpzDataModule
from lit_distill.data.base import Split

#: The real CIFAR-10 copy the benchmarks read by default (see ../shared/data/README.md).
CIFAR10_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "cifar10.npz"


def add_data_arguments(parser: argparse.ArgumentParser, subset: int) -> None:
    """``--data``, ``--name``, ``--subset``, ``--zca``: the real images a benchmark trains on."""
    parser.add_argument("--data", type=Path, default=CIFAR10_NPZ, help=".npz dataset")
    parser.add_argument("--name", default="cifar10", help="dataset name recorded in the files")
    parser.add_argument("--subset", type=int, default=subset, help="training images (0: all)")
    parser.add_argument("--zca", action="store_true", help="ZCA-whiten the inputs")


def load_data(args: argparse.Namespace) -> SubsetNpzDataModule:
    """The datamodule of ``add_data_arguments``' options, set up."""
    dm = SubsetNpzDataModule(str(args.data), name=args.name, subset=args.subset, zca=args.zca)
    dm.setup()
    return dm


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out``: the Markdown file the result section is appended to."""
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="append the result section to this Markdown file (e.g. benchmarks/RESULTS.md)",
    )


def machine(device: str = "cpu") -> str:
    """One line naming the machine: CPUs, accelerator, library versions."""
    accelerator = "no accelerator"
    if device != "cpu" and torch.cuda.is_available():  # "cuda", "cuda:1", "gpu", "auto"
        index = torch.device(device).index if device.startswith("cuda") else None
        accelerator = torch.cuda.get_device_name(index)
    return (
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"lightning {lightning.__version__}, device {device} ({accelerator}), "
        f"python {platform.python_version()}"
    )


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """``python benchmarks/SCRIPT ARGS``: the command that reproduces this run.

    Args:
        script: the script's file (``__file__``).
        argv: its arguments (the process arguments when None).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *args])


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; numbers are right-aligned."""
    align = [
        "---:" if rows and isinstance(rows[0][i], int | float) else "---"
        for i in range(len(headers))
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def section(title: str, command: str, device: str, settings: dict[str, object], body: str) -> str:
    """A result section: title, command, date, machine, settings, then the tables."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    listed = ", ".join(f"{k}={v}" for k, v in settings.items())
    return (
        f"## {title}\n\n"
        f"- command: `{command}`\n- date: {when}\n- machine: {machine(device)}\n"
        f"- settings: {listed}\n\n{body}\n"
    )


#: The repository's folder: results name paths relative to it, never a machine's.
REPOSITORY = Path(__file__).resolve().parents[1]


def relative_paths(text: str) -> str:
    """``text`` with absolute paths inside the repository, or beside it (``../shared``), made
    relative to the repository."""
    text = text.replace(f"{REPOSITORY}/", "").replace(f"{REPOSITORY.parent}/", "../")
    return text


def emit(text: str, out: Path | None) -> None:
    """Print ``text`` and, when ``out`` is given, append it to that Markdown file (paths made
    relative to the repository)."""
    text = relative_paths(text)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a", encoding="utf-8") as f:
            f.write(text + "\n")
        print(f"(appended to {out})")


def publish(
    title: str,
    script: str,
    argv: Sequence[str] | None,
    args: argparse.Namespace,
    body: str,
    device: str = "cpu",
) -> None:
    """:func:`emit` a benchmark's section: its command line, every argument but ``--out`` as its
    settings, and ``body``; to ``args.out`` when given."""
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    emit(section(title, command_line(script, argv), device, settings, body), args.out)


def rss_bytes(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status`` (None elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        return None
    return None


def add_allocator_argument(parser: argparse.ArgumentParser) -> None:
    """``--allocator app|system``: host memory as ``lit-distill`` sets it, or the C library's."""
    parser.add_argument(
        "--allocator", choices=("app", "system"), default="app",
        help="host memory: kept for reuse as lit-distill runs (app), or glibc's defaults",
    )  # fmt: skip


def set_host_memory(choice: str) -> str:
    """In this process: keep freed host memory as ``lit-distill`` does for ``app`` (where the C
    library allows it: glibc), else leave the C library's defaults; returns what took effect,
    in words for a result."""
    kept = choice == "app" and keep_freed_memory()
    return "kept for reuse (as lit-distill runs)" if kept else "as the C library sets it"


def keep_memory(kept: bool) -> bool:
    """In a worker process: keep freed host memory as ``lit-distill`` does when ``kept``
    (:func:`lit_distill.allocator.keep_freed_memory`), else glibc's defaults; raise when the
    setting cannot be had. Returns ``kept``."""
    if kept and not keep_freed_memory():
        raise RuntimeError("could not keep freed memory (glibc on Linux needed)")
    return kept


def run_json_worker(cmd: Sequence[str], what: str, env: dict[str, str] | None = None) -> dict:
    """Run ``cmd`` (a worker process that prints its result as JSON on its last line of output)
    and return that result; a failure raises with ``what`` and the end of its error output."""
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


class RunTrace(L.Callback):
    """What a distillation went through: the set it started from, each iteration's loss, the
    learned lr after each iteration (when the set has one) and the fit's wall time."""

    def __init__(self) -> None:
        self.start = None  # a SyntheticData, taken before the first iteration
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.seconds = 0.0
        self._clock = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = pl_module.synthetic_data()
        self._clock = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(trainer.callback_metrics["train/loss"]))
        lr = getattr(pl_module.synthetic, "lr", None)
        if lr is not None:
            self.lrs.append(float(lr.detach()))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds = time.perf_counter() - self._clock

    def loss_tail(self, n: int = 20) -> float:
        """Mean loss of the last ``n`` iterations."""
        return float(np.mean(self.losses[-n:])) if self.losses else float("nan")


class SubsetNpzDataModule(NpzDataModule):
    """An ``.npz`` dataset cut to its first ``subset`` training images (0 keeps them all).

    Short CPU runs need fewer images; the order of the CIFAR-10 archive is already random, so
    the first images are a fair sample. No cache (ZCA fit) is written next to the data: the
    shared copy may be read-only.
    """

    def __init__(self, path: str, name: str | None = None, subset: int = 0, zca: bool = False):
        super().__init__(path, name=name, zca=zca)
        self.subset = subset

    def _load_split(self, split: Split) -> LabeledImages:
        images = super()._load_split(split)
        if split != "train" or not 0 < self.subset < len(images):
            return images
        rows = slice(0, self.subset)
        return LabeledImages(images.images[rows], images.labels[rows], images.classes, self.name)

    def _cache_dir(self) -> None:
        return None
