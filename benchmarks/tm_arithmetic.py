"""The arithmetic of one trajectory-matching iteration: the engine's modes against the plain loop.

``unroll_memory.py`` times an iteration of the engine (``unroll``, ``replay``) against ``plain``,
MTT's inner loop written here. This counts what each computes, on the same network, set, plan
and DSA (:func:`unroll_memory.make_iteration`): the floating-point operations of the matrix
products and convolutions, forward, backward and double backward
(``torch.utils.flop_counter.FlopCounterMode``), and the number of torch operator calls of each
kind (convolution, batch / group norm, the rest), by a dispatch mode. Counts do not depend on
the machine's load, so one iteration per mode is enough; ratios are against ``plain``.

    python benchmarks/tm_arithmetic.py
    python benchmarks/tm_arithmetic.py --width 128 --steps 10 20
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence

import torch
from common import add_output_arguments, publish, table
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from unroll_memory import MODES, make_iteration

#: Operator kinds counted apart (by the aten name's prefix); every other call is "other".
KINDS = {
    "convolution": ("convolution", "_convolution", "mkldnn_convolution", "cudnn_convolution"),
    "norm": ("native_group_norm", "native_batch_norm", "group_norm", "batch_norm"),
}


class OperatorCount(TorchDispatchMode):
    """Counts the torch operator calls made under it, by :data:`KINDS`."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        kind = next((k for k, prefixes in KINDS.items() if name.startswith(prefixes)), "other")
        self.calls[kind] += 1
        return func(*args, **(kwargs or {}))


def span(values: Sequence[float]) -> str:
    """``low–high`` to three decimals, or the one value when they round alike."""
    low, high = f"{min(values):.3f}", f"{max(values):.3f}"
    return low if low == high else f"{low}–{high}"


def count(mode: str, steps: int, width: int, ipc: int) -> dict:
    """FLOPs and operator calls of one iteration of ``mode`` (after one uncounted)."""
    iteration = make_iteration(mode, steps, width, ipc, torch.device("cpu"))
    iteration(0)
    with FlopCounterMode(display=False) as flops, OperatorCount() as ops:
        iteration(1)
    return {"flops": flops.get_total_flops(), **ops.calls}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {(mode, steps): count(mode, steps, args.width, args.ipc)
               for steps in args.steps for mode in MODES}  # fmt: skip
    rows = []
    for (mode, steps), got in results.items():
        plain = results[("plain", steps)]
        calls = [got.get(kind, 0) for kind in (*KINDS, "other")]
        rows.append([steps, mode, got["flops"] / 1e9, got["flops"] / plain["flops"], *calls])
    ratio = {
        mode: [results[(mode, s)]["flops"] / results[("plain", s)]["flops"] for s in args.steps]
        for mode in ("unroll", "replay")
    }
    body = table(
        ["syn_steps", "side", "GFLOP", "FLOPs / plain", "convolution calls", "norm calls",
         "other calls"], rows,
    ) + (
        f"\n\nOne iteration of ConvNet-3 width {args.width} on IPC {args.ipc} x 10 classes of "
        f"3x32x32, every image in every step, one per-sample DSA op per step (the setting of "
        f"`unroll_memory.py`). FLOPs of matrix products and convolutions, forward, backward and "
        f"double backward. `unroll` computes {span(ratio['unroll'])}x the plain loop's FLOPs "
        f"(it does not compute the gradient of the start vector, which the loop's backward does "
        f"and nothing uses), `replay` {span(ratio['replay'])}x (it runs every step's forward "
        f"and backward once more to rebuild it).\n"
    )  # fmt: skip
    publish("Trajectory matching: the arithmetic of one iteration, engine vs plain loop",
            __file__, argv, args, body)  # fmt: skip
    return {"results": results, "ratio": ratio}


if __name__ == "__main__":
    main()
