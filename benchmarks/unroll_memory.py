"""Peak memory and time of one trajectory-matching iteration: ``unroll`` against ``replay``.

One iteration is what :class:`lit_distill.distill.engine.StudentUnroll` does for MTT: a student
ConvNet-3 starts at a snapshot, takes ``syn_steps`` SGD steps on the synthetic set (IPC 10 of a
CIFAR-10-shaped set: 100 images of 3x32x32, every image in every step as MTT's default
``batch_syn``, one per-sample DSA op per step, on normalised inputs), and the normalised
matching loss is differentiated w.r.t. the images and the learned lr. The snapshot and target
are a fresh network and a perturbation of it: their values do not change the cost.

Each (mode, syn_steps) runs in its own subprocess (a fresh process: peaks do not mix), and the
modes alternate (unroll, replay, replay, unroll, ...) over ``--repeats`` so that the noise of a
shared machine hits both. In each process the memory in use is read once everything is set up
(network, synthetic set, segment), the peak is reset, then one iteration warms up and
``--iterations`` more are timed (wall and process CPU time; median reported).

- **memory**, the iterations' own working memory: CUDA, ``torch.cuda.max_memory_allocated``
  minus the memory allocated before the first iteration; CPU, the peak resident set ``VmHWM``
  (reset by writing 5 to ``/proc/self/clear_refs``) minus ``VmRSS`` before the first iteration.
  (Measured from before the warm-up: memory freed by one iteration may stay in the process and
  be reused by the next, which would hide it from a peak taken afterwards.)
- **targets** (issue of record): replay's peak flat in ``syn_steps`` within 10 %, at no more than
  1.5x unroll's time.

``plain`` is a third side: the inner loop of MTT's ``distill.py`` written here in plain PyTorch
(the network's parameters swapped for views of one flat vector before each forward, as the
reference's ``ReparamModule`` does; a list of the student's vectors; ``autograd.grad`` with
``create_graph`` per step; one ``backward`` of the normalised loss at the end), with the same
network, data, DSA and plan. The engine's two modes are timed against it.

``--allocator`` sets how the processes use host memory: ``app`` (default) runs the engine's
modes as ``lit-distill`` runs them, with freed memory kept for reuse
(:func:`lit_distill.allocator.keep_freed_memory`), and the plain loop with glibc's defaults, as
a plain script runs; ``system`` runs every side with glibc's defaults, ``kept`` every side with
freed memory kept (the two loops like for like).

    python benchmarks/unroll_memory.py                         # width 32, CPU
    python benchmarks/unroll_memory.py --device cuda --width 128 --steps 10 20 40 80
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from common import (
    add_output_arguments,
    command_line,
    emit,
    keep_memory,
    median,
    rss_bytes,
    run_json_worker,
    section,
    table,
)

from lit_distill.augment import DSA
from lit_distill.distill.engine import FlatModel, Segment, StudentUnroll, plan_steps
from lit_distill.models import build_model

MIB = 2**20
MODES = ("unroll", "replay", "plain")
#: Per ``--allocator``: the section title's suffix and the settings line.
ALLOCATORS = {
    "app": (
        " (host memory as lit-distill runs: engine kept, plain loop glibc's defaults)",
        "engine: freed memory kept (as lit-distill runs); plain: glibc defaults",
    ),
    "system": (" (glibc's default allocator on every side)", "glibc defaults on every side"),
    "kept": (" (freed memory kept on every side)", "freed memory kept on every side"),
}


def worker(args: argparse.Namespace) -> dict:
    """One mode at one ``syn_steps`` in this process: times and the working-memory peak."""
    keep_memory(args.allocator == "kept" or (args.allocator == "app" and args.mode != "plain"))
    device = torch.device(args.device)
    iteration = make_iteration(args.mode, args.steps, args.width, args.ipc, device)

    if device.type == "cuda":
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = rss_bytes("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    iteration(0)  # warm-up: allocator, kernels (its memory counts in the peak)
    walls, cpus = [], []
    for i in range(1, args.iterations + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        iteration(i)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss_bytes("VmHWM")
    return {"wall": median(walls), "cpu": median(cpus), "delta": peak - base}


def make_iteration(
    mode: str, steps: int, width: int, ipc: int, device: torch.device
) -> Callable[[int], None]:
    """``iteration(i)``: one matching iteration of ``mode`` (its plan drawn from seed ``i``) on
    this benchmark's network, synthetic set and segment (see the module docstring)."""
    torch.manual_seed(0)
    net = build_model("convnet3", 10, (3, 32, 32), width=width).to(device).train()
    model = FlatModel(net)
    start = model.flatten()
    segment = Segment(start, start + 0.01 * torch.randn_like(start))
    count = 10 * ipc
    images = torch.randn(count, 3, 32, 32, device=device, requires_grad=True)
    labels = torch.arange(10, device=device).repeat_interleave(ipc)
    lr = torch.tensor(0.01, device=device, requires_grad=True)
    augment = DSA("color_crop_cutout_flip_scale_rotate", mode="single", per_sample=True)

    def batch(step):
        rows = step.indices.to(device)
        stream = torch.Generator().manual_seed(step.seed)
        return augment(images[rows], generator=stream), labels[rows]

    engine = StudentUnroll(model, batch, mode) if mode != "plain" else None
    flat = FlatForward(net) if mode == "plain" else None

    def iteration(i: int) -> None:
        plan = plan_steps(count, count, steps, torch.Generator().manual_seed(i))
        if flat is not None:
            images.grad = lr.grad = None
            plain_iteration(flat, segment, plan, lr, batch)
        else:
            result = engine.run(segment, plan, lr, [images])
            images.grad = result.grads[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return iteration


class FlatForward:
    """A network evaluated at a flat parameter vector the way MTT's ``ReparamModule`` does it:
    its parameters are removed, and before each forward every one is set to a view of the
    vector (written here)."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net
        self.slots = []  # (module, attribute name, shape)
        for name, param in list(net.named_parameters()):
            owner, _, attr = name.rpartition(".")
            module = net.get_submodule(owner)
            self.slots.append((module, attr, param.shape))
            delattr(module, attr)
            setattr(module, attr, param.detach())
        self.sizes = [int(torch.Size(shape).numel()) for _, _, shape in self.slots]

    def __call__(self, vector: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        for (module, attr, shape), piece in zip(self.slots, vector.split(self.sizes), strict=True):
            setattr(module, attr, piece.view(shape))
        return self.net(inputs)


def plain_iteration(flat: FlatForward, segment: Segment, plan, lr, batch) -> None:
    """MTT's inner loop and loss, with one backward through every step (plain PyTorch)."""
    student = [segment.start.clone().requires_grad_(True)]
    for step in plan:
        inputs, targets = batch(step)
        loss = torch.nn.functional.cross_entropy(flat(student[-1], inputs), targets)
        grad = torch.autograd.grad(loss, student[-1], create_graph=True)[0]
        student.append(student[-1] - lr * grad)
    moved = (student[-1] - segment.target).pow(2).sum()
    (moved / (segment.start - segment.target).pow(2).sum()).backward()


def run_worker(mode: str, steps: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--steps", str(steps)]
    cmd += ["--width", str(args.width), "--ipc", str(args.ipc), "--device", args.device]
    cmd += ["--iterations", str(args.iterations), "--allocator", args.allocator]
    return run_json_worker(cmd, f"{mode} at {steps} steps")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40, 80])
    parser.add_argument("--width", type=int, default=32, help="ConvNet-3 width (paper: 128)")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=1, help="timed iterations per process")
    parser.add_argument("--repeats", type=int, default=2, help="processes per (mode, steps)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--allocator",
        choices=tuple(ALLOCATORS),
        default="app",
        help="host memory: app = engine as lit-distill runs it, plain with glibc's defaults; "
        "system = glibc's defaults everywhere; kept = freed memory kept everywhere",
    )
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.worker:
        args.steps = args.steps[0]
        print(json.dumps(worker(args)))
        return {}
    runs: dict[tuple[str, int], list[dict]] = {}
    for steps in args.steps:
        for repeat in range(args.repeats):
            order = args.modes if repeat % 2 == 0 else args.modes[::-1]
            for mode in order:
                runs.setdefault((mode, steps), []).append(run_worker(mode, steps, args))
    summary = {key: {k: median([r[k] for r in rs]) for k in rs[0]} for key, rs in runs.items()}
    rows = []
    for steps in args.steps:
        u, r = summary[("unroll", steps)], summary[("replay", steps)]
        rows.append([
            steps, u["delta"] / MIB, r["delta"] / MIB, 1000 * u["wall"], 1000 * r["wall"],
            r["wall"] / u["wall"], 1000 * u["cpu"], 1000 * r["cpu"], r["cpu"] / u["cpu"],
        ])  # fmt: skip
    plain_body = plain_table(summary, args) if "plain" in args.modes else ""
    replay_peaks = [summary[("replay", s)]["delta"] for s in args.steps]
    spread = max(replay_peaks) / min(replay_peaks)
    worst = max(row[5] for row in rows)
    worst_cpu = max(row[8] for row in rows)
    body = table(
        [
            "syn_steps", "unroll peak (MiB)", "replay peak (MiB)", "unroll wall (ms)",
            "replay wall (ms)", "replay/unroll wall", "unroll CPU (ms)", "replay CPU (ms)",
            "replay/unroll CPU",
        ],
        rows,
    )  # fmt: skip
    body += (
        f"\n\nPeak = working memory of the iterations above the memory in use before the first "
        f"(see the script's docstring); medians of {args.repeats} processes x "
        f"{args.iterations} timed iterations (after one warm-up), modes alternated. "
        f"Replay's peak varies by {100 * (spread - 1):.1f} % "
        f"over syn_steps {args.steps} (target: within 10 %: "
        f"{'met' if spread <= 1.10 else 'MISSED'}); its time is at most {worst:.2f}x unroll's "
        f"wall time and {worst_cpu:.2f}x its CPU time (target: at most 1.5x: "
        f"{'met' if max(worst, worst_cpu) <= 1.5 else 'MISSED'}).\n"
    ) + plain_body
    settings = {
        "network": f"convnet3 width {args.width}",
        "synthetic set": f"IPC {args.ipc} x 10 classes of 3x32x32, all images per step",
        "augmentation": "DSA color_crop_cutout_flip_scale_rotate, one op, per sample",
        "threads": torch.get_num_threads(),
        "allocator": ALLOCATORS[args.allocator][1],
    }
    text = section(
        "Trajectory matching: memory and time per iteration, unroll vs replay"
        + ALLOCATORS[args.allocator][0],
        command_line(__file__, argv),
        args.device,
        settings,
        body,
    )
    emit(text, args.out)
    return summary


