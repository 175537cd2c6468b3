"""MCT's line: an expert's test accuracy along the straight line from θ_0 to θ_K, next to its SGD
trajectory's accuracy after each epoch, and the line constants of the trajectory file.

The MCT paper says the accuracy rises monotonically along the line while the SGD trajectory's
oscillates. The script trains one expert (MTT recipe; cached in ``--work-dir``) with every epoch
stored, then measures, with the same accuracy function on the real test split:

- the SGD snapshot θ_k after each epoch k = 0..K, and
- the line point θ(k/K) = (1 − k/K)·θ_0 + (k/K)·θ_K for the same k,

and counts the steps at which each curve goes down. It also reports the line constants stored in
a ``convex`` file (where each θ_k projects onto the line, λ_k, and how far it is from it, δ_k),
the size of the full and the convex file, and writes a PNG plot next to ``--out``.

    python benchmarks/convex_line.py                    # CIFAR-10, 10,000 images, width 32, CPU
    python benchmarks/convex_line.py --subset 0 --width 128 --epochs 50 --device cuda
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from common import (
    add_data_arguments,
    add_output_arguments,
    command_line,
    emit,
    load_data,
    section,
    table,
)
from plot import line_plot

from lit_distill.evaluation import accuracy
from lit_distill.experts import ExpertModule
from lit_distill.experts.runner import train_experts
from lit_distill.models import build_model
from lit_distill.trajectory import Trajectory, expert_path
from lit_distill.trajectory.convex import line_point


def train_expert(args: argparse.Namespace, dm) -> Path:
    """One full-store expert in the work folder (skipped when it is already there)."""
    folder = args.work_dir / f"{args.name}_w{args.width}_e{args.epochs}_s{args.subset}"
    facts = dict(
        num_classes=dm.num_classes, image_shape=dm.image_shape, mean=dm.mean, std=dm.std,
        dataset=dm.name,
    )  # fmt: skip
    model = ExpertModule(
        **facts, arch="convnet3", arch_kwargs={"width": args.width}, recipe="mtt",
        epochs=args.epochs, num_experts=1, trajectory_dir=str(folder), store="full",
    )  # fmt: skip

    def make_trainer(**overrides):
        options = dict(accelerator=args.accelerator, logger=False, enable_checkpointing=False)
        options.update(enable_progress_bar=False, enable_model_summary=False)
        return L.Trainer(**{**options, **overrides})

    train_experts(model, dm, make_trainer)
    return expert_path(folder, 0)


def curves(traj: Trajectory, dm, device: str) -> tuple[list[float], list[float]]:
    """Test accuracy of the SGD snapshots and of the line points at the same k / K."""
    net = build_model(traj.arch, traj.num_classes, traj.image_shape, **traj.arch_kwargs)
    net = net.to(device)
    test, preprocess = dm.test_set.to(device), dm.preprocess().to(device)
    first, last = traj.params[0].to(device), traj.params[-1].to(device)
    sgd, line = [], []
    for k in range(traj.num_epochs + 1):
        for vector, out in ((traj.params[k].to(device), sgd),
                            (line_point(first, last, k / traj.num_epochs), line)):  # fmt: skip
            torch.nn.utils.vector_to_parameters(vector.float(), net.parameters())
            out.append(accuracy(net, test, preprocess))
    return sgd, line


def drops(values: Sequence[float]) -> int:
    """How many times a curve goes down from one point to the next."""
    return sum(b < a for a, b in zip(values, values[1:], strict=False))


def convex_file_size(traj: Trajectory, folder: Path) -> int:
    """Bytes of the expert's convex counterpart: its two end points and the line constants."""
    line = traj.line()
    convex = replace(
        traj, params=traj.params[[0, -1]].clone(), epochs=[0, traj.num_epochs],
        line_position=line.position, line_distance=line.distance, line_length=line.length,
    )  # fmt: skip
    return convex.save(folder / "convex.pt").stat().st_size


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser, subset=10000)
    parser.add_argument("--width", type=int, default=32, help="ConvNet-3 width (paper: 128)")
    parser.add_argument("--epochs", type=int, default=20, help="expert epochs K (MTT: 50)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench/convex_line"))
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    args.accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    dm = load_data(args)
    path = train_expert(args, dm)
    traj = Trajectory.load(path)
    sgd, line = curves(traj, dm, args.device)
    constants = traj.line()
    sizes = (path.stat().st_size, convex_file_size(traj, path.parent))
    K = traj.num_epochs
    rows = [
        [k, k / K, 100 * sgd[k], 100 * line[k], constants.position[k],
         constants.distance[k] / constants.length]
        for k in range(K + 1)
    ]  # fmt: skip
    plot = (args.out.parent if args.out else Path("benchmarks")) / "convex_line.png"
    line_plot(
        {"SGD trajectory, epoch k": ([k / K for k in range(K + 1)], [100 * a for a in sgd]),
         "line point at lambda = k/K": ([k / K for k in range(K + 1)], [100 * a for a in line])},
        plot, "k / K (epoch fraction, or lambda on the line)", "test accuracy (%)",
    )  # fmt: skip
    body = table(
        ["epoch k", "λ = k/K", "SGD θ_k acc (%)", "line θ(k/K) acc (%)", "λ_k (projection)",
         "δ_k / ‖θ_K − θ_0‖"],
        rows,
    )  # fmt: skip
    body += (
        f"\n\nThe accuracy goes down at {drops(line)} of {K} steps along the line and at "
        f"{drops(sgd)} of {K} along the SGD trajectory (the MCT paper: monotonic along the "
        f"line). Line constants as stored in a convex file: λ_k is where θ_k projects onto the "
        f"line, δ_k its distance from it (relative to the line's length "
        f"{constants.length:.3f}). Files: full {sizes[0]:,} B ({K + 1} snapshots), convex "
        f"{sizes[1]:,} B (2 snapshots + constants): {sizes[0] / sizes[1]:.1f}x smaller. "
        f"Plot: `{plot.name}`.\n\n![accuracy along the line]({plot.name})\n"
    )
    settings = {
        "data": f"{args.name} (subset {args.subset or 'all'})",
        "expert": f"convnet3 width {args.width}, MTT recipe, {K} epochs, seed 0",
        "test images": len(dm.test_set),
    }
    title = "MCT: accuracy along the straight line vs the SGD trajectory"
    emit(section(title, command_line(__file__, argv), args.device, settings, body), args.out)
    return {"sgd": sgd, "line": line, "sizes": sizes, "constants": constants}


if __name__ == "__main__":
    main()
