"""DDP on the CPU: time for the same total work with 1 and with 2 processes.

Each run is the command line (``python -m lit_distill fit ...``) with ``--trainer.strategy ddp
--trainer.devices W`` (gloo), one thread per process (2 processes use the machine's 2 cores; 1
process uses one), and a timing callback on rank 0. What "the same total work" is depends on how
a task uses the ranks:

- **DM / TGDD** split the classes between the ranks: an iteration is the same work for any W
  (and the same update), so the time per iteration is compared directly;
- **trajectory matching** (MTT) averages one expert segment per rank: an iteration with W ranks
  matches W segments, so the time per segment is compared (time per iteration / W);
- **expert training** splits each batch between the ranks: the time per epoch is compared.

Experts for the distillation runs are random trajectories of the right shape (their values do
not change the cost). Speedup = time(1 process) / time(2 processes) per unit of work; 2 is ideal.

    python benchmarks/ddp_scaling.py                          # MNIST, CPU, gloo
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from common import command_line, emit, median, section, table

from lit_distill.data import MNISTDataModule
from lit_distill.models import build_model
from lit_distill.trajectory import Trajectory, expert_path

BENCH = Path(__file__).resolve().parent
CONFIGS = BENCH / "configs"
SHARED = BENCH.parents[1] / "shared" / "data"


def fake_experts(folder: Path, epochs: int = 8) -> str:
    dm = MNISTDataModule(root=str(SHARED))
    torch.manual_seed(0)
    net = build_model("convnet3", 10, dm.image_shape, width=32)
    names = [n for n, _ in net.named_parameters()]
    start = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    for i in range(2):
        Trajectory(
            arch="convnet3", arch_kwargs={"width": 32}, num_classes=10,
            image_shape=list(dm.image_shape), dataset=dm.name, param_names=names,
            param_shapes=[list(p.shape) for p in net.parameters()],
            epochs=list(range(epochs + 1)), num_epochs=epochs,
            params=start + 0.01 * torch.randn(epochs + 1, start.numel()),
        ).save(expert_path(folder, i))  # fmt: skip
    return str(folder)


def run(args, name: str, config: str, world: int, extra: list[str]) -> dict:
    out = args.work_dir / f"{name}_w{world}.json"
    cmd = [
        sys.executable, "-m", "lit_distill", "fit", "--config", str(config),
        f"--data.init_args.root={SHARED}", "--trainer.accelerator=cpu",
        f"--trainer.devices={world}", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.logger=false",
        "--trainer.enable_checkpointing=false", "--trainer.callbacks=[]",
        "--trainer.callbacks+=bench_callbacks.IterationClock", f"--trainer.callbacks.path={out}",
        f"--trainer.default_root_dir={args.work_dir / name}", "--overwrite=true", *extra,
    ]  # fmt: skip
    if world > 1:
        cmd.append("--trainer.strategy=ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(BENCH)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} with {world} processes failed:\n{done.stderr[-4000:]}")
    return json.loads(out.read_text())


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=12, help="TGDD/DM iterations")
    parser.add_argument("--mtt-iterations", type=int, default=6)
    parser.add_argument("--expert-batches", type=int, default=80, help="batches per expert epoch")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench/ddp_scaling"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    experts = fake_experts(args.work_dir / "experts")
    distill = [f"--model.init_args.trajectory_dir={experts}", "--model.init_args.num_experts=2"]
    distill += ["--model.init_args.train_missing_experts=false", "--model.init_args.ipc=10"]

    def task_args(name: str, run_index: int) -> list[str]:
        if name == "experts":  # a fresh folder per run: nothing is skipped
            folder = args.work_dir / f"trained_{run_index}"
            shutil.rmtree(folder, ignore_errors=True)
            return [
                "--model.init_args.epochs=2", "--model.init_args.num_experts=1",
                f"--model.init_args.trajectory_dir={folder}", "--trainer.limit_val_batches=0",
                f"--trainer.limit_train_batches={args.expert_batches}",
            ]  # fmt: skip
        iterations = args.iterations if name == "tgdd" else args.mtt_iterations
        return [*distill, f"--model.init_args.iterations={iterations}"]

    tasks = {  # name: (config, unit of work)
        "tgdd": (CONFIGS / "tgdd_mnist_cpu.yaml", "iteration"),
        "mtt": (CONFIGS / "mtt_mnist_ipc1_cpu.yaml", "segment"),
        "experts": (CONFIGS / "experts_mnist_mtt_cpu.yaml", "epoch"),
    }
    rows, results = [], {}
    for name, (config, unit) in tasks.items():
        times: dict[int, list[float]] = {1: [], 2: []}
        for index, world in enumerate((1, 2, 2, 1)):  # alternated
            record = run(args, name, config, world, task_args(name, index))
            values = record["epochs"] if name == "experts" else record["batches"][args.warmup :]
            times[world] += [v / (world if unit == "segment" else 1) for v in values]
        one, two = median(times[1]), median(times[2])
        results[name] = one / two
        rows.append([name, unit, 1000 * one, 1000 * two, one / two])
    body = table(["task", "unit of work", "1 process (ms)", "2 processes (ms)", "speedup"], rows)
    body += (
        "\n\nMedians over 2 runs per process count (1, 2, 2, 1 processes, alternated), one "
        "thread per process, gloo on one machine. Speedup 2 is perfect scaling.\n"
    )
    settings = {"data": "MNIST", "network": "convnet3 width 32", "ipc": 10}
    title = "DDP on the CPU: 1 vs 2 processes for the same work"
    emit(section(title, command_line(__file__, argv), "cpu", settings, body), args.out)
    return results


if __name__ == "__main__":
    main()
