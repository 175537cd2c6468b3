"""MCT against MTT on the same experts: iterations to reach a matching loss and an accuracy.

The MCT paper claims that matching the convexified (straight-line) trajectory converges in
fewer distillation iterations than matching the SGD trajectory. Both methods run here from their
configs (digits: the shipped ``mtt_digits``/``mct_digits``; MNIST and CIFAR-10: the CPU-sized
``benchmarks/configs/<method>_<dataset>_ipc<N>_cpu.yaml``; the same student, learning rates and
augmentation) on the SAME expert files, for ``--iterations`` iterations. Every ``--eval-every``
iterations (and before the first) the current set is evaluated with one ``SyntheticEvaluator``;
every iteration's matching loss is recorded.

MCT runs twice: ``mct_window`` draws its start points from the part of the line that MTT's start
window covers (``max_start_epoch``: λ < max_start_epoch / K), ``mct_line`` from the whole line
(the target at most θ_K). Comparing them separates the effect of matching a line from the
effect of where the segments start.

Reported per method: the first iteration whose running mean loss (``--window`` iterations) is at
most ``--loss``, and the first evaluation at or above ``--accuracy``. The two losses measure the
distance to different targets (an SGD snapshot, a point on the line), so the loss threshold says
how fast each objective is fitted; the accuracy threshold compares what the sets are worth.

    python benchmarks/mct_convergence.py                       # digits, IPC 1, CPU
    python benchmarks/mct_convergence.py --dataset mnist --accuracy 0.75
    python benchmarks/mct_convergence.py --iterations 2000 --eval-every 100 --accuracy 0.93
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from common import add_output_arguments, command_line, emit, section, table
from compare_methods import DATA_ARGS, DATASETS, ensure_experts, model_args
from distill_accuracy import QUIET, SHARED_DATA, build_cli, cpu_threads

from lit_distill.cli import resolve_config
from lit_distill.evaluation import SyntheticEvaluator
from lit_distill.main import main as lit_distill

METHODS = ("mtt", "mct_window", "mct_line")


class Progress(L.Callback):
    """Each iteration's matching loss, and the evaluation of the set every ``every`` iterations."""

    def __init__(self, every: int, evaluate) -> None:
        self.every, self.evaluate = every, evaluate
        self.losses: list[float] = []
        self.accuracy: dict[int, float] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.accuracy[0] = self.evaluate(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))
        step = int(pl_module.iteration)
        if step % self.every == 0:
            self.accuracy[step] = self.evaluate(pl_module)


def expert_folder(args: argparse.Namespace) -> str:
    """The MTT config's experts, trained when missing (digits: under the work dir; MNIST and
    CIFAR-10: the benchmarks' shared cache, as compare_methods.py trains them)."""
    if args.dataset != "digits":
        run = DATASETS[args.dataset]["mtt"].at(args.ipc)
        spec = argparse.Namespace(width=0, expert_epochs=0, num_experts=0,
                                  work_dir=args.work_dir.parent)  # fmt: skip
        ensure_experts(run, spec, args.data_args)
        hp = model_args(run.config)
        return str(spec.work_dir / "experts" / Path(hp["trajectory_dir"]).name)
    experts = str(args.work_dir / "experts")
    hp = model_args("mtt_digits.yaml")
    if len(list(Path(experts).glob("expert_*.pt"))) < hp["num_experts"]:
        model = [f"--model.init_args.trajectory_dir={experts}"]
        model.append(f"--model.init_args.num_experts={hp['num_experts']}")
        lit_distill(["fit", "--config", resolve_config(hp["expert_config"]), *QUIET, *model])
    return experts


def first_below(losses: list[float], threshold: float, window: int) -> int | None:
    """The first iteration (1-based) whose running mean of the last ``window`` losses is at most
    ``threshold``."""
    for i in range(window, len(losses) + 1):
        if statistics.fmean(losses[i - window : i]) <= threshold:
            return i
    return None


def first_at_least(accuracy: dict[int, float], threshold: float) -> int | None:
    return next((step for step, acc in sorted(accuracy.items()) if acc >= threshold), None)


def config_of(method: str, args: argparse.Namespace) -> str:
    """The config of ``mtt`` or ``mct`` on the dataset (at ``--ipc`` for the CPU configs)."""
    return DATASETS[args.dataset][method.split("_")[0]].at(args.ipc).config


