"""The ``lit-distill`` command line: LightningCLI over every task and dataset, plus shipped configs.

``lit-distill fit|validate|test --config FILE`` where FILE is a YAML path, or the bare name of a
config shipped with the package (``lit-distill configs`` lists them), so that
``lit-distill fit --config tgdd_cifar100.yaml`` works from any directory.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.cli import (
    LightningArgumentParser,
    LightningCLI,
    SaveConfigCallback,
    _get_module_type,
    _InstantiatorFn,
)
from lightning.pytorch.utilities import rank_zero_only

from lit_distill.configs_index import (
    describe_configs,
    resolve_config,
    resolve_config_args,
    shipped_configs,
)
from lit_distill.console import REPORT, PhaseProgressBar, quiet_dependency_warnings
from lit_distill.data import ImageDataModule
from lit_distill.distill import DistillationModule
from lit_distill.errors import ConfigAbort, TrajectoryNotFoundError
from lit_distill.experts import ExpertModule
from lit_distill.experts.pool import ExpertPool
from lit_distill.experts.runner import train_experts
from lit_distill.runs import (
    RunStateError,
    check_checkpoint_file,
    check_resume,
    check_writable,
    checkpoint_hparams,
    checkpoint_progress,
    finished_or_interrupted,
    removed_if_refused,
)
from lit_distill.task import DataTask

log = logging.getLogger(__name__)

__all__ = [
    "LitDistillCLI",
    "describe_configs",
    "resolve_config",
    "resolve_config_args",
    "shipped_configs",
]

# Facts that belong to the data and reach every task at instantiation: never typed in a config.
DATA_FACTS = {
    "num_classes": "num_classes",
    "image_shape": "image_shape",
    "mean": "mean",
    "std": "std",
    "name": "dataset",
}


# Lines of jsonargparse's error messages that explain its own machinery, not the user's mistake.
_PARSER_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Expected a <class 'NoneType'>",
    "Given value type:",
    "Given value:",
    "Problem with given class_path",
)


class OneLineParser(LightningArgumentParser):
    """The argument parser, printing its errors as one line (not the usage and a dump)."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        lines = [line.strip(" -") for line in message.splitlines()]
        kept = [line for line in lines if line and not line.startswith(_PARSER_NOISE)]
        command = self.prog.replace(" [options]", "")
        print(
            f"lit-distill: error: {'; '.join(kept)} (`{command} --help` lists every setting)",
            file=sys.stderr,
        )
        raise SystemExit(2)


