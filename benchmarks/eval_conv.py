"""The first convolution of runs trained together on a CPU: grouped kernel against patches.

Runs trained together share one grouped network (``lit_distill/evaluation/batched.py``); its
first convolution sees the images, which need no gradient, so its backward only computes the
weights' gradient. This times that layer forward and backward both ways: ``F.conv2d`` with
``groups=R``, and :func:`~lit_distill.evaluation.batched._unfolded_conv` (the image patches
times each run's weights, one broadcast matrix product), for each ``--configs`` entry
``RxBxCxS[:O[:P]]`` (R runs of B images of C channels, S px a side, O output channels, padding
P; defaults 32 and 1), alternated over ``--rounds``, process CPU time, medians, and says which
one the grouped network uses (:func:`~lit_distill.evaluation.batched._unfold_pays`). Host
memory is kept for reuse as ``lit-distill`` runs (``--allocator system``: glibc's defaults).

    python benchmarks/eval_conv.py
    python benchmarks/eval_conv.py --configs 6x10x1x8:32:3 2x100x3x32:128
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from common import (
    add_allocator_argument,
    add_output_arguments,
    median,
    publish,
    set_host_memory,
    table,
)
from torch import nn

from lit_distill.evaluation.batched import _unfold_pays, _unfolded_conv

#: The quick start's digits (8 px, padding 3 as ConvNet pads them), MNIST, CIFAR-10 and a
#: 16 px set, at the runs and batch sizes an evaluation groups on a CPU.
CONFIGS = [
    "6x10x1x8:32:3", "2x10x1x8:32:3", "6x10x1x28:32:3", "2x100x1x28:32:3", "6x10x3x16",
    "6x10x3x32", "2x50x3x32", "2x10x3x32:128",
]  # fmt: skip


def parse(config: str) -> tuple[int, int, int, int, int, int]:
    """``RxBxCxS[:O[:P]]`` as (runs, images, channels, side, outputs, padding)."""
    head, *rest = config.split(":")
    runs, images, channels, side = (int(v) for v in head.split("x"))
    outputs = int(rest[0]) if rest else 32
    padding = int(rest[1]) if len(rest) > 1 else 1
    return runs, images, channels, side, outputs, padding


def step_seconds(way: str, conv: nn.Conv2d, x, weight, bias, repeats: int) -> float:
    """CPU seconds of ``repeats`` forwards and backwards of the layer, one way."""
    cpu = time.process_time()
    for _ in range(repeats):
        if way == "grouped":
            out = F.conv2d(
                x, weight.flatten(0, 1), bias.flatten(), conv.stride, conv.padding, conv.dilation,
                groups=weight.shape[0],
            )  # fmt: skip
        else:
            out = _unfolded_conv(x, conv, weight, bias)
        out.sum().backward()
        weight.grad = bias.grad = None
    return time.process_time() - cpu


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=CONFIGS, help="RxBxCxS[:O[:P]]")
    parser.add_argument("--repeats", type=int, default=30, help="steps timed per round")
    parser.add_argument("--rounds", type=int, default=5)
    add_allocator_argument(parser)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    memory = set_host_memory(args.allocator)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows, results = [], []
    for config in args.configs:
        runs, images, channels, side, outputs, padding = parse(config)
        conv = nn.Conv2d(channels, outputs, 3, padding=padding)
        x = torch.rand(images, runs * channels, side, side)
        weight = (0.1 * torch.randn(runs, outputs, channels, 3, 3)).requires_grad_(True)
        bias = torch.zeros(runs, outputs, requires_grad=True)
        times: dict[str, list[float]] = {"grouped": [], "unfold": []}
        for way in times:  # warm-up: kernels, memory
            step_seconds(way, conv, x, weight, bias, 2)
        for r in range(args.rounds):
            for way in list(times) if r % 2 == 0 else list(times)[::-1]:
                times[way].append(step_seconds(way, conv, x, weight, bias, args.repeats))
        grouped, unfold = (1000 * median(times[way]) / args.repeats for way in times)
        chosen = _unfold_pays(conv, x)
        results.append({"config": config, "grouped": grouped, "unfold": unfold, "used": chosen})
        rows.append([runs, images, f"{channels}x{side}x{side}", outputs, padding, grouped, unfold,
                     grouped / unfold, "patches" if chosen else "grouped"])  # fmt: skip
    right = sum(r["used"] == (r["grouped"] > r["unfold"]) for r in results)
    body = table(
        ["runs", "images per run", "image", "outputs", "padding", "grouped CPU (ms)",
         "patches CPU (ms)", "grouped / patches", "grouped network uses"], rows,
    ) + (
        f"\n\nOne step of the first layer, forward and backward (the weights' gradient), 1 thread, "
        f"medians of {args.rounds} alternated rounds of {args.repeats} steps; host memory "
        f"{memory}. The grouped network's choice is the faster way at {right} of {len(results)} "
        f"sizes here.\n"
    )  # fmt: skip
    title = "Runs trained together on the CPU: the first convolution, grouped vs patches"
    publish(title, __file__, argv, args, body)
    return results


if __name__ == "__main__":
    main()
