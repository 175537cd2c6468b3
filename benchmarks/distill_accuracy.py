"""Distilled-set accuracy: TGDD against DM and a random real subset, mean ± std over runs.

For every dataset and IPC the script runs the application itself: the experts of the dataset's
expert config (trained once, cached under ``<work-dir>/experts/``, skipped when present), the
TGDD config through ``LitDistillCLI`` (what ``lit-distill fit`` builds; the configs' callbacks
and logger removed), then the same config with ``--model lit_distill.distill.DMModule``: DM
keeps every shared setting of the TGDD run and differs only in its extractors (fresh random
networks, alpha 0). ONE ``SyntheticEvaluator`` (same architecture, protocol, seeds and runs)
then evaluates the TGDD set, the DM set, the random real baseline (run r trains on its own
random subset of the same IPC, as ``EvaluationCallback`` does) and the set both methods start
from (iteration 0: what the iterations add). TGDD's lead over the random subsets is *clear*
when it exceeds the two standard deviations summed.

    python benchmarks/distill_accuracy.py        # digits + MNIST, IPC 1 and 10, CPU
    python benchmarks/distill_accuracy.py --datasets mnist --ipc 10 --device cuda \\
        --width 128 --iterations 10000 --expert-epochs 60 --num-experts 5 --protocol tgdd
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
import torch
import yaml
from common import command_line, emit, section, table

from lit_distill.cli import LitDistillCLI, resolve_config
from lit_distill.evaluation import EvalResult, SyntheticEvaluator
from lit_distill.evaluation.evaluator import random_real_baseline
from lit_distill.experts import resolve_recipe
from lit_distill.export import SyntheticData
from lit_distill.main import main as lit_distill
from lit_distill.trajectory import Trajectory, list_experts

BENCH = Path(__file__).resolve().parent
#: The project's shared real data (see ../shared/data/README.md).
SHARED_DATA = BENCH.parents[1] / "shared" / "data"
QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.logger=false",
]
# The benchmark evaluates every set itself with one evaluator: no callbacks, no checkpoints.
BARE = [*QUIET, "--trainer.callbacks=[]", "--trainer.enable_checkpointing=false"]
# TGDD's own hyper-parameters: the only ones in which the DM run may differ (image_space: each
# method optimises its images where its reference does, TGDD pixels, DM normalised inputs).
TGDD_ONLY = (
    "trajectory_dir", "num_experts", "expert_region", "alpha", "expert_config",
    "train_missing_experts", "image_space",
)  # fmt: skip
# The script passes its settings to LightningCLI as args, by design.
warnings.filterwarnings("ignore", "LightningCLI's args parameter")


@dataclass(frozen=True)
class DatasetSpec:
    """The configs a dataset's settings come from (their values are the defaults)."""

    distill_config: str  # a TGDD config: shipped name or path
    expert_config: str
    data_args: tuple[str, ...] = ()  # --data overrides; "{root}" stands for --data-root


DATASETS = {
    "digits": DatasetSpec("tgdd_digits.yaml", "experts_digits.yaml"),
    "mnist": DatasetSpec(
        str(BENCH / "configs/tgdd_mnist_cpu.yaml"),
        str(BENCH / "configs/experts_mnist_cpu.yaml"),
        ("--data.init_args.root={root}",),
    ),
    # The published settings (ConvNet-3, IPC 10, factor 2, 10,000 iterations): GPU-sized.
    "cifar10": DatasetSpec(
        "tgdd_cifar10_ipc10.yaml",
        "experts_cifar10_tgdd.yaml",
        (
            "--data=lit_distill.data.NpzDataModule",
            "--data.init_args.path={root}/cifar10/cifar10.npz",
            "--data.init_args.name=cifar10",
        ),
    ),
}


@dataclass
class Setting:
    """One dataset's resolved settings: its configs' values with the command's overrides."""

    dataset: str
    spec: DatasetSpec
    distill: dict  # the TGDD config's model.init_args
    arch_kwargs: dict
    expert_epochs: int
    num_experts: int
    trajectory_dir: str
    data_args: list[str]


