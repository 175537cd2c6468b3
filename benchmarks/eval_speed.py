"""Evaluation time: the runs of one evaluation trained one at a time against together.

What a distillation's evaluation costs: ``--runs`` networks on the set, and as many on random
real subsets of the same IPC (the comparison every run ends with), through the evaluator of the
configs (digits: the quick start's ``tgdd_digits.yaml`` callback; MNIST and CIFAR-10: the CPU
configs' ConvNet-3 width 32), protocol ``short``. Each round evaluates both ways, alternating
which goes first; process CPU time and wall time are taken per side, and the medians compared.
The accuracies of the two ways are printed too: they must agree (the same runs, to float
rounding).

    python benchmarks/eval_speed.py                                # digits IPC 1, 3 rounds
    python benchmarks/eval_speed.py --dataset mnist --ipc 10 --rounds 2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from common import add_output_arguments, command_line, emit, median, section, table
from compare_methods import DATA_ARGS, DATASETS, model_args
from distill_accuracy import SHARED_DATA, build_cli, cpu_threads

from lit_distill.evaluation import SyntheticEvaluator
from lit_distill.evaluation.evaluator import random_real_baseline
from lit_distill.evaluation.train import accuracy
from lit_distill.export import SyntheticData
from lit_distill.models import build_model
from lit_distill.seeding import generator


def evaluator_settings(dataset: str) -> tuple[str, dict]:
    """The architecture the dataset's configs evaluate with."""
    hp = model_args(DATASETS[dataset]["tgdd"].at(1).config)
    return hp["arch"], dict(hp.get("arch_kwargs") or {})


def measure(evaluator, sets, facts) -> tuple[float, float, list[float]]:
    """Wall and CPU seconds of evaluating every set, and the accuracies."""
    wall, cpu = time.perf_counter(), time.process_time()
    accuracies = [a for data in sets for a in evaluator.evaluate(data, *facts).accuracies]
    return time.perf_counter() - wall, time.process_time() - cpu, accuracies


def testing_seconds(arch: str, kwargs: dict, facts, networks: int) -> dict[str, float]:
    """CPU seconds of measuring ``networks`` networks on the test split (either way the same:
    every run is measured alone), with fresh networks of the evaluated architecture: as the
    evaluator measures them (``auto``: a channels-last copy on a CPU) and in their own layout,
    alternated over three rounds, medians."""
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
    return {name: median(values) for name, values in seconds.items()}


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
    add_output_arguments(parser)
    args = parser.parse_args(argv)
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
        mode: SyntheticEvaluator(
            arch, kwargs, "short", args.runs, batching=mode, epochs=args.epochs
        )
        for mode in ("off", "auto")
    }
    times = {mode: ([], []) for mode in sides}
    accuracies = {}
    with cpu_threads(args.threads):
        for r in range(args.rounds):
            for mode in sides if r % 2 == 0 else reversed(list(sides)):
                wall, cpu, accuracies[mode] = measure(sides[mode], sets, facts)
                times[mode][0].append(wall), times[mode][1].append(cpu)
        testing = testing_seconds(arch, kwargs, facts, 2 * args.runs)
    med = {mode: (median(w), median(c)) for mode, (w, c) in times.items()}
    rows = [
        [name, med[mode][0], med[mode][1], ", ".join(f"{100 * a:.2f}" for a in accuracies[mode])]
        for name, mode in (("one at a time", "off"), ("together (auto)", "auto"))
    ]
    speedup = (med["off"][0] / med["auto"][0], med["off"][1] / med["auto"][1])
    same = max(abs(a - b) for a, b in zip(accuracies["off"], accuracies["auto"], strict=True))
    body = table(["runs", "wall (s)", "CPU (s)", "accuracy per run (%)"], rows) + (
        f"\n\nTogether: {speedup[0]:.2f}x faster in wall time, {speedup[1]:.2f}x in CPU time "
        f"(medians of {args.rounds} alternated rounds; target: at least 2x). Largest accuracy "
        f"difference between the two ways: {100 * same:.2f} points. Evaluated: {args.runs} "
        f"networks on one set of IPC {args.ipc} and {args.runs} on random real subsets, "
        f"{arch} {kwargs}, protocol {sides['auto'].protocol.name} "
        f"({sides['auto'].protocol.epochs} epochs). Of each side's CPU time, measuring the "
        f"{2 * args.runs} networks on the {len(dm.test_set)} test images takes "
        f"{testing['auto']:.2f} s (one network at a time both ways; in the networks' own layout "
        f"rather than the channels-last copies measured on a CPU: {testing['own']:.2f} s).\n"
    )
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    title = f"Evaluation time: runs one at a time vs together ({args.dataset}, IPC {args.ipc})"
    emit(section(title, command_line(__file__, argv), args.device, settings, body), args.out)
    return {"median": med, "speedup": speedup, "difference": same, "testing": testing}


if __name__ == "__main__":
    main()
