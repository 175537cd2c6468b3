"""TGDD iteration time: the Lightning app against a plain-PyTorch loop shaped like the TGDD code.

The plain side follows ``condense()`` of the public TGDD code, written here with the same
network, augmentation and multi-formation code as the app: per iteration it loads an extractor
and a critic snapshot, clamps the pixels, then for EACH class samples a real batch, augments
``cat(real, synthetic)`` with one siamese DSA call (after normalisation), matches mean features
(real side without gradient), adds alpha times the critic's cross-entropy, and takes an
optimiser step; like the TGDD code, it leaves the networks' parameters trainable (so the
backward also computes their gradients) and runs them in the default layout. The app
(``TGDDModule`` in a Trainer) freezes the networks, runs them channels-last on the CPU, pushes
the real images through in small chunks (several classes' batches in one forward on a GPU), runs
the synthetic images through once when the critic is the extractor's own snapshot, and takes one
step per iteration after class-by-class backwards. ``--channels-last`` and
``--real-forward-batch`` set the app's options, to see what each part is worth.

Both sides run in this process on the same data, settings and snapshots, alternating (app,
plain, plain, app, ...) over ``--rounds``; per iteration the wall time and the process CPU time
are taken (the first ``--warmup`` iterations of each round dropped), and the medians are
compared as ratios.

    python benchmarks/tgdd_speed.py                           # CIFAR-10, width 128, IPC 10, CPU
    python benchmarks/tgdd_speed.py --device cuda --iterations 50
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from common import (
    add_data_arguments,
    add_output_arguments,
    command_line,
    emit,
    load_data,
    median,
    section,
    table,
)

from lit_distill.augment import DSA
from lit_distill.distill import TGDDModule
from lit_distill.distill.matching import sample_stage
from lit_distill.models import build_model
from lit_distill.multiformation import decode_multiformation
from lit_distill.trajectory import SnapshotBank, Trajectory, expert_path


def fake_experts(folder: Path, dm, width: int, epochs: int = 60) -> SnapshotBank:
    """Two random trajectories of the right shape (their values do not change the cost).

    60 epochs as the TGDD recipe's experts, so that the stages drawn (and how often the critic
    is the extractor's own snapshot) follow the real distribution.
    """
    torch.manual_seed(0)
    net = build_model("convnet3", dm.num_classes, dm.image_shape, width=width)
    names = [n for n, _ in net.named_parameters()]
    start = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    trajectories = []
    for i in range(2):
        traj = Trajectory(
            arch="convnet3", arch_kwargs={"width": width}, num_classes=dm.num_classes,
            image_shape=list(dm.image_shape), dataset=dm.name, param_names=names,
            param_shapes=[list(p.shape) for p in net.parameters()],
            epochs=list(range(epochs + 1)), num_epochs=epochs,
            params=start + 0.01 * torch.randn(epochs + 1, start.numel()),
        )  # fmt: skip
        traj.save(expert_path(folder, i))
        trajectories.append(Trajectory.load(expert_path(folder, i)))
    return SnapshotBank(trajectories)


class Clock(L.Callback):
    """Wall and CPU time of every training batch (the iteration, backward and update)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.wall, self.cpu = device, [], []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_batch_start(self, *args) -> None:
        self._sync()
        self._t = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, *args) -> None:
        self._sync()
        self.wall.append(time.perf_counter() - self._t[0])
        self.cpu.append(time.process_time() - self._t[1])