def init_args(config: str) -> dict:
    """``model.init_args`` of a config file (shipped name or path)."""
    with open(resolve_config(config), encoding="utf-8") as f:
        return yaml.safe_load(f)["model"]["init_args"]


def resolve_setting(dataset: str, args: argparse.Namespace, work_dir: Path) -> Setting:
    """The dataset's settings, with ``--width``, ``--expert-epochs``, ``--num-experts``."""
    spec = DATASETS[dataset]
    distill, experts = init_args(spec.distill_config), init_args(spec.expert_config)
    arch_kwargs = {
        **(distill.get("arch_kwargs") or {}),
        **({"width": args.width} if args.width else {}),
    }
    epochs = args.expert_epochs or experts.get("epochs") or resolve_recipe(experts["recipe"]).epochs
    name = f"{dataset}_{distill['arch']}_w{arch_kwargs.get('width', 'default')}_e{epochs}"
    return Setting(
        dataset, spec, distill, arch_kwargs, epochs, args.num_experts or experts["num_experts"],
        str(work_dir / "experts" / name), [a.format(root=args.data_root) for a in spec.data_args],
    )  # fmt: skip


def ensure_experts(setting: Setting, accelerator: str, extra: Sequence[str] = ()) -> str:
    """Train the missing experts with the expert config (``lit-distill fit``); say what was done."""
    found = len(list_experts(setting.trajectory_dir))
    if found >= setting.num_experts:
        return f"reused {setting.num_experts} cached experts"
    overrides = {
        "trajectory_dir": setting.trajectory_dir,
        "arch": setting.distill["arch"],
        "arch_kwargs": json.dumps(setting.arch_kwargs),
        "epochs": setting.expert_epochs,
        "num_experts": setting.num_experts,
    }
    config = ["--config", setting.spec.expert_config, f"--trainer.accelerator={accelerator}"]
    model = [f"--model.init_args.{k}={v}" for k, v in overrides.items()]
    lit_distill(["fit", *config, *QUIET, *setting.data_args, *model, *extra])
    return f"trained {setting.num_experts - found} experts (cached for later runs)"


def distill_args(
    setting: Setting, method: str, ipc: int, iterations: int = 0, lr_per_ipc: float = 0.0
) -> list[str]:
    """The ``lit-distill`` overrides of one run (0: the config's value)."""
    config = setting.distill
    lr_per_ipc = lr_per_ipc or config["lr_images"] / config["ipc"]  # TGDD: lr_img = 0.01 x IPC
    shared = [
        *setting.data_args,
        f"--model.init_args.ipc={ipc}",
        f"--model.init_args.lr_images={lr_per_ipc * ipc:g}",
        f"--model.init_args.arch_kwargs={json.dumps(setting.arch_kwargs)}",
        f"--model.init_args.iterations={iterations or config['iterations']}",
    ]
    if method == "dm":  # the class changes; jsonargparse keeps the init_args DMModule accepts
        return ["--model", "lit_distill.distill.DMModule", *shared]
    return [
        f"--model.init_args.trajectory_dir={setting.trajectory_dir}",
        f"--model.init_args.num_experts={setting.num_experts}",
        "--model.init_args.train_missing_experts=false",
        *shared,
    ]


def build_cli(config: str, overrides: Sequence[str], root: Path, accelerator: str) -> LitDistillCLI:
    """Model, datamodule and Trainer exactly as ``lit-distill fit --config ...`` builds them."""
    trainer = [f"--trainer.default_root_dir={root}", f"--trainer.accelerator={accelerator}"]
    return LitDistillCLI(
        args=["--config", resolve_config(config), *BARE, *trainer, *overrides], run=False
    )


class StartSet(L.Callback):
    """Keeps the synthetic set as it is before the first iteration."""

    data: SyntheticData | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.data = replace(pl_module.synthetic_data(), method="start")


