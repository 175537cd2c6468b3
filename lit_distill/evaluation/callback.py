"""Evaluating the synthetic set periodically while it is being distilled."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import lightning as L

from lit_distill.console import REPORT, progress_bar
from lit_distill.data import LabeledImages
from lit_distill.evaluation.evaluator import (
    Batching,
    EvalResult,
    SyntheticEvaluator,
    format_results,
    random_real_baseline,
)
from lit_distill.evaluation.protocols import ProtocolName, Selection
from lit_distill.export import SyntheticData

log = logging.getLogger(__name__)


class EvaluationCallback(L.Callback):
    """Every ``every_n_steps`` optimizer steps, and at the end of fit, evaluate the current set;
    at the very end, report it next to a random real subset of the same IPC.

    The distillation module provides ``synthetic_data()`` (a detached CPU copy of the set),
    ``preprocess``, ``datamodule`` and ``export(tag)``. The set is evaluated with a
    :class:`SyntheticEvaluator` on the real test split (moved to the module's device once), and
    ``eval/acc_mean``, ``eval/acc_std`` and ``eval/acc_best`` (fractions in [0, 1]) go to the
    trainer's loggers at ``step = global_step``. When the mean improves, the set is exported as
    ``best`` (``export_best``). The best accuracy and the steps survive a resume (checkpoint).

    The evaluation draws from its own random streams inside a forked global RNG and trains its
    own networks, so the distillation's randomness, modes and gradients are left untouched.
    Under DDP the runs are shared between the ranks and the accuracies gathered (the table is
    the one a single process prints). Nothing is evaluated during a ``fast_dev_run``.

    Args:
        every_n_steps: optimizer steps between evaluations.
        arch: network trained on the set (``lit_distill.models.available_models()``).
        arch_kwargs: its options, e.g. ``{"width": 64}``.
        protocol: evaluation preset (``short`` is cheap but not comparable to published numbers).
        num_runs: networks per evaluation.
        seed: base seed of the runs (the same networks every time, so evaluations compare).
        export_best: export the set as ``best`` whenever the mean accuracy improves.
        report: at the end, also evaluate a random real subset of the same IPC through the same
            protocol and print both (``results`` keeps them).
        epochs, batch_size, lr, select, eval_every: overrides of the protocol's fields.
        batching: train the runs of an evaluation together (``auto``: where the network
            allows it; ``on``; ``off``: one at a time), see :class:`SyntheticEvaluator`.
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        arch: str = "convnet3",
        arch_kwargs: dict[str, Any] | None = None,
        protocol: ProtocolName = "short",
        num_runs: int = 3,
        seed: int = 0,
        export_best: bool = True,
        report: bool = True,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        select: Selection | None = None,
        eval_every: int | None = None,
        batching: Batching = "auto",
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.export_best = export_best
        self.report = report
        self.results: list[EvalResult] = []
        self.evaluator = SyntheticEvaluator(
            arch,
            arch_kwargs,
            protocol,
            num_runs,
            seed,
            batching=batching,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            select=select,
            eval_every=eval_every,
        )
        self.best_acc = -1.0  # no evaluation yet
        self.best_step = -1
        self.last_step = 0  # global step of the latest evaluation (0: none)
        self.last_result: EvalResult | None = None  # of the set at last_step
        self.last_baseline: EvalResult | None = None  # of the baseline at last_step, if evaluated
        self._test: LabeledImages | None = None

    @property
    def state_key(self) -> str:
        # Several of these callbacks (e.g. one per architecture) keep separate states.
        return self._generate_state_key(
            every_n_steps=self.every_n_steps,
            arch=self.evaluator.arch,
            protocol=self.evaluator.protocol.name,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"best_acc": self.best_acc, "best_step": self.best_step, "last_step": self.last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_acc = float(state_dict["best_acc"])
        self.best_step = int(state_dict["best_step"])
        self.last_step = int(state_dict["last_step"])

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        # Interval crossings rather than step % N: a step may advance by more than one.
        step, every = trainer.global_step, self.every_n_steps
        if step // every <= self.last_step // every:
            return
        if self._reporting_next(trainer, pl_module):  # the set's runs with the baseline's
            _, self.last_baseline = self.evaluate(trainer, pl_module, with_baseline=True)
        else:
            self.evaluate(trainer, pl_module)

    def _reporting_next(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        """Whether this is the distillation's last iteration and the end of fit reports next:
        the set is then evaluated with the baseline, their runs trained together (here, so
        that the checkpoint of this step holds the evaluation, as at every interval)."""
        finished = getattr(pl_module, "finished", False)  # a distillation module's property
        return self.report and not trainer.fast_dev_run and finished is True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        report = self.report and not trainer.fast_dev_run
        # The set was evaluated at this very step already (the last interval ended here)?
        final = self.last_result if trainer.global_step == self.last_step else None
        baseline = self.last_baseline if final is not None else None
        self.last_baseline = None
        if trainer.global_step > self.last_step and report:
            final, baseline = self.evaluate(trainer, pl_module, with_baseline=True)
        elif trainer.global_step > self.last_step:
            final = self.evaluate(trainer, pl_module)
        if report:
            with REPORT.phase("evaluation"):
                self.report_final(pl_module, final, baseline)

    def report_final(
        self,
        pl_module: L.LightningModule,
        final: EvalResult | None,
        baseline: EvalResult | None = None,
    ) -> None:
        """Print the final set's accuracy next to a random real subset of the same IPC (the
        runs are shared between DDP ranks; rank 0 prints and logs). Either result is evaluated
        here when not given."""
        if final is None:
            final = self._evaluate(pl_module.trainer, pl_module, [pl_module.synthetic_data()])[0]
        if baseline is None:
            baseline = self._evaluate(
                pl_module.trainer, pl_module, [self._baseline(pl_module)], "random real subsets"
            )[0]
        self.results = [final, baseline]
        if not pl_module.trainer.is_global_zero:
            return
        for logger in pl_module.trainer.loggers:
            logger.log_metrics(
                {"eval/final_acc_mean": final.mean, "eval/random_real_acc_mean": baseline.mean},
                step=pl_module.trainer.global_step,
            )
        title = "Accuracy on the real test split:"
        REPORT.table(format_results(self.results), title)

    def _baseline(self, pl_module: L.LightningModule) -> list[SyntheticData]:
        """The random real subsets the final set is reported next to (one per run)."""
        data = pl_module.synthetic_data()
        real = pl_module.datamodule.train_set
        runs = self.evaluator.num_runs
        return random_real_baseline(real, data.ipc, data.zca, self.evaluator.seed, runs)

    def evaluate(
        self, trainer: L.Trainer, pl_module: L.LightningModule, with_baseline: bool = False
    ) -> Any:
        """Evaluate the current set now, log, and export it if it is the best so far; returns
        its result (None during a ``fast_dev_run``), or with ``with_baseline`` the pair
        (result, random-real baseline's result), their runs trained together.

        Under DDP every rank trains its share of the runs and gets every accuracy (the set is
        the same on all ranks), so the best-so-far state agrees; rank 0 logs and exports.
        """
        self.last_step = step = trainer.global_step
        if trainer.fast_dev_run:
            return (None, None) if with_baseline else None
        sets: list = [pl_module.synthetic_data()]
        if with_baseline:
            sets.append(self._baseline(pl_module))
        with REPORT.phase("evaluation"):
            what = f"iteration {step}" + (" and random real subsets" if with_baseline else "")
            results = self._evaluate(trainer, pl_module, sets, what)
        self.last_result = result = results[0]
        improved = result.mean > self.best_acc
        if improved:
            self.best_acc, self.best_step = result.mean, step
        if trainer.is_global_zero:
            metrics = {"eval/acc_mean": result.mean, "eval/acc_std": result.std}
            metrics["eval/acc_best"] = self.best_acc
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
            best = 100 * self.best_acc
            log.info("step %d: %s (best %.2f %% at step %d)", step, result, best, self.best_step)
            if improved and self.export_best:
                log.info("best synthetic set so far written to %s", pl_module.export("best"))
        return (result, results[1]) if with_baseline else result

    def _evaluate(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        sets: list[SyntheticData | list[SyntheticData]],
        what: str = "final set",
    ) -> list[EvalResult]:
        """Evaluate every set of ``sets``, their runs trained together where they can be."""
        bar = progress_bar(trainer)
        self.evaluator.on_run = None if bar is None else partial(bar.evaluation, trainer, what)
        test = self._test_set(pl_module)
        module = pl_module  # the data facts of the run (those of every set evaluated here)
        return self.evaluator.evaluate_many(
            sets, test, module.preprocess, module.num_classes, module.image_shape, module.device
        )

    def _test_set(self, pl_module: L.LightningModule) -> LabeledImages:
        """The real test split on the module's device (moved there once)."""
        if self._test is None or self._test.device != pl_module.device:
            self._test = pl_module.datamodule.test_set.to(pl_module.device)
        return self._test
