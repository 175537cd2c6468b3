"""Evaluating a synthetic set: K fresh networks trained on it, measured on the real test split."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from lit_distill.data import LabeledImages
from lit_distill.evaluation.batched import can_batch, train_together
from lit_distill.evaluation.protocols import EvalProtocol, resolve_protocol
from lit_distill.evaluation.train import accuracy, train_on_synthetic
from lit_distill.export import SyntheticData
from lit_distill.models import build_model, check_model
from lit_distill.seeding import derive_seed, generator

Batching = Literal["auto", "on", "off"]
#: ``batching: auto`` trains runs together when one step of all of them holds at most this many
#: images (memory: R copies of a small network's activations).
BATCH_IMAGES = 4096
#: On a CPU, ``batching: auto`` trains runs together only when one run's step holds at most this
#: much work: images x height x width x the first convolution's output channels (a ConvNet's
#: width). Training a set's and its baseline's runs together was 1.2-2.6x faster than one at a
#: time up to 327,680 of work (digits, MNIST and CIFAR-10 IPC 1 at width 32, digits at width
#: 128) and from 0.72x to 1.04x from 1,310,720 up (CIFAR-10 IPC 1 and 3 at width 128, MNIST and
#: CIFAR-10 IPC 10 at width 32): where a step is mostly convolution work, grouping does not
#: reduce it (``benchmarks/eval_grouping.py``).
CPU_GROUP_WORK = 32_768 * 32

# Keys of the two random streams of a run (network initialisation, every training draw) and
# of the stream that picks the random-real baseline subset.
INIT_STREAM = 0
DRAW_STREAM = 1
BASELINE_STREAM = 2


@dataclass(frozen=True)
class EvalResult:
    """Test accuracies (fractions in [0, 1]) of the runs of one evaluation.

    Reported as mean ± std over runs; std is the population one (NumPy's default), as in the
    field's reference code.
    """

    method: str
    arch: str
    protocol: str
    ipc: int
    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))

    def __str__(self) -> str:
        return (
            f"{self.method} IPC {self.ipc} on {self.arch} ({self.protocol} protocol): "
            f"{100 * self.mean:.2f} ± {100 * self.std:.2f} % over {len(self.accuracies)} runs"
        )


@dataclass
class TrainedRun:
    """One run: its network (the selected checkpoint's weights) and its test accuracy."""

    net: nn.Module
    accuracy: float | None


class SyntheticEvaluator:
    """Train ``num_runs`` fresh networks on a synthetic set and report their test accuracy.

    Run ``r`` draws its initialisation and every training draw from streams derived from
    ``(seed, r)``, inside a forked global RNG, so results are reproducible and the caller's
    random state (a distillation in progress) is left exactly as it was.

    Args:
        arch: registered network name (``lit_distill.models.available_models()``).
        arch_kwargs: its options, e.g. ``{"width": 64}``.
        protocol: a preset name (``mtt``, ``tgdd``, ``dm``, ``short``) or an :class:`EvalProtocol`.
        num_runs: networks trained (the field reports 5).
        seed: base seed of the runs.
        batching: train the runs together, one network over stacked parameters
            (grouped convolutions, or vmapped; :mod:`lit_distill.evaluation.batched`)
            (``on``), one at a time (``off``), or together when the network allows it (no
            BatchNorm or dropout) and a step holds at most :data:`BATCH_IMAGES` images (on a CPU,
            also only where a run's step is small: :data:`CPU_GROUP_WORK`)
            (``auto``). The results are the same to float rounding.
        **overrides: protocol fields to change (``epochs=50``); ``None`` values are ignored.
    """

    def __init__(
        self,
        arch: str = "convnet3",
        arch_kwargs: dict[str, Any] | None = None,
        protocol: str | EvalProtocol = "short",
        num_runs: int = 5,
        seed: int = 0,
        batching: Batching = "auto",
        **overrides: Any,
    ) -> None:
        if num_runs < 1:
            raise ValueError(f"num_runs must be at least 1, got {num_runs}")
        if batching not in get_args(Batching):
            raise ValueError(f"batching={batching!r}: use one of {get_args(Batching)}")
        self.batching = batching
        check_model(arch, arch_kwargs)
        self.arch, self.arch_kwargs = arch, dict(arch_kwargs or {})
        self.protocol = resolve_protocol(protocol, **overrides)
        self.num_runs, self.seed = num_runs, seed
        #: Called as ``on_run(done, total)`` after each network this process trains.
        self.on_run: Callable[[int, int], None] | None = None

    def evaluate(
        self,
        data: SyntheticData | Sequence[SyntheticData],
        test: LabeledImages,
        preprocess: nn.Module,
        num_classes: int,
        image_shape: Sequence[int],
        device: torch.device | str = "cpu",
    ) -> EvalResult:
        """Train the runs on ``data`` and measure them on ``test`` (both used on ``device``).

        ``data`` is one set for every run, or one set per run (the random-real baseline draws a
        new subset for each run). Under DDP (an initialised process group) the runs are shared
        between the ranks (rank ``r`` trains runs ``r, r + W, ...``) and every rank gets all
        the accuracies: the result is the same as in one process.
        """
        return self.evaluate_many([data], test, preprocess, num_classes, image_shape, device)[0]

    def evaluate_many(
        self,
        datas: Sequence[SyntheticData | Sequence[SyntheticData]],
        test: LabeledImages,
        preprocess: nn.Module,
        num_classes: int,
        image_shape: Sequence[int],
        device: torch.device | str = "cpu",
    ) -> list[EvalResult]:
        """:meth:`evaluate` of each of ``datas`` (e.g. a distilled set and its random-real
        baseline), with the runs of all of them trained together where they can be (see
        ``batching``): the results are each set's own, to float rounding."""
        mine = shared_runs(self.num_runs)
        facts = (preprocess, num_classes, image_shape, device, mine)
        trained = self.train_runs_many(datas, test, *facts)
        return [
            self.result(
                data,
                gather_by_run(list(zip(mine, (run.accuracy for run in runs), strict=True))),
            )
            for data, runs in zip(datas, trained, strict=True)
        ]

    def result(
        self, data: SyntheticData | Sequence[SyntheticData], accuracies: Sequence[float]
    ) -> EvalResult:
        """An :class:`EvalResult` of this evaluator for ``data``."""
        first = data if isinstance(data, SyntheticData) else data[0]
        return EvalResult(
            first.method, self.arch, self.protocol.name, first.ipc, tuple(map(float, accuracies))
        )

    def train_runs(
        self,
        data: SyntheticData | Sequence[SyntheticData],
        test: LabeledImages | None,
        preprocess: nn.Module,
        num_classes: int,
        image_shape: Sequence[int],
        device: torch.device | str = "cpu",
        runs: Sequence[int] | None = None,
    ) -> list[TrainedRun]:
        """The trained networks of ``runs`` (default: all ``num_runs``), each with its selected
        weights and accuracy; run ``r`` is the same network whoever trains it.

        ``data`` is one set for all runs or one per run. ``test`` may be None with
        ``select="last"``: the networks are then returned unmeasured (accuracy None), for a
        caller that measures them itself (the Lightning test loop).
        """
        facts = (preprocess, num_classes, image_shape, device, runs)
        return self.train_runs_many([data], test, *facts)[0]

    def train_runs_many(
        self,
        datas: Sequence[SyntheticData | Sequence[SyntheticData]],
        test: LabeledImages | None,
        preprocess: nn.Module,
        num_classes: int,
        image_shape: Sequence[int],
        device: torch.device | str = "cpu",
        runs: Sequence[int] | None = None,
    ) -> list[list[TrainedRun]]:
        """:meth:`train_runs` of each of ``datas``; the runs of every set that can train
        together do (one group as long as a step holds at most :data:`BATCH_IMAGES` images
        with ``batching: auto``). Run ``r`` of each set is the network :meth:`train_runs` gives
        (the same initialisation and draws: those of run ``r``)."""
        if test is None and self.protocol.select == "best":
            raise ValueError("select='best' measures checkpoints on the test split: pass test")
        per_set = [self._per_run(data) for data in datas]
        device = torch.device(device)
        test = None if test is None else test.to(device)
        preprocess = copy.deepcopy(preprocess).to(device)
        mine = list(range(self.num_runs) if runs is None else runs)
        jobs = [(k, run) for k in range(len(per_set)) for run in mine]  # (set, run)
        sets = [tuple(t.to(device) for t in per_set[k][run].decoded()) for k, run in jobs]
        lrs = [self.protocol.learning_rate(per_set[k][run].lr) for k, run in jobs]
        best = [_BestCheckpoint(test, preprocess) for _ in jobs]
        facts = (num_classes, image_shape, device)
        nets: list[nn.Module] = [None] * len(jobs)  # type: ignore[list-item]  # filled below
        done = 0
        for group in self._groups(jobs, sets, lrs, facts):
            runs_of = [jobs[i][1] for i in group]
            args = ([sets[i] for i in group], runs_of, lrs[group[0]], [best[i] for i in group])
            for i, net in zip(group, self._train_group(*args, preprocess, facts), strict=True):
                nets[i] = net
            done += len(group)
            if self.on_run is not None:
                self.on_run(done, len(jobs))
        selected = [
            self._selected(net, b, test, preprocess) for net, b in zip(nets, best, strict=True)
        ]
        return [selected[k * len(mine) : (k + 1) * len(mine)] for k in range(len(per_set))]

    def _train_group(self, sets, runs, lr, best, preprocess, facts) -> list[nn.Module]:
        """Train runs ``runs`` on ``sets`` (one each): together, or one alone."""
        device = facts[2]
        on_checkpoint = best if self.protocol.select == "best" else None
        if len(runs) == 1:
            # Initialisation and training (dropout) draw from the run's own global stream.
            with _isolated_rng(derive_seed(self.seed, runs[0], INIT_STREAM), device):
                net = self._network(*facts)
                train_on_synthetic(
                    net, *sets[0], self.protocol, preprocess, lr,
                    generator(self.seed, runs[0], DRAW_STREAM),
                    on_checkpoint=None if on_checkpoint is None else on_checkpoint[0],
                )  # fmt: skip
            return [net]
        nets = []
        for run in runs:
            with _isolated_rng(derive_seed(self.seed, run, INIT_STREAM), device):
                nets.append(self._network(*facts))
        checkpoint = None
        if on_checkpoint is not None:
            checkpoint = lambda epoch, j, net: on_checkpoint[j](epoch, net)  # noqa: E731
        draws = [generator(self.seed, run, DRAW_STREAM) for run in runs]
        with _isolated_rng(self.seed, device):  # the caller's random state stays as it was
            train_together(nets, sets, self.protocol, preprocess, lr, draws, checkpoint)
        return nets

    def _per_run(self, data: SyntheticData | Sequence[SyntheticData]) -> list[SyntheticData]:
        """One set per run."""
        per_run = [data] * self.num_runs if isinstance(data, SyntheticData) else list(data)
        if len(per_run) != self.num_runs:
            raise ValueError(f"{len(per_run)} sets given for {self.num_runs} runs")
        return per_run

    def _groups(self, jobs, sets, lrs, facts) -> list[list[int]]:
        """The jobs (indices) trained together, in order; a group of one trains alone.

        The runs of one set train together as :meth:`batched` decides; with ``batching`` on
        or auto, runs of several sets join one group when their sets have one shape and one
        learning rate, and (``auto``) as long as a step holds at most :data:`BATCH_IMAGES`
        images.
        """
        by_set: dict[int, list[int]] = {}
        for i, (k, _) in enumerate(jobs):
            by_set.setdefault(k, []).append(i)
        groups: list[list[int]] = []
        for members in by_set.values():
            if not self.batched([sets[i] for i in members], [lrs[i] for i in members], facts):
                groups.extend([i] for i in members)
                continue
            key = _key(members, sets, lrs)
            joined = next((g for g in groups if len(g) > 1 and _key(g, sets, lrs) == key), None)
            size = min(self.protocol.batch_size, sets[members[0]][0].shape[0])
            room = self.batching == "on" or (
                joined is not None and (len(joined) + len(members)) * size <= BATCH_IMAGES
            )
            if joined is not None and room:
                joined.extend(members)
            else:
                groups.append(list(members))
        return groups

    def batched(
        self, sets: Sequence[tuple[torch.Tensor, ...]], lrs: Sequence[float], facts
    ) -> bool:
        """Whether these runs train together (see ``batching``)."""
        if self.batching == "off" or len(sets) < 2:
            return False
        with torch.random.fork_rng(devices=[]):  # a look at the layers: no draw may leak
            net = build_model(self.arch, facts[0], facts[1], **self.arch_kwargs)
        possible = can_batch(net) and len({s[0].shape for s in sets}) == 1 and len(set(lrs)) == 1
        if self.batching == "on":
            if not possible:
                raise ValueError(
                    f"batching='on': these runs cannot train together ({self.arch} has BatchNorm "
                    "or dropout, or the runs' sets or learning rates differ); use 'auto'"
                )
            return True
        per_run = min(self.protocol.batch_size, sets[0][0].shape[0])
        if torch.device(facts[2]).type == "cpu":
            possible = possible and step_work(net, per_run, sets[0][0].shape) <= CPU_GROUP_WORK
        return possible and len(sets) * per_run <= BATCH_IMAGES

    def _network(self, num_classes: int, image_shape: Sequence[int], device) -> nn.Module:
        """A freshly initialised network (from the global stream), on ``device``."""
        # Built on the CPU: the same seed gives the same initial weights on every device.
        net = build_model(self.arch, num_classes, image_shape, **self.arch_kwargs)
        return net.to(device).train()

    def _selected(self, net, best, test, preprocess) -> TrainedRun:
        """The run's network and accuracy: its best checkpoint, or its last epoch."""
        if self.protocol.select == "best":
            net.load_state_dict(best.state)
            return TrainedRun(net, best.accuracy)
        return TrainedRun(net, None if test is None else accuracy(net, test, preprocess))


def step_work(net: nn.Module, images: int, shape: Sequence[int]) -> int:
    """The size of one run's training step that :data:`CPU_GROUP_WORK` bounds: ``images`` of
    ``shape``'s height and width times ``net``'s first convolution's output channels (1
    without one)."""
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    channels = 1 if conv is None else conv.out_channels
    return images * shape[-2] * shape[-1] * channels


def _key(group: list[int], sets, lrs) -> tuple:
    """What the jobs of a group share: their sets' shape and their learning rate."""
    return sets[group[0]][0].shape, lrs[group[0]]


class _BestCheckpoint:
    """``on_checkpoint`` hook that keeps the weights with the best test accuracy so far."""

    def __init__(self, test: LabeledImages, preprocess: nn.Module) -> None:
        self.test, self.preprocess = test, preprocess
        self.accuracy, self.epoch = -1.0, 0
        self.state: dict[str, torch.Tensor] = {}

    def __call__(self, epoch: int, net: nn.Module) -> None:
        acc = accuracy(net, self.test, self.preprocess)
        if acc > self.accuracy:
            self.accuracy, self.epoch = acc, epoch
            self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}


def _world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shared_runs(num_runs: int) -> list[int]:
    """The runs this rank trains: ``rank, rank + W, ...`` (all of them in one process)."""
    rank, world = _world()
    return list(range(rank, num_runs, world))


def gather_by_run(local: list[tuple[int, Any]]) -> list[Any]:
    """Every rank's ``(run, value)`` pairs, merged on every rank, in run order."""
    _, world = _world()
    if world == 1:
        return [value for _, value in sorted(local, key=lambda pair: pair[0])]
    everyone: list[list[tuple[int, Any]]] = [[] for _ in range(world)]
    dist.all_gather_object(everyone, local)
    return [
        value for _, value in sorted((p for part in everyone for p in part), key=lambda p: p[0])
    ]


@contextmanager
def _isolated_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global CPU (and this CUDA device's) RNG with ``seed``; restore both afterwards."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            torch.cuda.default_generators[devices[0]].manual_seed(seed)
        yield


def random_real_baseline(
    real: LabeledImages, ipc: int, zca: bool, seed: int = 0, runs: int = 1
) -> list[SyntheticData]:
    """The baseline every result stands next to: for each run, its own ``ipc`` random real
    training images per class, drawn from the ``(seed, BASELINE_STREAM, run)`` stream.

    One subset per run: at small IPC, which images are drawn matters as much as the network's
    seed, so the baseline's mean ± std covers both.
    """
    return [
        SyntheticData.random_real(
            real,
            ipc,
            generator(seed, BASELINE_STREAM, run),
            dataset=real.name,
            zca=zca,
            class_names=real.classes,
        )
        for run in range(runs)
    ]


def format_results(results: Sequence[EvalResult]) -> str:
    """A Markdown table: method | arch | IPC | protocol | accuracy (%) mean ± std | runs."""
    lines = [
        "| method | arch | IPC | protocol | acc (%) | runs |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.method} | {r.arch} | {r.ipc} | {r.protocol} | "
            f"{100 * r.mean:.2f} ± {100 * r.std:.2f} | {len(r.accuracies)} |"
        )
    return "\n".join(lines)