def distill(setting: Setting, method: str, ipc: int, args: argparse.Namespace) -> dict:
    """One distillation run: the CLI objects, the start and final sets, the fit's seconds."""
    root = args.work_dir / "accuracy" / f"{setting.dataset}_ipc{ipc}_{method}"
    overrides = distill_args(setting, method, ipc, args.iterations, args.lr_images)
    cli = build_cli(setting.spec.distill_config, overrides, root, args.accelerator)
    start = StartSet()
    cli.trainer.callbacks.append(start)
    clock = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - clock
    return {"cli": cli, "final": cli.model.synthetic_data(), "start": start.data, "s": seconds}


def run_setting(setting: Setting, ipc: int, args: argparse.Namespace) -> dict:
    """TGDD and DM for one (dataset, IPC), and every set through one evaluator."""
    tgdd, dm = (distill(setting, method, ipc, args) for method in ("tgdd", "dm"))
    cli = tgdd["cli"]
    arch = setting.distill["arch"]
    evaluator = SyntheticEvaluator(
        arch, setting.arch_kwargs, args.protocol, args.runs, epochs=args.eval_epochs
    )
    train, zca = cli.datamodule.train_set, cli.model.zca
    real = random_real_baseline(train, ipc, zca, evaluator.seed, runs=args.runs)
    sets = {"tgdd": tgdd["final"], "dm": dm["final"], "random_real": real, "start": tgdd["start"]}
    facts = (cli.datamodule.test_set, cli.model.preprocess, cli.datamodule.num_classes)
    facts += (cli.datamodule.image_shape, args.device)
    hp_tgdd = dict(cli.model.hparams)
    return {
        "results": {name: evaluator.evaluate(data, *facts) for name, data in sets.items()},
        "seconds": (tgdd["s"], dm["s"]),
        "differs": differing(hp_tgdd, dict(dm["cli"].model.hparams)),
        # DM starts from the same pixels, mapped to its input space and back: equal to rounding.
        "same_start": torch.allclose(tgdd["start"].images, dm["start"].images, atol=1e-5),
        "hparams": hp_tgdd,
        "protocol": evaluator.protocol,
    }


def differing(tgdd: dict, dm: dict) -> list[str]:
    """Hyper-parameters of the TGDD run that the DM run lacks or sets differently."""
    return sorted(
        k for k, v in tgdd.items() if not k.startswith("_") and (k not in dm or dm[k] != v)
    )


def pct(result: EvalResult) -> str:
    return f"{100 * result.mean:.2f} ± {100 * result.std:.2f}"


def lead(results: dict[str, EvalResult], baselines: Sequence[str]) -> tuple[float, bool]:
    """TGDD's lead over the best baseline in points; clear when above both stds summed."""
    best = max((results[b] for b in baselines), key=lambda r: r.mean)
    gap = 100 * (results["tgdd"].mean - best.mean)
    return gap, gap > 100 * (results["tgdd"].std + best.std)


def summary_table(outcomes: list[tuple[Setting, int, dict]]) -> str:
    rows = []
    for setting, ipc, out in outcomes:
        res = out["results"]
        gap, clear = lead(res, ("random_real",))
        rows.append([
            setting.dataset, ipc, *(pct(res[m]) for m in ("tgdd", "dm", "random_real", "start")),
            f"{gap:+.2f}", "yes" if clear else "NO", f"{lead(res, ('dm',))[0]:+.2f}",
        ])  # fmt: skip
    headers = [
        "dataset", "IPC", "TGDD (%)", "DM (%)", "random real (%)", "start set (%)",
        "TGDD − random (pts)", "clear", "TGDD − DM (pts)",
    ]  # fmt: skip
    return table(headers, rows)