def app_round(args, dm, folder: Path) -> tuple[list[float], list[float]]:
    model = TGDDModule(
        num_classes=dm.num_classes, image_shape=dm.image_shape, mean=dm.mean, std=dm.std,
        dataset=dm.name, trajectory_dir=str(folder), num_experts=2, arch="convnet3",
        arch_kwargs={"width": args.width}, ipc=args.ipc, factor=args.factor,
        real_batch=args.real_batch, lr_images=0.01 * args.ipc, alpha=2.5, image_every=0,
        iterations=args.warmup + args.iterations, export_dir=str(folder), init="real",
        augment="color_crop_cutout", augment_mode="idc", image_space="pixel",
        channels_last=args.channels_last, real_forward_batch=args.real_forward_batch,
    )  # fmt: skip
    clock = Clock(torch.device(args.device))
    trainer = L.Trainer(
        max_epochs=1, accelerator=args.accelerator, devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[clock],
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return clock.wall[args.warmup :], clock.cpu[args.warmup :]


def plain_round(args, dm, bank: SnapshotBank) -> tuple[list[float], list[float]]:
    """The TGDD code's loop: one optimiser step per class."""
    device = torch.device(args.device)
    real = dm.train_set.to(device)
    preprocess = dm.preprocess().to(device)
    rng = torch.Generator().manual_seed(1)
    count = dm.num_classes * args.ipc
    images = torch.cat(
        [real.sample(c, args.ipc * args.factor**2, rng) for c in range(dm.num_classes)]
    )
    data = images.reshape(count, args.factor**2, *dm.image_shape)[:, 0].clone().to(device)
    data.requires_grad_(True)
    optimizer = torch.optim.SGD([data], lr=0.01 * args.ipc, momentum=0.5)
    aug = DSA("color_crop_cutout", mode="idc")
    model_init = build_model("convnet3", dm.num_classes, dm.image_shape, width=args.width)
    model_final = build_model("convnet3", dm.num_classes, dm.image_shape, width=args.width)
    model_init.to(device), model_final.to(device)
    bank.to(device)
    walls, cpus = [], []
    for it in range(args.warmup + args.iterations):
        t = (time.perf_counter(), time.process_time())
        pick = sample_stage(bank.num_trajectories, bank.num_epochs, 7, rng)
        bank.load_into(model_init, pick.trajectory, pick.stage)
        bank.load_into(model_final, pick.trajectory, pick.constraint)
        with torch.no_grad():
            data.clamp_(0.0, 1.0)
        for c in range(dm.num_classes):
            img = real.sample(c, args.real_batch, rng)
            syn = decode_multiformation(data[c * args.ipc : (c + 1) * args.ipc], args.factor)
            label = torch.full((syn.shape[0],), c, device=device)
            n = img.shape[0]
            img_aug = aug(preprocess(torch.cat([img, syn])), generator=rng)
            with torch.no_grad():
                feat_tg = model_init.embed(img_aug[:n])
            feat = model_init.embed(img_aug[n:])
            loss_match = torch.sum((feat.mean(0) - feat_tg.mean(0)) ** 2)
            loss_cons = F.cross_entropy(model_final(img_aug[n:]), label)
            loss = loss_match + 2.5 * loss_cons
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if it >= args.warmup:
            walls.append(time.perf_counter() - t[0])
            cpus.append(time.process_time() - t[1])
    return walls, cpus


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser, subset=0)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--factor", type=int, default=2)
    parser.add_argument("--real-batch", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per round")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=4, help="rounds, sides alternated")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--channels-last", choices=("auto", "on", "off"), default="auto",
        help="the app's channels_last setting (auto: the app's default)",
    )  # fmt: skip
    parser.add_argument(
        "--real-forward-batch", type=int, default=None,
        help="the app's real_forward_batch (default: the app's automatic choice)",
    )  # fmt: skip
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench/tgdd_speed"))
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    args.accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    args.channels_last = {"auto": None, "on": True, "off": False}[args.channels_last]
    dm = load_data(args)
    folder = args.work_dir / f"experts_w{args.width}"
    bank = fake_experts(folder, dm, args.width)
    times = {"app": ([], []), "plain": ([], [])}
    for r in range(args.rounds):
        for side in ("app", "plain") if r % 2 == 0 else ("plain", "app"):
            walls, cpus = (
                app_round(args, dm, folder) if side == "app" else plain_round(args, dm, bank)
            )
            times[side][0].extend(walls)
            times[side][1].extend(cpus)
    med = {side: (median(w), median(c)) for side, (w, c) in times.items()}
    rows = [
        [side, 1000 * med[side][0], 1000 * med[side][1], len(times[side][0])]
        for side in ("app", "plain")
    ]
    wall_ratio = med["app"][0] / med["plain"][0]
    cpu_ratio = med["app"][1] / med["plain"][1]
    rows.append(["app / plain", wall_ratio, cpu_ratio, ""])
    target = 0.3 if args.device.startswith("cuda") else 0.8
    body = table(["side", "wall / iteration (ms)", "CPU / iteration (ms)", "iterations"], rows)
    body += (
        f"\n\nThe app takes {wall_ratio:.2f}x the plain loop's wall time and {cpu_ratio:.2f}x its "
        f"CPU time per iteration (target on this device: at most {target}x: "
        f"{'met' if max(wall_ratio, cpu_ratio) <= target else 'MISSED'}). Medians over "
        f"{args.rounds} alternated rounds of {args.iterations} iterations (after {args.warmup} "
        "warm-up), the same data, snapshots and settings on both sides.\n"
    )
    settings = {
        "data": f"{args.name} ({len(dm.train_set)} training images)",
        "network": f"convnet3 width {args.width}", "ipc": args.ipc, "factor": args.factor,
        "real_batch": args.real_batch, "augment": "color_crop_cutout (idc), siamese",
        "app": f"channels_last={args.channels_last}, real_forward_batch={args.real_forward_batch}"
        " (None: automatic)",
    }  # fmt: skip
    title = "TGDD: time per iteration, app vs a plain loop shaped like the TGDD code"
    emit(section(title, command_line(__file__, argv), args.device, settings, body), args.out)
    return med


if __name__ == "__main__":
    main()
