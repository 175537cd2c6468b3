"""Evaluation time: the runs of one evaluation trained one at a time against together.

What a distillation's evaluation costs: ``--runs`` networks on the set, and as many on random
real subsets of the same IPC (the comparison every run ends with), through the evaluator of the
configs (digits: the quick start's ``tgdd_digits.yaml`` callback; MNIST and CIFAR-10: the CPU
configs' ConvNet-3 width 32), protocol ``short``. Three ways, alternated in every round:

- ``one at a time``: ``batching: off``, every network trained alone;
- ``each set together``: ``batching: auto``, the runs of the set together, then those of the
  baseline (``SyntheticEvaluator.evaluate`` per set);
- ``all together``: ``batching: auto``, the set's and the baseline's runs in one group
  (``SyntheticEvaluator.evaluate_many``, what the end of a distillation and ``lit-distill test``
  do).

Process CPU time and wall time are taken per side, and the medians compared. The accuracies of
the ways are printed too: they must agree (the same runs, to float rounding). Host memory is
set as ``lit-distill`` sets it (freed memory kept for reuse, ``lit_distill/allocator.py``) for
every side; ``--allocator system`` keeps glibc's defaults instead.

    python benchmarks/eval_speed.py                                # digits IPC 1, 3 rounds
    python benchmarks/eval_speed.py --dataset mnist --ipc 10 --rounds 2
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
from compare_methods import DATA_ARGS, DATASETS, model_args
from distill_accuracy import SHARED_DATA, build_cli, cpu_threads

from lit_distill.evaluation import SyntheticEvaluator
from lit_distill.evaluation.evaluator import random_real_baseline
from lit_distill.evaluation.train import accuracy, measured_channels_last
from lit_distill.export import SyntheticData
from lit_distill.models import build_model
from lit_distill.seeding import generator


def evaluator_settings(dataset: str) -> tuple[str, dict]:
    """The architecture the dataset's configs evaluate with."""
    hp = model_args(DATASETS[dataset]["tgdd"].at(1).config)
    return hp["arch"], dict(hp.get("arch_kwargs") or {})


#: The ways compared: (row name, batching, every set in one call).
WAYS = {
    "off": ("one at a time", "off", False),
    "auto": ("each set together", "auto", False),
    "joint": ("all together", "auto", True),
}


def measure(evaluator, sets, facts, joint: bool) -> tuple[float, float, list[float]]:
    """Wall and CPU seconds of evaluating every set (in one call when ``joint``), and the
    accuracies."""
    wall, cpu = time.perf_counter(), time.process_time()
    if joint:
        results = evaluator.evaluate_many(sets, *facts)
    else:
        results = [evaluator.evaluate(data, *facts) for data in sets]
    accuracies = [a for result in results for a in result.accuracies]
    return time.perf_counter() - wall, time.process_time() - cpu, accuracies


