"""``lit-distill test``: evaluate an exported synthetic set next to a random-real baseline."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lit_distill.console import REPORT, progress_bar
from lit_distill.errors import SyntheticSetError, SyntheticSetNotFoundError
from lit_distill.evaluation.evaluator import (
    Batching,
    EvalResult,
    SyntheticEvaluator,
    format_results,
    gather_by_run,
    random_real_baseline,
    shared_runs,
)
from lit_distill.evaluation.protocols import ProtocolName, Selection, SoftLabels
from lit_distill.evaluation.train import measured_channels_last
from lit_distill.export import SyntheticData, load_synthetic
from lit_distill.models import build_model
from lit_distill.space import ImageSpace
from lit_distill.task import DataTask

log = logging.getLogger(__name__)


class EvaluationModule(DataTask):
    """Train fresh networks on a synthetic set (and on a random real subset of the same IPC),
    then measure them on the real test split with the Lightning test (or validate) loop.

    The networks are trained in ``setup`` on the trainer's device, ``num_runs`` per set and
    architecture, seeded by ``(seed, run)`` (see :class:`SyntheticEvaluator`); the loop then
    measures every network with its own accuracy metric, and at the end logs
    ``test/<method>/<arch>/acc_mean`` and ``.../acc_std`` (``val/...`` under ``validate``) and
    prints a results table. Results are also kept in :attr:`results`.

    Under DDP the ranks share the training of the networks (rank r trains runs r, r + W, ...)
    and exchange their weights; the test loop then shares the test split between the ranks and
    the metrics are synchronised before they are reported: the same table as one process.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        synthetic: an exported synthetic set (``synthetic_final.pt``); None evaluates only the
            random-real baseline.
        ipc: images per class of the baseline when there is no synthetic set (with one, its
            IPC is used and this may be left out).
        baseline: also evaluate ``ipc`` random real images per class through the same protocol.
        archs: networks to train (cross-architecture evaluation with several).
        arch_kwargs: options given to every architecture, e.g. ``{"width": 64}``.
        protocol: evaluation preset: ``mtt``, ``datm``, ``tgdd``, ``dm`` or ``short`` (not
            comparable to published numbers; see ``lit_distill.evaluation.protocols``).
        epochs, batch_size, lr, momentum, weight_decay, milestones, gamma, augment,
            augment_space, cutmix_prob, select, eval_every, soft_labels: overrides of the
            protocol's fields
            (``None`` keeps the preset's value; the protocol is then reported as ``name*``).
        num_runs: networks per set and architecture.
        seed: base seed of the runs and of the baseline subset.
        batching: train the runs of a set together (``auto``: where the network allows it;
            ``on``; ``off``: one at a time), see :class:`SyntheticEvaluator`.
    """

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        dataset: str,
        synthetic: str | None = None,
        ipc: int | None = None,
        baseline: bool = True,
        archs: Sequence[str] = ("convnet3",),
        arch_kwargs: dict[str, Any] | None = None,
        protocol: ProtocolName = "short",
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        momentum: float | None = None,
        weight_decay: float | None = None,
        milestones: list[float] | None = None,
        gamma: float | None = None,
        augment: str | None = None,
        augment_space: ImageSpace | None = None,
        cutmix_prob: float | None = None,
        select: Selection | None = None,
        eval_every: int | None = None,
        soft_labels: SoftLabels | None = None,
        num_runs: int = 5,
        seed: int = 0,
        batching: Batching = "auto",
    ) -> None:
        super().__init__(num_classes, image_shape, mean, std, dataset)
        self.save_hyperparameters()
        overrides = dict(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum)
        overrides.update(weight_decay=weight_decay, milestones=milestones, gamma=gamma)
        overrides.update(augment=augment, augment_space=augment_space, cutmix_prob=cutmix_prob)
        overrides.update(select=select)
        overrides.update(eval_every=eval_every, soft_labels=soft_labels)
        self.evaluators = [
            SyntheticEvaluator(
                arch, arch_kwargs, protocol, num_runs, seed, batching=batching, **overrides
            )
            for arch in archs
        ]
        if not self.evaluators:
            raise ValueError("archs is empty: name at least one network, e.g. ['convnet3']")
        self.synthetic = self._load(synthetic)
        self.ipc = self._baseline_ipc(ipc)
        self.nets = nn.ModuleList()  # per (set, arch): the num_runs trained networks
        self.metrics = nn.ModuleList()  # per (set, arch): one accuracy metric per network
        self.layouts: list[list[bool]] = []  # per (set, arch): each network channels-last?
        self.entries: list[tuple[SyntheticEvaluator, list[SyntheticData]]] = []
        self.results: list[EvalResult] = []

    def _load(self, path: str | None) -> SyntheticData | None:
        if path is None:
            return None
        try:
            data = load_synthetic(path)
        except SyntheticSetNotFoundError as err:
            raise SyntheticSetNotFoundError(f"--model.synthetic {path}: {err}") from err
        data.check_dataset(self.dataset_name, self.num_classes, self.image_shape)
        return data

    def _baseline_ipc(self, ipc: int | None) -> int:
        if self.synthetic is None:
            if not self.hparams.baseline or ipc is None:
                raise ValueError(
                    "nothing to evaluate: give --model.synthetic PATH (an exported set), or "
                    "--model.ipc N with --model.baseline true for the random-real baseline only"
                )
            return ipc
        if ipc is not None and ipc != self.synthetic.ipc:
            raise ValueError(
                f"--model.ipc {ipc} contradicts the synthetic set's IPC {self.synthetic.ipc}: "
                "leave ipc out (the baseline uses the set's IPC)"
            )
        return self.synthetic.ipc

    # ------------------------------------------------------------------ training the networks
    def setup(self, stage: str) -> None:
        if stage == "fit":
            raise _no_fit()
        super().setup(stage)
        if self.synthetic is not None and self.synthetic.zca != self.zca:
            raise SyntheticSetError(
                f"the synthetic set was distilled {'with' if self.synthetic.zca else 'without'} "
                f"ZCA whitening but the datamodule has zca={self.zca}: evaluate it with "
                f"--data.init_args.zca {str(self.synthetic.zca).lower()}"
            )
        if self.entries:  # already trained (e.g. validate, then test)
            return
        device = self.trainer.strategy.root_device
        test = self.datamodule.test_set if self.evaluators[0].protocol.select == "best" else None
        bar = progress_bar(self.trainer)
        sets = self._sets()
        trained = {}  # (set, evaluator) -> networks
        for e, evaluator in enumerate(self.evaluators):
            what = f"{evaluator.arch} on the " + " and ".join(f"{d[0].method} set" for d in sets)
            if bar is not None:
                evaluator.on_run = partial(bar.evaluation, self.trainer, what)
            else:
                log.info("training %d %s networks", evaluator.num_runs * len(sets), what)
            for k, nets in enumerate(self._train_shared(evaluator, sets, test, device)):
                trained[k, e] = nets
        for k, data in enumerate(sets):
            for e, evaluator in enumerate(self.evaluators):
                self.entries.append((evaluator, data))
                self.nets.append(nn.ModuleList(trained[k, e]))
                cls = [measured_channels_last(n, device, self.image_shape) for n in trained[k, e]]
                for net, cl in zip(trained[k, e], cls, strict=True):
                    if cl:  # only measured from here on
                        net.to(memory_format=torch.channels_last)
                self.layouts.append(cls)
                self.metrics.append(nn.ModuleList(self._accuracy_metric() for _ in trained[k, e]))

    def _train_shared(self, evaluator, sets, test, device) -> list[list[nn.Module]]:
        """Every run's network for each set (their runs trained together where they can be):
        under DDP each rank trains its share and the weights are gathered, so that every rank
        measures all of them on its part of the test split."""
        mine = shared_runs(evaluator.num_runs)
        args = (sets, test, self.preprocess, self.num_classes, self.image_shape, device, mine)
        return [
            self._gathered(evaluator, mine, runs, device)
            for runs in evaluator.train_runs_many(*args)
        ]

    def _gathered(self, evaluator, mine, runs, device) -> list[nn.Module]:
        """All ranks' networks of one set, from this rank's ``runs`` (of ``mine``)."""
        states = [{k: v.cpu() for k, v in run.net.state_dict().items()} for run in runs]
        nets = []
        for state in gather_by_run(list(zip(mine, states, strict=True))):
            net = build_model(
                evaluator.arch, self.num_classes, self.image_shape, **evaluator.arch_kwargs
            )
            net.load_state_dict(state)
            nets.append(net.to(device))
        return nets

    def _sets(self) -> list[list[SyntheticData]]:
        """Per run, the synthetic set (if any), then the random-real baseline (if asked)."""
        runs = self.hparams.num_runs
        sets = [] if self.synthetic is None else [[self.synthetic] * runs]
        if self.hparams.baseline:
            real = self.datamodule.train_set
            sets.append(random_real_baseline(real, self.ipc, self.zca, self.hparams.seed, runs))
        return sets

    def _accuracy_metric(self) -> MulticlassAccuracy:
        return MulticlassAccuracy(self.num_classes, average="micro")

    # ------------------------------------------------------------------ measuring them
    def _update(self, batch: tuple[Tensor, Tensor]) -> None:
        images, labels = batch
        inputs = self.preprocess(images)
        layouts = {False: inputs}  # the batch in each layout the networks are measured in
        for nets, metrics, cls in zip(self.nets, self.metrics, self.layouts, strict=True):
            for net, metric, cl in zip(nets, metrics, cls, strict=True):
                if cl not in layouts:
                    layouts[cl] = inputs.contiguous(memory_format=torch.channels_last)
                metric.update(net(layouts[cl]), labels)

    def _report(self, prefix: str) -> None:
        """Log mean/std per (set, arch), keep the results, print the table; reset the metrics."""
        self.results = []
        for (evaluator, data), metrics in zip(self.entries, self.metrics, strict=True):
            result = evaluator.result(data, [float(m.compute()) for m in metrics])
            name = f"{prefix}/{result.method}/{result.arch}"
            self.log(f"{name}/acc_mean", result.mean)
            self.log(f"{name}/acc_std", result.std)
            self.results.append(result)
            for metric in metrics:
                metric.reset()
        if self.trainer.is_global_zero:
            REPORT.table(format_results(self.results), "Accuracy on the real test split:")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._update(batch)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._update(batch)

    def on_test_epoch_end(self) -> None:
        self._report("test")

    def on_validation_epoch_end(self) -> None:
        self._report("val")

    # ------------------------------------------------------------------ no fit
    # Defined only so that `fit` reaches setup(), which explains what to run instead.
    def training_step(self, *args: Any, **kwargs: Any) -> None:
        raise _no_fit()

    def configure_optimizers(self) -> None:
        raise _no_fit()


def _no_fit() -> MisconfigurationException:
    return MisconfigurationException(
        "EvaluationModule trains its networks itself and has nothing to fit: run "
        "`lit-distill test --config configs/eval.yaml --model.synthetic PATH` "
        "(or trainer.test(module, datamodule=...))"
    )
