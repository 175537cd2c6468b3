"""Expert-training throughput: the Lightning app against a plain PyTorch loop, in one run.

Both sides train the same network (same seed, hence the same initial weights and the same
shuffling order) with the same loader, batch size, DSA augmentation, per-step random streams and
SGD settings; the final parameters of the two sides are compared as a check that they did the
same work. The app side is what ``lit-distill fit --config experts_*.yaml`` runs:
``ExpertModule`` trained by ``train_experts`` with a ``lightning.Trainer``, its
``TrajectoryCallback`` (from ``configure_callbacks``), a TensorBoard logger and the default
progress bar; validation is off on both sides. The plain side is the loop a researcher would
write, keeping its trajectory in memory after every epoch as an expert-training script does.

Only steady-state epochs are timed: from the start of the first epoch after ``--warmup-epochs``
to the end of training (everything between epochs included: snapshots, scheduler, logging),
never setup or the file written at the end. The sides alternate in order over ``--repeats``.

    python benchmarks/expert_throughput.py                     # CPU defaults: a few minutes
    python benchmarks/expert_throughput.py --device cuda --width 128 --subset 0 --epochs 4
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from common import (
    SubsetNpzDataModule,
    add_data_arguments,
    add_output_arguments,
    command_line,
    emit,
    load_data,
    median,
    section,
    table,
)
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.profilers import Profiler, SimpleProfiler
from torch import Tensor

from lit_distill.augment import DSA, cutmix
from lit_distill.experts import ExpertModule, ExpertRecipe, resolve_recipe
from lit_distill.experts.runner import train_experts
from lit_distill.models import build_model
from lit_distill.seeding import derive_seed, generator
from lit_distill.trajectory import Trajectory, expert_path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser, subset=2560)
    parser.add_argument("--recipe", default="mtt", choices=["mtt", "datm", "tgdd"])
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--arch", default="convnet3")
    parser.add_argument("--width", type=int, default=32, help="128 in the papers")
    parser.add_argument("--epochs", type=int, default=3, help="per side and repeat, warm-up in")
    parser.add_argument("--warmup-epochs", type=int, default=1, help="epochs left out of timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--progress-bar",
        default="tqdm",
        choices=["tqdm", "none"],
        help="app side: a TQDM bar (what `lit-distill fit` shows) or none",
    )
    parser.add_argument(
        "--refresh-rate",
        type=int,
        default=10,
        help="steps between bar redraws (shipped configs: 10; Lightning's default: 1)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="one more app run under Lightning's SimpleProfiler"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.epochs <= args.warmup_epochs:
        parser.error("--epochs must exceed --warmup-epochs (at least one timed epoch)")
    return args


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hide Lightning's start-up lines and the warnings every short run repeats."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*isinstance.treespec, LeafSpec.*")
        try:
            yield
        finally:
            logger.setLevel(level)


def _clock(device: torch.device) -> float:
    """Wall-clock seconds once the device has finished the queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@dataclass
class Run:
    """One side's timed epochs: seconds, and the parameters after the last epoch."""

    seconds: float
    final: Tensor