def testing_seconds(arch: str, kwargs: dict, facts, networks: int) -> dict[str, float]:
    """CPU seconds of measuring ``networks`` networks on the test split (either way the same:
    every run is measured alone), with fresh networks of the evaluated architecture: as the
    evaluator measures them (``auto``: channels-last copies on a CPU from
    ``CHANNELS_LAST_MIN_SIDE`` px a side) and in their own layout (``own``), alternated over
    three rounds, medians; ``channels_last``: whether ``auto`` is the channels-last layout."""
    test, preprocess, num_classes, image_shape, device = facts
    test, preprocess = test.to(device), preprocess.to(device)
    nets = [
        build_model(arch, num_classes, image_shape, **kwargs).to(device) for _ in range(networks)
    ]
    layouts = {"auto": None, "own": False}
    seconds: dict[str, list[float]] = {name: [] for name in layouts}
    for r in range(3):
        for name in layouts if r % 2 == 0 else reversed(list(layouts)):
            cpu = time.process_time()
            for net in nets:
                accuracy(net, test, preprocess, channels_last=layouts[name])
            seconds[name].append(time.process_time() - cpu)
    layout = measured_channels_last(nets[0], torch.device(device), image_shape)
    return {**{name: median(values) for name, values in seconds.items()}, "channels_last": layout}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits", choices=sorted(DATASETS))
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="networks per set (as the configs)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="override of the protocol's")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-root", type=Path, default=SHARED_DATA)
    parser.add_argument("--device", default="cpu")
    add_allocator_argument(parser)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    memory = set_host_memory(args.allocator)
    data_args = [a.format(root=args.data_root) for a in DATA_ARGS.get(args.dataset, ())]
    cli = build_cli(DATASETS[args.dataset]["tgdd"].at(1).config, data_args, Path("/tmp"), "cpu")
    dm = cli.datamodule
    dm.setup("fit")
    facts = (dm.test_set, dm.preprocess(), dm.num_classes, dm.image_shape, args.device)
    arch, kwargs = evaluator_settings(args.dataset)
    sets: list = [
        SyntheticData.random_real(dm.train_set, args.ipc, generator(7), dataset=dm.name, zca=dm.zca,
                                  class_names=dm.class_names),  # stands for the distilled set
        random_real_baseline(dm.train_set, args.ipc, dm.zca, 0, args.runs),
    ]  # fmt: skip
    sides = {
        way: SyntheticEvaluator(arch, kwargs, "short", args.runs, batching=batching,
                                epochs=args.epochs)
        for way, (_, batching, _) in WAYS.items()
    }  # fmt: skip
    times = {way: ([], []) for way in sides}
    accuracies = {}
    with cpu_threads(args.threads):
        for r in range(args.rounds):
            for way in sides if r % 2 == 0 else reversed(list(sides)):
                wall, cpu, accuracies[way] = measure(sides[way], sets, facts, WAYS[way][2])
                times[way][0].append(wall), times[way][1].append(cpu)
        testing = testing_seconds(arch, kwargs, facts, 2 * args.runs)
    med = {way: (median(w), median(c)) for way, (w, c) in times.items()}
    rows = [
        [WAYS[way][0], med[way][0], med[way][1], med["off"][1] / med[way][1],
         ", ".join(f"{100 * a:.2f}" for a in accuracies[way])]
        for way in WAYS
    ]  # fmt: skip
    speedup = {way: (med["off"][0] / med[way][0], med["off"][1] / med[way][1]) for way in WAYS}
    same = max(
        abs(a - b)
        for way in ("auto", "joint")
        for a, b in zip(accuracies["off"], accuracies[way], strict=True)
    )
    body = table(["runs", "wall (s)", "CPU (s)", "speed-up (CPU)", "accuracy per run (%)"], rows)
    body += (
        f"\n\nAll together: {speedup['joint'][0]:.2f}x faster than one at a time in wall time, "
        f"{speedup['joint'][1]:.2f}x in CPU time (each set together: {speedup['auto'][0]:.2f}x, "
        f"{speedup['auto'][1]:.2f}x; medians of {args.rounds} alternated rounds; target: at "
        f"least 2x). Largest accuracy difference from one at a time: {100 * same:.2f} points. "
        f"Evaluated: {args.runs} networks on one set of IPC {args.ipc} and {args.runs} on random "
        f"real subsets, {arch} {kwargs}, protocol {sides['auto'].protocol.name} "
        f"({sides['auto'].protocol.epochs} epochs); host memory on every side: {memory}. Of each "
        f"side's CPU time, measuring the {2 * args.runs} networks on the {len(dm.test_set)} test "
        f"images takes {testing['auto']:.2f} s as the evaluator measures them (one network at a "
        f"time every way, {'channels-last' if testing['channels_last'] else 'in their own layout'}"
        f"; {testing['own']:.2f} s in their own layout).\n"
    )
    title = f"Evaluation time: runs one at a time vs together ({args.dataset}, IPC {args.ipc})"
    publish(title, __file__, argv, args, body, args.device)
    return {"median": med, "speedup": speedup, "difference": same, "testing": testing}


if __name__ == "__main__":
    main()