def run(method: str, args: argparse.Namespace, experts: str) -> Progress:
    overrides = [
        *args.data_args,
        f"--model.init_args.ipc={args.ipc}",
        f"--model.init_args.iterations={args.iterations}",
        f"--model.init_args.trajectory_dir={experts}",
        "--model.init_args.train_missing_experts=false",
    ]
    if method == "mct_window":  # the part of the line MTT's start epochs cover
        window = model_args(config_of("mtt", args))["max_start_epoch"]
        overrides.append(f"--model.init_args.max_start_epoch={window}")
    elif method == "mct_line":
        overrides.append("--model.init_args.max_start_epoch=null")
    config = config_of(method, args)
    cli = build_cli(config, overrides, args.work_dir / args.dataset / method, args.accelerator)
    hp = cli.model.hparams
    evaluator = SyntheticEvaluator(
        hp.arch, hp.arch_kwargs, args.protocol, args.runs, epochs=args.eval_epochs
    )

    def evaluate(module) -> float:
        data = module.synthetic_data()
        dm = module.datamodule
        facts = (dm.test_set, module.preprocess, dm.num_classes, dm.image_shape, module.device)
        return evaluator.evaluate(data, *facts).mean

    progress = Progress(args.eval_every, evaluate)
    cli.trainer.callbacks.append(progress)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return progress


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits", choices=sorted(DATASETS))
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--data-root", type=Path, default=SHARED_DATA, help="the shared datasets")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--window", type=int, default=20, help="running-mean window of the loss")
    parser.add_argument("--loss", type=float, default=0.5, help="matching-loss threshold")
    parser.add_argument("--accuracy", type=float, default=0.9, help="accuracy threshold")
    parser.add_argument("--protocol", default="short")
    parser.add_argument("--eval-epochs", type=int, default=None)
    parser.add_argument("--runs", type=int, default=2, help="evaluation networks per point")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench/mct_convergence"))
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    args.accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    args.data_args = [a.format(root=args.data_root) for a in DATA_ARGS.get(args.dataset, ())]
    clock = time.perf_counter()
    with cpu_threads(args.threads):
        # One expert set for both: the MTT config's experts (MCT reads their end points).
        experts = expert_folder(args)
        progress = {m: run(m, args, experts) for m in METHODS}
    rows = []
    for m, p in progress.items():
        loss_at = first_below(p.losses, args.loss, args.window)
        acc_at = first_at_least(p.accuracy, args.accuracy)
        rows.append([
            m, "not reached" if loss_at is None else loss_at,
            "not reached" if acc_at is None else acc_at,
            statistics.fmean(p.losses[: args.window]), statistics.fmean(p.losses[-args.window :]),
            100 * p.accuracy[0], 100 * max(p.accuracy.values()), 100 * p.accuracy[max(p.accuracy)],
        ])  # fmt: skip
    body = table(
        ["method", f"iterations to loss ≤ {args.loss}", f"iterations to acc ≥ {args.accuracy:.0%}",
         "loss, first window", "loss, last window", "acc at 0 (%)", "best acc (%)",
         "final acc (%)"],
        rows,
    )  # fmt: skip
    steps = sorted(progress["mtt"].accuracy)
    body += "\n\n" + table(
        ["iteration", *(f"{m} acc (%)" for m in METHODS)],
        [[s, *(100 * progress[m].accuracy.get(s, float("nan")) for m in METHODS)] for s in steps],
    )
    minutes = (time.perf_counter() - clock) / 60
    configs = ", ".join(f"`{Path(config_of(m, args)).name}`" for m in ("mtt", "mct"))
    body += (
        f"\n\nConfigs: {configs} (mct_window: max_start_epoch of the MTT config; mct_line: the "
        f"whole line). Same experts for all (the MTT config's, in `{experts}`); loss = each "
        "method's own matching loss, running mean over "
        f"{args.window} iterations. Evaluation: protocol {args.protocol}, {args.runs} runs per "
        f"point. Total wall time {minutes:.1f} min.\n"
    )
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "accelerator")}
    title = "MCT vs MTT: iterations to a matching loss and to an accuracy"
    emit(section(title, command_line(__file__, argv), args.device, settings, body), args.out)
    return progress


if __name__ == "__main__":
    main()