class EpochTimer(L.Callback):
    """Clock at every training-epoch start and at the end of training (device synchronised)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.end = math.nan

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.starts.append(_clock(pl_module.device))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end = _clock(pl_module.device)


def run_app(
    dm: SubsetNpzDataModule,
    args: argparse.Namespace,
    workdir: Path,
    profiler: Profiler | None = None,
) -> Run:
    """Train one expert with the app, as ``lit-distill fit`` does; time its steady epochs."""
    facts = (dm.num_classes, dm.image_shape, dm.mean, dm.std, dm.name)
    options = {"arch": args.arch, "arch_kwargs": {"width": args.width}, "recipe": args.recipe}
    model = ExpertModule(
        *facts, **options, epochs=args.epochs, batch_size=args.batch_size,
        trajectory_dir=str(workdir / "experts"), seed=args.seed,
    )  # fmt: skip
    timer = EpochTimer()
    bar = [TQDMProgressBar(refresh_rate=args.refresh_rate)] if args.progress_bar == "tqdm" else []

    def make_trainer(**overrides) -> L.Trainer:
        return L.Trainer(
            accelerator=args.device,
            devices=1,
            callbacks=[timer, *bar],
            limit_val_batches=0,
            enable_checkpointing=False,  # as in configs/experts_*.yaml
            enable_progress_bar=args.progress_bar == "tqdm",
            enable_model_summary=False,
            profiler=profiler,
            **overrides,
        )

    logger = TensorBoardLogger(save_dir=workdir / "tb", name="experts")
    train_experts(model, dm, make_trainer, logger=logger)
    final = Trajectory.load(expert_path(workdir / "experts", 0)).snapshot(-1)
    return Run(timer.end - timer.starts[args.warmup_epochs], final)


def _flat(net: torch.nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in net.parameters()])


class PlainLoop:
    """The same training as the plain PyTorch loop a researcher would write."""

    def __init__(self, dm: SubsetNpzDataModule, args: argparse.Namespace, recipe: ExpertRecipe):
        self.args, self.recipe, self.device = args, recipe, torch.device(args.device)
        seed = derive_seed(args.seed, 0)  # expert 0's seed, as the app derives it
        torch.manual_seed(seed)
        self.net = build_model(args.arch, dm.num_classes, dm.image_shape, width=args.width)
        self.net.to(self.device).train()
        torch.manual_seed(seed % 2**32)  # the shuffling order: train_experts seeds the same way
        self.preprocess = dm.preprocess().to(self.device)
        self.augment = DSA(recipe.augment, mode=recipe.augment_mode, per_sample=True)
        r = recipe
        self.optimizer = torch.optim.SGD(
            self.net.parameters(), lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, r.milestone_epochs(), r.gamma
        )
        self.loader = dm.loader("train", r.batch_size, shuffle=True)

    def step(self, images: Tensor, labels: Tensor, index: int) -> None:
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        # The same derived stream per step as the app (a seeded torch.Generator each step).
        rng = generator(self.args.seed, 0, 0, index)
        in_input = self.recipe.augment_space == "input"  # augment where the recipe says
        images = self.preprocess(images) if in_input else images
        images = self.augment(images, generator=rng)
        labels_b, lam = labels, 1.0
        if self.recipe.cutmix_prob > 0:
            images, _, labels_b, lam = cutmix(images, labels, rng, prob=self.recipe.cutmix_prob)
        logits = self.net(images if in_input else self.preprocess(images))
        loss = F.cross_entropy(logits, labels)
        if lam < 1:
            loss = lam * loss + (1 - lam) * F.cross_entropy(logits, labels_b)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def run(self) -> Run:
        """Train every epoch, keeping the trajectory in memory; time the steady epochs."""
        trajectory, starts, index = [_flat(self.net)], [], 0
        for _ in range(self.recipe.epochs):
            starts.append(_clock(self.device))
            for images, labels in self.loader:
                self.step(images, labels, index)
                index += 1
            self.scheduler.step()
            trajectory.append(_flat(self.net))
        return Run(_clock(self.device) - starts[self.args.warmup_epochs], trajectory[-1])


def warm_up(dm: SubsetNpzDataModule, args: argparse.Namespace, recipe: ExpertRecipe) -> None:
    """Run every DSA op once, so that neither side pays a first call of the process.

    The warm-up epoch of each side may not draw every op (one op per batch), and the side that
    runs first would otherwise pay for the op's first call (kernel/primitive set-up) alone.
    """
    images, _ = next(iter(dm.loader("train", recipe.batch_size, shuffle=False)))
    for op in DSA(recipe.augment).ops:
        DSA(op, per_sample=True)(images.to(args.device))


def measure(dm: SubsetNpzDataModule, args: argparse.Namespace) -> list[dict[str, object]]:
    """Alternate app and plain over the repeats; one row of rates per repeat."""
    recipe = resolve_recipe(args.recipe, epochs=args.epochs, batch_size=args.batch_size)
    warm_up(dm, args, recipe)
    images = len(dm.train_set) * (args.epochs - args.warmup_epochs)
    steps = math.ceil(len(dm.train_set) / recipe.batch_size) * (args.epochs - args.warmup_epochs)
    rows = []
    for repeat in range(args.repeats):
        order = ("app", "plain") if repeat % 2 == 0 else ("plain", "app")
        runs = {}
        for side in order:
            with tempfile.TemporaryDirectory() as workdir:
                runs[side] = (
                    run_app(dm, args, Path(workdir))
                    if side == "app"
                    else PlainLoop(dm, args, recipe).run()
                )
        app, plain = runs["app"], runs["plain"]
        rows.append(
            {
                "repeat": repeat + 1,
                "order": " then ".join(order),
                "app": images / app.seconds,
                "plain": images / plain.seconds,
                "ratio": plain.seconds / app.seconds,
                "overhead_ms": 1000 * (app.seconds - plain.seconds) / steps,
                "max_diff": f"{float((app.final - plain.final).abs().max()):.1e}",
            }
        )
    return rows


def profile_app(dm: SubsetNpzDataModule, args: argparse.Namespace) -> str:
    """Lightning's per-hook timing summary of one more app run (not part of the ratio)."""
    with tempfile.TemporaryDirectory() as workdir:
        profiler = SimpleProfiler(dirpath=workdir, filename="profile")
        run_app(dm, args, Path(workdir), profiler=profiler)
        report = next(Path(workdir).glob("*profile*.txt")).read_text()
    return f"Lightning SimpleProfiler, one more app run:\n\n```\n{report.strip()}\n```\n"


