"""Mixed precision: how far the synthetic set's gradient moves from fp32, and what it costs.

On one fixed batch (real CIFAR-10 images, a synthetic set of IPC ``--ipc`` initialised from real
images, ConvNet-3 of ``--width``), the script computes the gradient w.r.t. the synthetic images
the way each family does, once in fp32 and once under autocast (bf16; on CUDA also fp16 with a
loss scale, as ``16-mixed`` runs):

- **distribution matching** (DM/TGDD): the per-class mean-feature distance, summed over classes,
  one backward per class;
- **trajectory matching** (MTT...): the matching engine, ``--steps`` student steps (``replay``),
  gradient w.r.t. the images and the learned lr.

Reported: the relative L2 distance ``||g - g32|| / ||g32||`` and the cosine similarity to fp32,
and the time per gradient (median over ``--repeats``, precisions alternated; wall and CPU).
What stays in fp32 whatever the precision: the synthetic parameters (master copies), the
student's flat parameter vector and its SGD updates, the matching loss (a ratio of two sums over
all parameters) and the learned lr; autocast only lowers the networks' forward and backward.

    python benchmarks/precision.py                      # CPU: fp32 vs bf16
    python benchmarks/precision.py --device cuda --width 128 --steps 30
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch
from common import (
    add_data_arguments,
    add_output_arguments,
    command_line,
    emit,
    load_data,
    median,
    section,
    table,
)

from lit_distill.augment import DSA
from lit_distill.distill.engine import FlatModel, Segment, StudentUnroll, plan_steps
from lit_distill.models import build_model


def dm_gradient(extractor, real, syn, scale: float) -> list[torch.Tensor]:
    syn.grad = None
    for c in range(len(real)):
        with torch.no_grad():
            target = extractor.embed(real[c]).float().mean(0)
        rows = syn[c]
        loss = (target - extractor.embed(rows).float().mean(0)).pow(2).sum()
        (loss * scale).backward()
    return [syn.grad / scale]


def mtt_gradient(model, segment, plan, images, labels, lr, scale: float) -> list[torch.Tensor]:
    augment = DSA("color_crop_cutout_flip_scale_rotate", mode="single", per_sample=True)

    def batch(step):
        rows = step.indices.to(images.device)
        stream = torch.Generator().manual_seed(step.seed)
        return augment(images[rows], generator=stream), labels[rows]

    result = StudentUnroll(model, batch, "replay", scale).run(segment, plan, lr, [images])
    return [result.grads[0] / scale, result.grad_lr.reshape(1) / scale]


def compare(grads: list[torch.Tensor], reference: list[torch.Tensor]) -> tuple[float, float]:
    g, r = torch.cat([x.flatten() for x in grads]), torch.cat([x.flatten() for x in reference])
    rel = float((g.double() - r.double()).norm() / r.double().norm())
    cos = float(torch.nn.functional.cosine_similarity(g.double(), r.double(), dim=0))
    return rel, cos


def timed(fn: Callable[[], list[torch.Tensor]], device: torch.device) -> tuple[float, float, list]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(parser, subset=2000)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--real-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="student steps (trajectory matching)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dm = load_data(args)
    pre = dm.preprocess().to(device)
    gen = torch.Generator().manual_seed(0)
    classes = dm.num_classes
    real = [pre(dm.train_set.sample(c, args.real_batch, gen).to(device)) for c in range(classes)]
    syn_pixels = torch.stack([dm.train_set.sample(c, args.ipc, gen) for c in range(classes)])
    syn = pre(syn_pixels.flatten(0, 1).to(device)).view_as(syn_pixels).requires_grad_(True)
    torch.manual_seed(0)
    net = build_model("convnet3", classes, dm.image_shape, width=args.width).to(device).train()
    extractor = build_model("convnet3", classes, dm.image_shape, width=args.width).to(device)
    extractor.requires_grad_(False)
    model = FlatModel(net)
    start = model.flatten()
    segment = Segment(start, start + 0.01 * torch.randn(start.shape, generator=gen).to(device))
    images = syn.detach().flatten(0, 1).clone().requires_grad_(True)
    labels = torch.arange(classes, device=device).repeat_interleave(args.ipc)
    lr = torch.tensor(0.01, device=device, requires_grad=True)
    plan = plan_steps(
        images.shape[0], images.shape[0], args.steps, torch.Generator().manual_seed(1)
    )
    methods = {  # name: (gradient function, what each of its gradients is of)
        "distribution matching": (lambda s: dm_gradient(extractor, real, syn, s), ["images"]),
        "trajectory matching": (
            lambda s: mtt_gradient(model, segment, plan, images, labels, lr, s),
            ["images", "lr"],
        ),
    }
    precisions = {"fp32": (None, 1.0), "bf16": (torch.bfloat16, 1.0)}
    if device.type == "cuda":
        precisions["fp16"] = (torch.float16, 2.0**16)
    rows, results = [], {}
    for name, (fn, parts) in methods.items():
        times = {p: ([], []) for p in precisions}
        grads = {}
        for repeat in range(args.repeats):
            order = list(precisions) if repeat % 2 == 0 else list(precisions)[::-1]
            for p in order:
                dtype, scale = precisions[p]
                with torch.autocast(
                    device.type, dtype=dtype or torch.float32, enabled=dtype is not None
                ):
                    wall, cpu, out = timed(lambda: fn(scale), device)  # noqa: B023
                times[p][0].append(wall)
                times[p][1].append(cpu)
                grads[p] = [g.detach().float().clone() for g in out]
        for p in precisions:
            wall, cpu = median(times[p][0]), median(times[p][1])
            base_wall, base_cpu = median(times["fp32"][0]), median(times["fp32"][1])
            for i, part in enumerate(parts):  # each gradient on its own (their scales differ)
                rel, cos = compare([grads[p][i]], [grads["fp32"][i]])
                rows.append([name, part, p, rel, cos, 1000 * wall, wall / base_wall,
                             1000 * cpu, cpu / base_cpu])  # fmt: skip
                results[(name, part, p)] = (rel, cos, wall / base_wall, cpu / base_cpu)
    body = table(
        ["family", "gradient of", "precision", "rel. L2 distance to fp32", "cosine to fp32",
         "wall (ms)",
         "wall vs fp32", "CPU (ms)", "CPU vs fp32"],
        rows,
    )  # fmt: skip
    body += (
        f"\n\nOne fixed batch; medians of {args.repeats} repeats, precisions alternated; the "
        "times are those of the whole gradient (all its parts). fp16 runs "
        "with a loss scale of 2^16 (only on CUDA: autocast to fp16 on a CPU is not what "
        "16-mixed does).\n"
    )
    settings = {
        "data": f"{args.name} (subset {args.subset})", "network": f"convnet3 width {args.width}",
        "ipc": args.ipc, "real batch": args.real_batch, "student steps": args.steps,
    }  # fmt: skip
    title = "Mixed precision: gradient of the synthetic set against fp32, and its cost"
    emit(section(title, command_line(__file__, argv), args.device, settings, body), args.out)
    return results


if __name__ == "__main__":
    main()
