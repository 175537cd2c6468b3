"""Would training experts together pay? R experts' SGD steps one after another against one
step over their stacked parameters (vmapped, or one grouped network).

Expert training has the shape of evaluation: several networks of one architecture, each its own
seed, on the same data. This measures one training step (forward, backward, SGD) of ``--experts``
ConvNet-3s on real-sized batches (``--batch`` images of ``--size`` px, each expert its own
batch), either one network at a time or all of them at once over stacked parameters: one
``torch.func.vmap`` of ``functional_call``, or the grouped network evaluation trains runs with
(:func:`lit_distill.evaluation.batched.grouped_forward`). The ways alternate over ``--rounds``;
process CPU time and wall time per step are medians. Batching is worth building for experts
only if it is clearly faster here.

    python benchmarks/expert_batching.py                       # CPU, width 32 and 128
    python benchmarks/expert_batching.py --device cuda --widths 128 --experts 4 8
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from common import add_output_arguments, median, publish, table
from torch.func import functional_call, vmap

from lit_distill.evaluation.batched import grouped_forward
from lit_distill.models import build_model

WAYS = ("one at a time", "vmapped", "grouped")


def steps(width: int, experts: int, args) -> dict[str, callable]:
    """One training step of every expert, every way (fresh networks, SGD lr 0.01)."""
    device = torch.device(args.device)
    shape = (3, args.size, args.size)
    nets = [build_model("convnet3", 10, shape, width=width).to(device) for _ in range(experts)]
    images = torch.randn(experts, args.batch, *shape, device=device)
    labels = torch.randint(10, (experts, args.batch), device=device)
    optimizers = [torch.optim.SGD(net.parameters(), lr=0.01) for net in nets]
    stacked = {
        name: torch.stack(
            [dict(n.named_parameters())[name].detach() for n in nets]
        ).requires_grad_()
        for name, _ in nets[0].named_parameters()
    }
    stacked_sgd = torch.optim.SGD(stacked.values(), lr=0.01)
    vmapped = vmap(lambda params, x: functional_call(nets[0], params, (x,)))
    grouped = grouped_forward(nets[0])

    def one_at_a_time() -> None:
        for net, opt, x, y in zip(nets, optimizers, images, labels, strict=True):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()

    def together(forward) -> callable:
        def step() -> None:
            stacked_sgd.zero_grad(set_to_none=True)
            logits = forward(stacked, images)
            sum(F.cross_entropy(out, y) for out, y in zip(logits, labels, strict=True)).backward()
            stacked_sgd.step()

        return step

    return dict(zip(WAYS, (one_at_a_time, together(vmapped), together(grouped)), strict=True))


def timed(fn, repeats: int, device: str) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn`` (after one warm-up call)."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall), cpus.append(time.process_time() - cpu)
    return median(walls), median(cpus)


def main(argv: Sequence[str] | None = None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--experts", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--batch", type=int, default=256, help="images per expert step (MTT)")
    parser.add_argument("--size", type=int, default=32, help="image side (CIFAR: 32)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, ways alternated")
    parser.add_argument("--device", default="cpu")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    for width in args.widths:
        for experts in args.experts:
            ways = steps(width, experts, args)
            times = {name: ([], []) for name in ways}
            for r in range(args.rounds):
                for name in ways if r % 2 == 0 else reversed(list(ways)):
                    wall, cpu = timed(ways[name], args.steps, args.device)
                    times[name][0].append(wall), times[name][1].append(cpu)
            cpu = {name: median(c) for name, (_, c) in times.items()}
            wall = {name: median(w) for name, (w, _) in times.items()}
            rows.append([
                width, experts, *(1000 * cpu[name] for name in WAYS),
                *(cpu[WAYS[0]] / cpu[name] for name in WAYS[1:]),
                *(wall[WAYS[0]] / wall[name] for name in WAYS[1:]),
            ])  # fmt: skip
    headers = ["width", "experts", *(f"{name} CPU (ms)" for name in WAYS),
               *(f"speed-up CPU, {name}" for name in WAYS[1:]),
               *(f"speed-up wall, {name}" for name in WAYS[1:])]  # fmt: skip
    best = max(max(row[5:7]) for row in rows)
    body = table(headers, rows) + (
        f"\n\nOne step of every expert ({args.batch} images of {args.size} px each, ConvNet-3), "
        f"medians over {args.rounds} alternated rounds of {args.steps} steps. Best CPU speed-up "
        f"of training together: {best:.2f}x.\n"
    )
    title = "Experts: training several together (vmapped or grouped) vs one at a time"
    publish(title, __file__, argv, args, body, args.device)
    return rows


if __name__ == "__main__":
    main()