class LitDistillCLI(LightningCLI):
    """LightningCLI for lit-distill: any :class:`DataTask` on any :class:`ImageDataModule`."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        quiet_dependency_warnings()
        self._fresh_trainers = 0  # Trainers made for experts (see _fresh_trainer)
        super().__init__(
            model_class=DataTask,
            datamodule_class=ImageDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            parser_class=OneLineParser,
            parser_kwargs={
                "description": "Dataset distillation. `lit-distill configs` lists configs."
            },
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for source, target in DATA_FACTS.items():
            parser.link_arguments(
                f"data.{source}", f"model.init_args.{target}", apply_on="instantiate"
            )
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="start a distillation over in a folder that holds a finished or interrupted "
            "run (its files are replaced); without it such a run is refused",
        )

    # ------------------------------------------------------------------ errors at config time
    def _add_instantiators(self) -> None:
        """Lightning's instantiators for the model and data, and a plain one for every other
        class, each letting an error escape the argument parser (see :class:`ConfigAbort`)."""
        self.parser.add_instantiator(
            _Guarded(_InstantiatorFn(cli=self, key="model"), "the model"),
            _get_module_type(self._model_class),
            subclasses=self.subclass_mode_model,
        )
        self.parser.add_instantiator(
            _Guarded(_InstantiatorFn(cli=self, key="data"), "the data"),
            _get_module_type(self._datamodule_class),
            subclasses=self.subclass_mode_data,
        )
        self.parser.add_instantiator(_Guarded(_plain_instantiator, "a callback"), L.Callback)

    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` (Lightning would replace the model's settings by the
        checkpoint's here, silently dropping the command's: lit-distill compares them in
        :meth:`fit` instead)."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not path:
            return
        if _subclass_of(str(self.config[subcommand].model.class_path), ExpertModule):
            raise RunStateError(
                "expert runs resume per expert: rerun the same command without --ckpt_path "
                "(experts whose trajectory file exists are skipped)"
            )
        check_checkpoint_file(path)

    def _set_seed(self) -> None:
        # As Lightning's, without printing "Seed set to ..." before every command.
        key = f"{self.subcommand}.seed_everything" if self.subcommand else "seed_everything"
        seed = self.config.get(key)
        if seed is False:
            return
        self.config[key] = seed_everything(
            None if seed is True else seed, workers=True, verbose=False
        )

    def before_instantiate_classes(self) -> None:
        # The shipped configs slow the progress bar's redraws down (one per step is costly);
        # --trainer.enable_progress_bar=false must still work with them: drop that callback.
        prefix = f"{self.subcommand}.trainer" if self.subcommand else "trainer"
        callbacks = self.config.get(f"{prefix}.callbacks") or []
        bars = [c for c in callbacks if str(c.class_path).endswith("ProgressBar")]
        if self.config.get(f"{prefix}.enable_progress_bar") is False and bars:
            self.config[f"{prefix}.callbacks"] = [c for c in callbacks if c not in bars]
        elif self.config.get(f"{prefix}.enable_progress_bar") is not False and not bars:
            # lit-distill's one line per phase rather than Lightning's bar per epoch.
            self.config[f"{prefix}.callbacks"] = [*callbacks, _progress_bar_config()]
        if self.subcommand == "fit":
            self._check_run_folders()

    def _check_run_folders(self) -> None:
        """Before anything is built: a distillation resumes only the same run, never starts
        over a finished or interrupted one silently, and can write where it will write."""
        config = self.config[self.subcommand]
        model = config.model
        if not _subclass_of(str(model.class_path), DistillationModule):
            return
        export = Path(model.init_args.get("export_dir") or config.trainer.default_root_dir or ".")
        checkpoints = [
            Path(c.init_args.dirpath)
            for c in config.trainer.callbacks or []
            if str(c.class_path).endswith("ModelCheckpoint") and c.init_args.get("dirpath")
        ]
        check_writable([export, *checkpoints])
        if config.get("ckpt_path"):
            path = Path(config.ckpt_path)
            given = {"_class_path": str(model.class_path), **model.init_args.as_dict()}
            given = {k: v for k, v in given.items() if v is not None}  # not linked yet
            check_resume(given, checkpoint_hparams(path), path)
            self._continue_tensorboard_run(path)
            return
        found = finished_or_interrupted(export, checkpoints)
        if found and not config.get("overwrite"):
            last = next((d / "last.ckpt" for d in checkpoints if (d / "last.ckpt").exists()), None)
            resume = f"resume it with --ckpt_path {last}, " if last else ""
            raise RunStateError(
                f"{export} already holds {found}: {resume}start over with --overwrite true "
                "(its files are replaced), or use another --trainer.default_root_dir"
            )

    def _continue_tensorboard_run(self, path: Path) -> None:
        """A resumed distillation logs to the TensorBoard run of its checkpoint (its curves
        go on), unless the config names a version."""
        logger = self.config[self.subcommand].trainer.get("logger")
        kind = str(getattr(logger, "class_path", ""))
        if not kind.endswith("TensorBoardLogger"):
            return
        _, version = checkpoint_progress(path)
        if version is not None and logger.init_args.get("version") is None:
            logger.init_args.version = version

    def fit(
        self, model: DataTask, datamodule: ImageDataModule | None = None, **kwargs: Any
    ) -> None:
        """``lit-distill fit``: experts are trained one Trainer each; a distillation trains its
        missing experts first; what a fit wrote goes to the command's summary."""
        if isinstance(model, ExpertModule):
            check_writable([Path(model.hparams.trajectory_dir)])
            train_experts(model, datamodule, self._fresh_trainer, logger=self.trainer.logger)
            return
        distillation = isinstance(model, DistillationModule)
        if distillation and kwargs.get("ckpt_path"):
            self._check_resumed_data(model, kwargs["ckpt_path"])
            iteration, _ = checkpoint_progress(Path(kwargs["ckpt_path"]))
            if rank_zero_only.rank == 0:
                log.info(
                    "resuming %s at iteration %s of %d: the run goes on exactly as if it had "
                    "not stopped (same data order, augmentation and random streams)",
                    kwargs["ckpt_path"], "?" if iteration is None else iteration,
                    model.hparams.iterations,
                )  # fmt: skip
        if getattr(model, "experts", None) is not None:
            model.experts.data_args = json.dumps(self._data_config())
            self._train_missing_experts(model.experts)
        trainer = self.trainer
        written = [trainer.default_root_dir, *(lg.log_dir for lg in trainer.loggers if lg.log_dir)]
        if distillation and model.hparams.export_dir:
            written.append(model.hparams.export_dir)
        started = _FitStarted()
        trainer.callbacks.append(started)
        phase = "distillation" if distillation else "fit"
        with removed_if_refused(written, lambda: started.started), REPORT.phase(phase):
            trainer.fit(model, datamodule=datamodule, **kwargs)
        if distillation:
            REPORT.counts[phase] = f"{int(model.iteration)} iterations"
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "last_model_path", ""):
                REPORT.file("checkpoint", callback.last_model_path)
        for logger in trainer.loggers:
            if logger.log_dir:
                REPORT.file("TensorBoard", logger.log_dir)

    def test(self, model: DataTask, datamodule: ImageDataModule | None = None, **kwargs: Any):
        """``lit-distill test``: timed as the command's evaluation phase."""
        with REPORT.phase("evaluation"):
            return self.trainer.test(model, datamodule=datamodule, **kwargs)

    def _data_config(self) -> dict:
        return self.config[self.subcommand]["data"].as_dict()

    def _check_resumed_data(self, model: DistillationModule, ckpt_path: str) -> None:
        """The data facts (known once the data is built) agree with the checkpoint's."""
        path = Path(ckpt_path)
        facts = {k: model.hparams[k] for k in ("dataset", "num_classes", "image_shape")}
        check_resume(facts, checkpoint_hparams(path), path)

    def _fresh_trainer(self, **overrides: Any):
        """A new Trainer from the same config (callbacks that hold per-run files excluded), one
        per expert. The experts share one network: its summary is printed by the first only."""
        configured = self._get(self.config_init, "trainer").get("callbacks") or []
        skip = (SaveConfigCallback, ModelSummary)  # the summary the first Trainer added
        callbacks = [c for c in configured if not isinstance(c, skip)]
        if self._fresh_trainers:
            overrides.setdefault("enable_model_summary", False)
        self._fresh_trainers += 1
        return self.instantiate_trainer(callbacks=callbacks, **overrides)

    def _train_missing_experts(self, pool: ExpertPool) -> None:
        """Train the experts a distillation needs with its ``expert_config`` if they are missing."""
        if pool.missing() == 0:
            return
        if not pool.train_missing or pool.config is None:
            raise pool.not_found_error()
        if self.trainer.fast_dev_run:
            raise TrajectoryNotFoundError(
                f"--trainer.fast_dev_run: {pool.missing()} of the {pool.count} experts this run "
                f"needs are missing from {pool.directory}, and a dry run does not train them "
                f"(that is the full expert recipe). Train them first with: {pool.command()}"
            )
        log.info(
            "%d of %d experts in %s: training them first (%s)",
            pool.found(),
            pool.count,
            pool.directory,
            pool.config,
        )
        data = self.config[self.subcommand]["data"].as_dict()
        LitDistillCLI(
            args=[
                "fit",
                "--config",
                resolve_config(pool.config),
                "--data",
                json.dumps(data),
                f"--model.init_args.trajectory_dir={pool.directory}",
                f"--model.init_args.num_experts={pool.count}",
                f"--model.init_args.arch={pool.arch}",
                f"--model.init_args.arch_kwargs={json.dumps(pool.arch_kwargs)}",
                # One model summary per command: the distillation's, not the experts'.
                "--trainer.enable_model_summary=false",
            ]
        )


def _progress_bar_config() -> dict:
    return {"class_path": f"{PhaseProgressBar.__module__}.{PhaseProgressBar.__name__}"}


class _FitStarted(L.Callback):
    """Knows whether a fit got past set-up (the checks that need the data)."""

    started = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = True


class _Guarded:
    """An instantiator that lets an error of the instantiated class escape the parser."""

    def __init__(self, instantiate, what: str) -> None:
        self.instantiate, self.what = instantiate, what

    def __call__(
        self, class_type: type, *args: Any, applied_instantiation_links: dict, **kwargs: Any
    ) -> Any:
        try:
            links = {"applied_instantiation_links": applied_instantiation_links}
            return self.instantiate(class_type, *args, **links, **kwargs)
        except Exception as err:  # raised by the class itself: a bad value in the config
            raise ConfigAbort(err, self.what) from err


def _plain_instantiator(class_type: type, *args: Any, **kwargs: Any) -> Any:
    kwargs.pop("applied_instantiation_links", None)
    return class_type(*args, **kwargs)


def _subclass_of(class_path: str, base: type) -> bool:
    """Whether ``class_path`` names a subclass of ``base`` (an unknown path: no)."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(cls, type) and issubclass(cls, base)
