"""Where training an evaluation's runs together pays on a CPU: one at a time against together,
over the sizes of the benchmark configs.

For each ``--configs`` entry (``dataset:IPC``), the runs of a set (random real images standing
for a distilled set) and of its random-real baseline (``--runs`` each) are trained with the
evaluator of that dataset's configs, protocol ``short`` cut to ``--epochs`` epochs: one network
at a time (``batching: off``) and all of them together (``batching: on``), alternating over
``--rounds``; training only (the test split is measured the same way either way,
``eval_speed.py``). Process CPU time, medians. The table also says what ``batching: auto``
chooses there (:data:`lit_distill.evaluation.evaluator.CPU_GROUP_WORK`). A config may name the
ConvNet's width too (``dataset:IPC:width``; default: the configs' evaluator).

    python benchmarks/eval_grouping.py
    python benchmarks/eval_grouping.py --configs mnist:1 cifar10:10 --epochs 10
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from common import (
    add_allocator_argument,
    add_output_arguments,
    median,
    publish,
    set_host_memory,
    table,
)
from compare_methods import DATA_ARGS, DATASETS
from distill_accuracy import SHARED_DATA, build_cli
from eval_speed import evaluator_settings

from lit_distill.evaluation import SyntheticEvaluator
from lit_distill.evaluation.evaluator import CPU_GROUP_WORK, random_real_baseline, step_work
from lit_distill.export import SyntheticData
from lit_distill.models import build_model
from lit_distill.seeding import generator

CONFIGS = [
    "digits:1", "digits:10", "mnist:1", "cifar10:1", "mnist:10", "cifar10:10",
    "digits:1:128", "cifar10:1:128", "cifar10:3:128",
]  # fmt: skip


def measure(dataset: str, ipc: int, width: int | None, args: argparse.Namespace) -> dict:
    """CPU seconds of training the set's and the baseline's runs one at a time and together."""
    data_args = [a.format(root=args.data_root) for a in DATA_ARGS.get(dataset, ())]
    cli = build_cli(DATASETS[dataset]["tgdd"].at(1).config, data_args, Path("/tmp"), "cpu")
    dm = cli.datamodule
    dm.setup("fit")
    arch, kwargs = evaluator_settings(dataset)
    if width is not None:
        kwargs = {**kwargs, "width": width}
    sets = [
        SyntheticData.random_real(dm.train_set, ipc, generator(7), dataset=dm.name, zca=dm.zca,
                                  class_names=dm.class_names),  # stands for the distilled set
        random_real_baseline(dm.train_set, ipc, dm.zca, 0, args.runs),
    ]  # fmt: skip
    facts = (None, dm.preprocess(), dm.num_classes, dm.image_shape, "cpu")
    ways = {
        mode: SyntheticEvaluator(arch, kwargs, "short", args.runs, batching=mode,
                                 epochs=args.epochs)
        for mode in ("off", "on")
    }  # fmt: skip
    seconds: dict[str, list[float]] = {mode: [] for mode in ways}
    for r in range(args.rounds):
        for mode in ways if r % 2 == 0 else reversed(list(ways)):
            cpu = time.process_time()
            ways[mode].train_runs_many(sets, *facts)
            seconds[mode].append(time.process_time() - cpu)
    images = tuple(sets[0].decoded()[0].shape)
    per_step = min(ways["on"].protocol.batch_size, images[0])
    decoded = [tuple(s.decoded()) for s in [sets[0]] * args.runs + list(sets[1])]
    auto = SyntheticEvaluator(arch, kwargs, "short", args.runs, epochs=args.epochs)
    chosen = auto.batched(decoded, [0.01] * len(decoded), (dm.num_classes, dm.image_shape, "cpu"))
    net = build_model(arch, dm.num_classes, dm.image_shape, **kwargs)
    return {
        "dataset": dataset, "ipc": ipc, "arch": f"{arch} {kwargs}",
        "pixels": per_step * images[-2] * images[-1], "work": step_work(net, per_step, images),
        "off": median(seconds["off"]), "together": median(seconds["on"]), "auto": chosen,
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=CONFIGS, help="dataset:IPC[:width]")
    parser.add_argument("--runs", type=int, default=3, help="networks per set (as the configs)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--data-root", type=Path, default=SHARED_DATA)
    add_allocator_argument(parser)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    memory = set_host_memory(args.allocator)
    torch.set_num_threads(1)
    results = []
    for config in args.configs:
        dataset, ipc, *width = config.split(":")
        results.append(measure(dataset, int(ipc), int(width[0]) if width else None, args))
    rows = [
        [r["dataset"], r["ipc"], r["arch"], r["pixels"], r["work"], r["off"], r["together"],
         r["off"] / r["together"], "together" if r["auto"] else "one at a time"]
        for r in results
    ]  # fmt: skip
    right = sum(r["auto"] == (r["off"] > r["together"]) for r in results)
    body = table(
        ["dataset", "IPC", "network", "pixels per run-step", "work per run-step",
         "one at a time CPU (s)",
         "together CPU (s)", "speed-up", "auto chooses"], rows,
    ) + (
        f"\n\nTraining only ({args.runs} runs on a set and {args.runs} on random real subsets, "
        f"protocol short cut to {args.epochs} epochs), 1 thread, medians of {args.rounds} "
        f"alternated rounds; host memory {memory}. Work = pixels x the first convolution's "
        f"channels. On a CPU `batching: auto` trains runs together up to {CPU_GROUP_WORK:,} "
        f"of work per run-step: the faster way at {right} of {len(results)} sizes here.\n"
    )  # fmt: skip
    title = "Evaluation on the CPU: where training the runs together pays"
    publish(title, __file__, argv, args, body)
    return results


if __name__ == "__main__":
    main()
