"""Disk cost of expert trajectories, measured by writing real trajectory files.

The files are written by the app's own ``TrajectoryCallback`` (the code that records an expert
while it trains), driven epoch by epoch over a network of the requested architecture whose
parameters drift like training would, then read back and their ``stat().st_size`` taken. Full
trajectories (every epoch) and convex ones (first and last snapshot, what MCT needs) are
written in float32 and float16. A snapshot's cost is the difference between the full and the
convex file divided by the difference in snapshots; the rest of a file is its metadata.

    python benchmarks/trajectory_storage.py                    # ConvNet-3, CIFAR-10, 50 epochs
    python benchmarks/trajectory_storage.py --num-classes 100  # CIFAR-100
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import torch
from common import add_output_arguments, command_line, emit, section, table

from lit_distill.experts import resolve_recipe
from lit_distill.models import build_model
from lit_distill.trajectory import Trajectory, TrajectoryCallback

# The figures the field quotes (docs/methods.md, "Experts"): one ConvNet-3 snapshot is 1.28 MB
# in fp32, and 100 experts x 51 snapshots take 6.5 GB on CIFAR-10, 10.3 GB on CIFAR-100; MCT
# ("convex") stores 2 snapshots per expert, about 25x less (MCT paper).
REFERENCE_SNAPSHOT = {10: "1.28 MB"}
REFERENCE_EXPERTS = {10: "6.5 GB", 100: "10.3 GB"}
REFERENCE_CONVEX = "≈25x less than full"


def reference(args: argparse.Namespace, figures: dict[int, str]) -> str:
    """The reference figure for these settings; "—" where the reference gives none."""
    paper_setting = (args.arch, args.width, args.channels, args.image_size, args.epochs)
    if paper_setting != ("convnet3", None, 3, 32, 50) or args.experts != 100:
        return "—"
    return figures.get(args.num_classes, "—")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="convnet3")
    parser.add_argument("--width", type=int, default=None, help="default: the preset's (128)")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=50, help="50: MTT's experts")
    parser.add_argument("--experts", type=int, default=100, help="100: MTT's expert count")
    parser.add_argument("--dataset", default="cifar10", help="name recorded in the files")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (a full trajectory then outgrows a convex one)")
    return args


def write_trajectory(args: argparse.Namespace, store: str, dtype: str, path: Path) -> Trajectory:
    """Record ``args.epochs`` epochs with ``TrajectoryCallback`` and let it write ``path``."""
    torch.manual_seed(0)
    kwargs = {} if args.width is None else {"width": args.width}
    image_shape = [args.channels, args.image_size, args.image_size]
    net = build_model(args.arch, args.num_classes, image_shape, **kwargs)
    metadata = {
        "arch": args.arch,
        "arch_kwargs": kwargs,
        "num_classes": args.num_classes,
        "image_shape": image_shape,
        "dataset": args.dataset,
        "zca": False,
        "seed": 0,
        "recipe": resolve_recipe("mtt", epochs=args.epochs).as_dict(),
    }
    # Stand-ins for the Trainer and the ExpertModule: the attributes the callback reads.
    module = SimpleNamespace(net=net, trajectory_metadata=lambda: metadata)
    trainer = SimpleNamespace(
        current_epoch=0, is_global_zero=True, sanity_checking=False, callback_metrics={}
    )
    callback = TrajectoryCallback(path, args.epochs, mode=store, dtype=dtype)
    callback.on_fit_start(trainer, module)
    for epoch in range(args.epochs):
        with torch.no_grad():  # one epoch of "training": every parameter moves a little
            for p in net.parameters():
                p.add_(torch.randn_like(p), alpha=1e-3)
        trainer.current_epoch = epoch
        trainer.callback_metrics = {"val/acc": torch.tensor(0.5)}
        callback.on_validation_epoch_end(trainer, module)
        callback.on_train_epoch_end(trainer, module)
    callback.on_fit_end(trainer, module)
    return Trajectory.load(path)


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """One row per (dtype, store): snapshots in the file, its size, the size of all experts."""
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for dtype in ("float32", "float16"):
            for store in ("full", "convex"):
                path = Path(workdir) / f"{dtype}_{store}.pt"
                traj = write_trajectory(args, store, dtype, path)
                rows.append(
                    {
                        "dtype": dtype,
                        "store": store,
                        "snapshots": traj.num_snapshots,
                        "params": traj.num_params,
                        "bytes": path.stat().st_size,
                        "itemsize": traj.params.element_size(),
                    }
                )
    return rows


def _mb(size: float) -> str:
    """Decimal megabytes / gigabytes, as the reference figures are given."""
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.2f} MB"


def snapshot_table(args: argparse.Namespace, rows: list[dict[str, object]]) -> str:
    """Bytes per stored snapshot: raw parameter bytes, measured, reference."""
    body = []
    for dtype in ("float32", "float16"):
        full, convex = (
            next(r for r in rows if r["dtype"] == dtype and r["store"] == s)
            for s in ("full", "convex")
        )
        per_snapshot = (full["bytes"] - convex["bytes"]) / (full["snapshots"] - convex["snapshots"])
        overhead = convex["bytes"] - convex["snapshots"] * per_snapshot
        ref = reference(args, REFERENCE_SNAPSHOT) if dtype == "float32" else "—"
        body.append(
            [
                dtype,
                full["params"],
                full["params"] * full["itemsize"],
                round(per_snapshot),
                _mb(per_snapshot),
                round(overhead),
                ref,
            ]
        )
    headers = [
        "dtype",
        "parameters",
        "raw bytes (params x itemsize)",
        "measured bytes/snapshot",
        "= MB",
        "file overhead (bytes)",
        "reference",
    ]
    return table(headers, body)


def file_table(args: argparse.Namespace, rows: list[dict[str, object]]) -> str:
    """Bytes per expert file and for all experts, full against convex."""
    body = []
    for row in rows:
        full = next(r for r in rows if r["dtype"] == row["dtype"] and r["store"] == "full")
        ref = "—"
        if row["dtype"] == "float32":
            ref = reference(args, REFERENCE_EXPERTS) if row["store"] == "full" else REFERENCE_CONVEX
        body.append(
            [
                row["dtype"],
                row["store"],
                row["snapshots"],
                row["bytes"],
                _mb(row["bytes"]),
                _mb(args.experts * row["bytes"]),
                f"{full['bytes'] / row['bytes']:.1f}x",
                ref,
            ]
        )
    headers = [
        "dtype",
        "store",
        "snapshots",
        "bytes per file",
        "= MB",
        f"{args.experts} experts",
        "full / this",
        "reference",
    ]
    return table(headers, body)


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    """Write the files, print the Markdown section (and append it to ``--out``)."""
    args = parse_args(argv)
    rows = measure(args)
    body = (
        f"{snapshot_table(args, rows)}\n\n{file_table(args, rows)}\n\n"
        "MB and GB are decimal (10^6, 10^9 bytes), as in the reference figures; the totals are "
        f"{args.experts} x one measured file.\n"
    )
    settings = {
        "model": f"{args.arch} {args.width or 'preset'} width, {args.num_classes} classes, "
        f"input {args.channels}x{args.image_size}x{args.image_size}",
        "trajectory": f"{args.epochs} epochs ({args.epochs + 1} snapshots full, 2 convex)",
        "experts": args.experts,
    }
    title = "Trajectory storage: bytes per snapshot and per expert"
    emit(section(title, command_line(__file__, argv), "cpu", settings, body), args.out)
    return rows


if __name__ == "__main__":
    main()