def report(args: argparse.Namespace, rows: list[dict[str, object]]) -> str:
    """The result tables, in Markdown."""
    headers = [
        "repeat",
        "order",
        "app (img/s)",
        "plain (img/s)",
        "app/plain",
        "app overhead (ms/step)",
        "max abs Δθ, final",
    ]
    keys = ["repeat", "order", "app", "plain", "ratio", "overhead_ms", "max_diff"]
    body = [[row[k] for k in keys] for row in rows]
    medians = [median([row[k] for row in rows]) for k in keys[2:6]]
    body.append(["median", "", *medians, ""])
    verdict = "meets" if medians[2] >= 0.9 else "MISSES"
    return (
        table(headers, body)
        + f"\n\nThe app reaches {medians[2]:.3f}x the plain loop (median): {verdict} the 0.9x "
        "target. The last column compares the final parameters of the two sides: ~0 means they did "
        "the same computation.\n"
    )


def settings(args: argparse.Namespace) -> dict[str, object]:
    recipe = resolve_recipe(args.recipe, batch_size=args.batch_size)
    bar = (
        f"TQDMProgressBar (refresh every {args.refresh_rate} steps)"
        if args.progress_bar == "tqdm"
        else "no bar"
    )
    return {
        "data": f"{args.data} ({args.name}, subset {args.subset or 'all'}, zca {args.zca})",
        "model": f"{args.arch} width {args.width}",
        "recipe": f"{args.recipe} (batch {recipe.batch_size}, lr {recipe.lr}, momentum "
        f"{recipe.momentum}, DSA {recipe.augment} mode {recipe.augment_mode} per sample)",
        "epochs": f"{args.epochs} per side and repeat, the first {args.warmup_epochs} untimed",
        "repeats": args.repeats,
        "app": f"ExpertModule + Trainer, {bar}, TensorBoardLogger (log_every_n_steps 50), "
        "TrajectoryCallback, validation off",
        "plain": "same loader, DSA and per-step generator, SGD, trajectory kept in memory, "
        "no metrics or logging",
        "seed": args.seed,
    }


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    """Run the benchmark, print its Markdown section (and append it to ``--out``)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dm = load_data(args)
    with quiet_lightning():
        rows = measure(dm, args)
        body = report(args, rows) + ("\n" + profile_app(dm, args) if args.profile else "")
    title = "Expert-training throughput: Lightning app vs plain PyTorch loop"
    text = section(title, command_line(__file__, argv), args.device, settings(args), body)
    emit(text, args.out)
    return rows


if __name__ == "__main__":
    main()
