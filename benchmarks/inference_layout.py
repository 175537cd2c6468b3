"""Test-split inference on a CPU: a network's own (contiguous) layout against channels-last.

The evaluator measures every trained network on the whole test split; on a CPU it may do so in
the channels-last layout (:func:`lit_distill.evaluation.train.measured_channels_last`, which
chooses it from :data:`~lit_distill.evaluation.train.CHANNELS_LAST_MIN_SIDE` up). This times
:func:`lit_distill.evaluation.train.accuracy` both ways on a ConvNet of width ``--width`` (as deep
as the image allows, at most 5 blocks, as the configs pick per resolution) over random uint8
test images of each ``--sizes`` (``CxS``: C channels, S px a side), alternating the two layouts
over ``--rounds``; process CPU time, medians. Host memory is kept for reuse as ``lit-distill``
runs (``--allocator system``: glibc's defaults). The values of the images do not change the cost.

    python benchmarks/inference_layout.py
    python benchmarks/inference_layout.py --sizes 1x28 3x32 3x64 --images 1000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from common import (
    add_allocator_argument,
    add_output_arguments,
    median,
    publish,
    set_host_memory,
    table,
)
from torch import nn

from lit_distill.data import LabeledImages
from lit_distill.evaluation.train import CHANNELS_LAST_MIN_SIDE, accuracy, measured_channels_last
from lit_distill.models import build_model

SIZES = ["1x8", "1x16", "1x24", "1x28", "3x28", "3x32", "3x64", "3x128"]


def depth_for(side: int) -> int:
    """Blocks of the ConvNet at this side: 2 for the smallest images, one more per doubling
    from 32 px (3 at 28-32 px, 4 at 64, 5 at 128), as the configs choose."""
    if side < 16:
        return 2
    return min(5, 3 + max(0, (side // 32).bit_length() - 1))


def seconds(net: nn.Module, test: LabeledImages, rounds: int) -> dict[str, float]:
    """Median CPU seconds of measuring ``net`` on ``test`` in its own layout and channels-last."""
    times: dict[bool, list[float]] = {False: [], True: []}
    accuracy(net, test, nn.Identity(), channels_last=True)  # warm-up: kernels, memory
    for r in range(rounds):
        for cl in (False, True) if r % 2 == 0 else (True, False):
            cpu = time.process_time()
            accuracy(net, test, nn.Identity(), channels_last=cl)
            times[cl].append(time.process_time() - cpu)
    return {"own": median(times[False]), "channels_last": median(times[True])}


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=SIZES, help="CxS: channels x side (px)")
    parser.add_argument("--images", type=int, default=2000, help="test images (at 128 px: 1/10)")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    add_allocator_argument(parser)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    memory = set_host_memory(args.allocator)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows, results = [], []
    for size in args.sizes:
        channels, side = (int(part) for part in size.split("x"))
        count = args.images if side < 128 else max(1, args.images // 10)
        shape = (channels, side, side)
        images = torch.randint(0, 256, (count, *shape), dtype=torch.uint8)
        test = LabeledImages(images, torch.randint(0, 10, (count,)), [str(i) for i in range(10)])
        net = build_model("convnet", 10, shape, width=args.width, depth=depth_for(side))
        took = seconds(net, test, args.rounds)
        chosen = measured_channels_last(net, torch.device("cpu"), shape)
        speedup = took["own"] / took["channels_last"]
        results.append({"size": size, **took, "speedup": speedup, "chosen": chosen})
        rows.append([f"{channels}x{side}x{side}", depth_for(side), count, 1000 * took["own"],
                     1000 * took["channels_last"], speedup,
                     "channels-last" if chosen else "own"])  # fmt: skip
    right = sum(r["chosen"] == (r["speedup"] > 1) for r in results)
    body = table(
        ["images", "depth", "count", "own CPU (ms)", "channels-last CPU (ms)",
         "own / channels-last", "evaluator measures"], rows,
    ) + (
        f"\n\nConvNet width {args.width}, 1 thread, medians of {args.rounds} alternated rounds; "
        f"host memory {memory}. "
        f"The evaluator measures channels-last from {CHANNELS_LAST_MIN_SIDE} px a side; that "
        f"choice is the faster layout at {right} of {len(results)} sizes here.\n"
    )  # fmt: skip
    title = "Test-split inference on the CPU: own layout vs channels-last"
    publish(title, __file__, argv, args, body)
    return results


if __name__ == "__main__":
    main()