def plain_table(summary: dict, args: argparse.Namespace) -> str:
    """The engine's modes against the plain loop: CPU time and peak, as ratios."""
    rows = []
    for steps in args.steps:
        p = summary[("plain", steps)]
        u, r = summary[("unroll", steps)], summary[("replay", steps)]
        rows.append([
            steps, 1000 * p["cpu"], p["delta"] / MIB, u["cpu"] / p["cpu"], r["cpu"] / p["cpu"],
            u["wall"] / p["wall"], r["wall"] / p["wall"], r["delta"] / p["delta"],
        ])  # fmt: skip
    unroll = max(row[3] for row in rows)
    replay = max(row[4] for row in rows)
    headers = [
        "syn_steps", "plain CPU (ms)", "plain peak (MiB)", "unroll/plain CPU",
        "replay/plain CPU", "unroll/plain wall", "replay/plain wall", "replay/plain peak",
    ]  # fmt: skip
    return (
        f"\nAgainst the plain loop (MTT's inner loop written here, see the docstring):\n\n"
        f"{table(headers, rows)}\n\nCPU time: unroll at most {unroll:.2f}x the plain loop "
        f"(target 0.85x: {'met' if unroll <= 0.85 else 'MISSED'}), replay at most {replay:.2f}x "
        f"(target 1.0x: {'met' if replay <= 1.0 else 'MISSED'}).\n"
    )


if __name__ == "__main__":
    main()