def describe(setting: Setting, ipc: int, out: dict) -> str:
    """Settings, times and per-run accuracies of one (dataset, IPC)."""
    hp, p, s = out["hparams"], out["protocol"], setting
    keys = "arch arch_kwargs factor init lr_images momentum_images real_batch iterations alpha"
    keys += " expert_region augment augment_mode seed"
    experts = list_experts(s.trajectory_dir)[: s.num_experts]
    expert_acc = sum(Trajectory.load(e).test_accuracy[-1] for e in experts) / len(experts)
    raw = "; ".join(f"{k}: " + ", ".join(f"{100 * a:.2f}" for a in r.accuracies)
                    for k, r in out["results"].items())  # fmt: skip
    return (
        f"### {s.dataset}, IPC {ipc}\n\n- distillation (`{s.spec.distill_config}`): "
        + ", ".join(f"{k}={hp[k]}" for k in keys.split())
        + f"\n- experts (`{s.spec.expert_config}`): {s.num_experts} x {s.expert_epochs} epochs "
        f"in `{s.trajectory_dir}`, final test accuracy {100 * expert_acc:.2f} % (mean)\n"
        f"- DM differs from TGDD only in: {', '.join(out['differs'])}; same start set: "
        f"{out['same_start']}\n- evaluation: {p.name} protocol ({p.epochs} epochs, batch "
        f"{p.batch_size}, lr {p.lr}, {p.augment}, select {p.select}), "
        f"{len(out['results']['tgdd'].accuracies)} runs of {hp['arch']} {hp['arch_kwargs']}\n"
        f"- fit wall time (s): TGDD {out['seconds'][0]:.1f}, DM {out['seconds'][1]:.1f}\n"
        f"- accuracy per run (%): {raw}\n"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--datasets", default="digits,mnist", help=f"comma list of {sorted(DATASETS)}")
    add("--ipc", default="1,10", help="comma list of images per class")
    add("--runs", type=int, default=3, help="evaluation networks per set")
    add("--iterations", type=int, default=0, help="distillation iterations (0: the config's)")
    add("--width", type=int, default=0, help="ConvNet width (0: the config's)")
    add("--lr-images", type=float, default=0.0, help="image lr per IPC (0: config lr / ipc)")
    add("--expert-epochs", type=int, default=0, help="expert epochs (0: the expert config's)")
    add("--num-experts", type=int, default=0, help="experts (0: the expert config's)")
    add("--protocol", default="short", help="evaluation protocol (mtt, tgdd, dm, short)")
    add("--eval-epochs", type=int, default=None, help="override of the protocol's epochs")
    add("--device", default="cpu", help="cpu or cuda")
    add("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    add("--data-root", type=Path, default=SHARED_DATA, help="root of the shared datasets")
    add("--work-dir", type=Path, default=Path("runs/bench"), help="experts cache, run folders")
    add("--out", type=Path, default=None, help="append the result section to this Markdown file")
    args = parser.parse_args(argv)
    args.accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    return args


@contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads (0: unchanged), then restore the previous count.

    Small networks gain little from more threads, and a shared CPU suffers from them.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def main(argv: Sequence[str] | None = None) -> list[tuple[Setting, int, dict]]:
    """Run the benchmark; print the table, append the section to ``--out``, return outcomes."""
    args = parse_args(argv)
    clock, outcomes, notes = time.perf_counter(), [], []
    with cpu_threads(args.threads):
        for dataset in args.datasets.split(","):
            setting = resolve_setting(dataset, args, args.work_dir)
            notes.append(f"{dataset}: {ensure_experts(setting, args.accelerator)}")
            for ipc in (int(v) for v in args.ipc.split(",")):
                outcomes.append((setting, ipc, run_setting(setting, ipc, args)))
        minutes = (time.perf_counter() - clock) / 60
        body = (
            f"{summary_table(outcomes)}\n\n*random real*: run r trains on its own random subset. "
            "*start set*: the images both methods start from. *clear*: TGDD's mean exceeds the "
            "random subsets' by more than the two stds summed. Settings given as 0 take the "
            f"configs' values (below). Experts: {'; '.join(notes)}. Total wall time: "
            f"{minutes:.1f} min.\n\n" + "\n".join(describe(*outcome) for outcome in outcomes)
        )
        settings = {k: v for k, v in vars(args).items() if k not in ("out", "accelerator")}
        title = "Distillation accuracy: TGDD vs DM vs random real"
        emit(section(title, command_line(__file__, argv), args.device, settings, body), args.out)
    return outcomes


if __name__ == "__main__":
    main()
