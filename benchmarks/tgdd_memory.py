"""Peak memory of a TGDD iteration as the number of classes grows (CIFAR-100-shaped data).

TGDD's loss is a sum over classes; lit-distill runs its backward class by class, so the working
memory of an iteration should be that of one class plus what scales with the synthetic set
itself (the images, their gradient and momentum). For every (classes, IPC) a fresh process
builds a ``TGDDModule`` (ConvNet-3 of ``--width``, multi-formation factor 2, real batch 128, as
``tgdd_cifar100.yaml``) on random 32x32 RGB data of that many classes, with random expert
trajectories of the right shape (their values do not change the cost), and runs
``--iterations`` iterations in a Trainer.

Memory: the resident set is read once the real data is in memory (it scales with the classes
and is not part of an iteration), the peak is reset, then the module (with its synthetic set),
the Trainer and the iterations run; reported is the peak minus that reading. On CUDA:
``max_memory_allocated`` over the same span. Also reported: the rest once the set's own three
copies (images, gradient, SGD momentum: what one update per iteration needs) are taken out.
``--malloc-mmap-threshold`` runs the workers with glibc's ``MALLOC_MMAP_THRESHOLD_`` (large
blocks returned to the system when freed), which separates heap fragmentation from memory in use.

    python benchmarks/tgdd_memory.py                        # width 32, CPU
    python benchmarks/tgdd_memory.py --width 128 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from common import (
    add_output_arguments,
    command_line,
    emit,
    rss_bytes,
    run_json_worker,
    section,
    table,
)

from lit_distill.data import NpzDataModule
from lit_distill.distill import TGDDModule
from lit_distill.models import build_model
from lit_distill.trajectory import Trajectory, expert_path

MIB = 2**20


def fake_data(folder: Path, classes: int, per_class: int) -> Path:
    rng = np.random.default_rng(0)
    n = classes * per_class
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(classes), per_class)
    path = folder / f"data_{classes}.npz"
    np.savez(path, x_train=images, y_train=labels, x_test=images[:classes], y_test=labels[:classes])
    return path


def fake_experts(folder: Path, classes: int, width: int) -> Path:
    torch.manual_seed(0)
    net = build_model("convnet3", classes, (3, 32, 32), width=width)
    names = [n for n, _ in net.named_parameters()]
    start = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    for i in range(2):
        Trajectory(
            arch="convnet3", arch_kwargs={"width": width}, num_classes=classes,
            image_shape=[3, 32, 32], dataset=f"fake{classes}", param_names=names,
            param_shapes=[list(p.shape) for p in net.parameters()], epochs=[0, 1, 2, 3],
            num_epochs=3, params=start + 0.01 * torch.randn(4, start.numel()),
        ).save(expert_path(folder, i))  # fmt: skip
    return folder


class Peak(L.Callback):
    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, 0

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = rss_bytes("VmHWM")


def worker(args: argparse.Namespace) -> dict:
    work = Path(args.work_dir) / f"c{args.classes}_ipc{args.ipc}"
    work.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    data = NpzDataModule(
        str(fake_data(work, args.classes, 128 + 4 * args.ipc)), name=f"fake{args.classes}"
    )
    data.setup()
    experts = fake_experts(work / "experts", args.classes, args.width)
    if device.type == "cuda":
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = rss_bytes("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
    model = TGDDModule(
        num_classes=args.classes, image_shape=(3, 32, 32), mean=data.mean, std=data.std,
        dataset=data.name, trajectory_dir=str(experts), num_experts=2, arch="convnet3",
        arch_kwargs={"width": args.width}, ipc=args.ipc, factor=2, real_batch=128,
        iterations=args.iterations, image_every=0, export_dir=str(work), init="real",
    )  # fmt: skip
    peak = Peak(device)
    trainer = L.Trainer(
        max_epochs=1, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[peak],
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    stored = model.synthetic.images
    return {
        "delta": peak.peak - base,
        "set": stored.numel() * stored.element_size(),
    }


def run_worker(classes: int, ipc: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--classes", str(classes), "--ipc", str(ipc)]
    cmd += ["--width", str(args.width), "--device", args.device, "--work-dir", str(args.work_dir)]
    cmd += ["--iterations", str(args.iterations)]
    env = dict(os.environ)
    if args.malloc_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
    return run_json_worker(cmd, f"{classes} classes, IPC {ipc}", env)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--ipc", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--width", type=int, default=32, help="ConvNet-3 width (paper: 128)")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench/tgdd_memory"))
    parser.add_argument("--malloc-mmap-threshold", type=int, default=0, help="0: unset")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.worker:
        args.classes, args.ipc = args.classes[0], args.ipc[0]
        print(json.dumps(worker(args)))
        return {}
    results = {(c, i): run_worker(c, i, args) for i in args.ipc for c in args.classes}
    rows, ratios, rests = [], {}, {}
    for ipc in args.ipc:
        first = results[(args.classes[0], ipc)]
        smallest, smallest_rest = first["delta"], first["delta"] - 3 * first["set"]
        for classes in args.classes:
            r = results[(classes, ipc)]
            rest = r["delta"] - 3 * r["set"]
            ratios[(classes, ipc)] = ratio = r["delta"] / smallest
            rests[(classes, ipc)] = rest / smallest_rest
            rows.append([classes, ipc, r["set"] / MIB, r["delta"] / MIB, ratio, rest / MIB,
                         rest / smallest_rest])  # fmt: skip
    worst = max(ratios[(args.classes[-1], ipc)] for ipc in args.ipc)
    worst_rest = max(rests[(args.classes[-1], ipc)] for ipc in args.ipc)
    body = table(
        ["classes", "IPC", "stored set (MiB)", "peak − before (MiB)",
         f"vs {args.classes[0]} classes", "rest: peak − 3 x set (MiB)",
         f"rest vs {args.classes[0]} classes"],
        rows,
    )  # fmt: skip
    body += (
        f"\n\nPeak = memory of the module (synthetic set included), Trainer and "
        f"{args.iterations} iterations above the memory in use once the real data is loaded. "
        f"{args.classes[-1]} classes take at most {worst:.2f}x the peak of {args.classes[0]} "
        f"(target: at most 1.25x: {'met' if worst <= 1.25 else 'MISSED'}). Without the set's "
        f"three copies (images, gradient, momentum) the rest grows at most {worst_rest:.2f}x.\n"
    )
    settings = {
        "network": f"convnet3 width {args.width}", "factor": 2, "real_batch": 128,
        "data": "random 32x32 RGB, CIFAR-100-shaped",
        "MALLOC_MMAP_THRESHOLD_": args.malloc_mmap_threshold or "unset",
    }  # fmt: skip
    title = "TGDD: peak memory per iteration against the number of classes"
    emit(section(title, command_line(__file__, argv), args.device, settings, body), args.out)
    return results


if __name__ == "__main__":
    main()
