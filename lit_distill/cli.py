"""The ``lit-distill`` command line: LightningCLI over every task and dataset, plus shipped configs.

``lit-distill fit|validate|test --config FILE`` where FILE is a YAML path, or the bare name of a
config shipped with the package (``lit-distill configs`` lists them), so that
``lit-distill fit --config tgdd_cifar100.yaml`` works from any directory.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lit_distill.data import ImageDataModule
from lit_distill.errors import ConfigNotFoundError
from lit_distill.experts import ExpertModule
from lit_distill.experts.pool import ExpertPool
from lit_distill.experts.runner import train_experts
from lit_distill.task import DataTask

log = logging.getLogger(__name__)

# Facts that belong to the data and reach every task at instantiation: never typed in a config.
DATA_FACTS = {
    "num_classes": "num_classes",
    "image_shape": "image_shape",
    "mean": "mean",
    "std": "std",
    "name": "dataset",
}


def shipped_configs() -> dict[str, Path]:
    """The YAML configs installed with the package, by file name."""
    root = importlib.resources.files("lit_distill.configs")
    return {p.name: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def resolve_config(value: str) -> str:
    """An existing file as given; else the shipped config of that name (``.yaml`` optional)."""
    path = Path(value)
    if path.exists():
        return value
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    configs = shipped_configs()
    if name in configs and str(path.parent) in (".", "configs"):
        return str(configs[name])
    raise ConfigNotFoundError(
        f"config {value!r} is neither an existing file nor a shipped config. "
        f"Shipped configs: {', '.join(sorted(configs))} (see `lit-distill configs`)."
    )


def resolve_config_args(args: list[str]) -> list[str]:
    """Replace every ``--config NAME`` / ``-c NAME`` / ``--config=NAME`` by a resolved path."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):
            out += [arg, resolve_config(args[i + 1])]
            i += 2
            continue
        if arg.startswith("--config="):
            arg = "--config=" + resolve_config(arg.split("=", 1)[1])
        out.append(arg)
        i += 1
    return out


def describe_configs() -> str:
    """One line per shipped config: its name and the first line of its header comment."""
    lines = []
    for name, path in sorted(shipped_configs().items()):
        first = path.read_text().splitlines()[:1]
        summary = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        lines.append(f"{name:<28} {summary}")
    return "\n".join(lines)


class LitDistillCLI(LightningCLI):
    """LightningCLI for lit-distill: any :class:`DataTask` on any :class:`ImageDataModule`."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            model_class=DataTask,
            datamodule_class=ImageDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
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

    def before_instantiate_classes(self) -> None:
        # The shipped configs slow the progress bar's redraws down (one per step is costly);
        # --trainer.enable_progress_bar=false must still work with them: drop that callback.
        prefix = f"{self.subcommand}.trainer" if self.subcommand else "trainer"
        callbacks = self.config.get(f"{prefix}.callbacks")
        if self.config.get(f"{prefix}.enable_progress_bar") is False and callbacks:
            self.config[f"{prefix}.callbacks"] = [
                c for c in callbacks if not str(c.class_path).endswith("ProgressBar")
            ]

    def fit(
        self, model: DataTask, datamodule: ImageDataModule | None = None, **kwargs: Any
    ) -> None:
        """``lit-distill fit``: experts are trained one Trainer each; other tasks fit as usual."""
        if isinstance(model, ExpertModule):
            if kwargs.get("ckpt_path"):
                raise ValueError(
                    "expert runs resume per expert: rerun the same command without --ckpt_path "
                    "(experts whose trajectory file exists are skipped)"
                )
            train_experts(model, datamodule, self._fresh_trainer, logger=self.trainer.logger)
            return
        if getattr(model, "experts", None) is not None:
            self._train_missing_experts(model.experts)
        self.trainer.fit(model, datamodule=datamodule, **kwargs)

    def _fresh_trainer(self, **overrides: Any):
        """A new Trainer from the same config (callbacks that hold per-run files excluded)."""
        configured = self._get(self.config_init, "trainer").get("callbacks") or []
        callbacks = [c for c in configured if not isinstance(c, SaveConfigCallback)]
        return self.instantiate_trainer(callbacks=callbacks, **overrides)

    def _train_missing_experts(self, pool: ExpertPool) -> None:
        """Train the experts a distillation needs with its ``expert_config`` if they are missing."""
        if pool.missing() == 0:
            return
        if not pool.train_missing or pool.config is None:
            raise pool.not_found_error()
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
            ]
        )
