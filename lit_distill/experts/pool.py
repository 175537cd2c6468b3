"""The experts a distillation method stands on, as one component every method shares.

:class:`ExpertPool` knows where a method's expert trajectories are, how many it needs and the
config that trains them; it loads them lazily (memory-mapped, see :class:`SnapshotBank`) and
checks, once at set-up, that they fit the run: architecture by name and options, dataset,
classes, input shape, ZCA, stored epochs. Every failure names the command that fixes it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import nn

from lit_distill.errors import TrajectoryMismatchError, TrajectoryNotFoundError
from lit_distill.models import check_model
from lit_distill.trajectory import SnapshotBank, list_experts, load_trajectories

log = logging.getLogger(__name__)


class ExpertPool:
    """A folder of expert trajectories used by one distillation run.

    Args:
        directory: folder of ``expert_000.pt``, ``expert_001.pt``, ...
        count: how many experts the run uses (the first ``count`` files).
        config: the experts config that trains them (a shipped name or a path), or None.
        train_missing: let ``lit-distill fit`` train missing experts first with ``config``.
        arch: the architecture the experts must have (name and options).
        arch_kwargs: its options.
    """

    def __init__(
        self,
        directory: str | Path,
        count: int,
        config: str | None = None,
        train_missing: bool = True,
        arch: str = "convnet3",
        arch_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if count < 1:
            raise ValueError(f"num_experts must be at least 1, got {count}")
        check_model(arch, arch_kwargs)
        self.directory, self.count = Path(directory), count
        self.config, self.train_missing = config, train_missing
        self.arch, self.arch_kwargs = arch, dict(arch_kwargs or {})
        self.data_args: str | None = None  # the run's --data (JSON), for the commands it prints

    def found(self) -> int:
        """How many expert files are in the folder now."""
        return len(list_experts(self.directory))

    def missing(self) -> int:
        """How many of the experts the run needs are not in the folder."""
        return max(0, self.count - self.found())

    def command(self, epochs: int | None = None, directory: str | Path | None = None) -> str:
        """The ``lit-distill`` command that trains the experts this run needs (in ``directory``,
        default: this pool's folder)."""
        config = self.config or "<an experts config: see `lit-distill configs`>"
        parts = [f"lit-distill fit --config {config}"]
        if self.data_args:
            parts.append(f"--data '{self.data_args}'")
        parts += [
            f"--model.init_args.trajectory_dir {directory or self.directory}",
            f"--model.init_args.num_experts {self.count}",
            f"--model.init_args.arch {self.arch}",
        ]
        if self.arch_kwargs:
            parts.append(f"--model.init_args.arch_kwargs '{json.dumps(self.arch_kwargs)}'")
        if epochs is not None:
            parts.append(f"--model.init_args.epochs {epochs}")
        return " ".join(parts)

    def load(
        self,
        net: nn.Module,
        *,
        dataset: str,
        num_classes: int,
        image_shape: tuple[int, ...],
        zca: bool,
        min_epochs: int = 0,
        every_epoch: bool = True,
        why: str = "",
    ) -> SnapshotBank:
        """Open and check the experts; return their lazy snapshot bank (on the CPU).

        Args:
            net: a network of the run's architecture (parameter names and shapes).
            dataset, num_classes, image_shape, zca: the run's data facts.
            min_epochs: the experts must have been trained for at least this many epochs.
            every_epoch: every epoch must be stored (not only the convex end points).
            why: what needs ``min_epochs`` (for the error message).
        """
        fix = self.command()
        trajectories = load_trajectories(self.directory, self.count, fix=fix)
        fresh = f"{self.directory}_{self.arch}"
        for traj, path in zip(trajectories, list_experts(self.directory), strict=False):
            traj.check_compatible(
                net,
                dataset=dataset,
                num_classes=num_classes,
                image_shape=image_shape,
                zca=zca,
                arch=self.arch,
                arch_kwargs=self.arch_kwargs,
                source=str(path),
                fix=f"These experts were trained for another run. Train matching ones in a new "
                f"folder with: {self.command(directory=fresh)} and rerun with "
                f"--model.init_args.trajectory_dir {fresh} (or delete the files in "
                f"{self.directory} and rerun: missing experts are trained first)",
            )
        bank = SnapshotBank(trajectories)
        if bank.num_epochs < min_epochs:
            longer = f"{self.directory}_e{min_epochs}"
            raise TrajectoryMismatchError(
                f"the experts in {self.directory} were trained for {bank.num_epochs} epochs, but "
                f"{why or 'this run'} needs at least {min_epochs}: train longer experts with: "
                f"{self.command(epochs=min_epochs, directory=longer)} and rerun with "
                f"--model.init_args.trajectory_dir {longer}"
            )
        if every_epoch and not bank.full:
            raise TrajectoryMismatchError(
                f"this method samples every epoch, but the experts in {self.directory} keep only "
                f"epochs {bank.epochs} (store=convex): train them with store=full: {fix}"
            )
        log.info(
            "%d experts of %d epochs in %s (read lazily)",
            bank.num_trajectories,
            bank.num_epochs,
            self.directory,
        )
        return bank

    def not_found_error(self) -> TrajectoryNotFoundError:
        """The error for missing experts that will not be trained automatically."""
        return TrajectoryNotFoundError(
            f"{self.found()} of the {self.count} expert trajectories this run needs are in "
            f"{self.directory}. Train them with: {self.command()}"
        )
