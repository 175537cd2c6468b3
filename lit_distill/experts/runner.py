"""Training several experts in one run, one fresh Trainer per expert.

Under DDP every rank trains every expert together (data-parallel: each rank takes its share of
each batch), rather than each rank training different experts: expert runs then keep the
semantics of a single process (one trajectory per expert, the recipe's effective batch), need no
change to Lightning's launchers, and each file is written once, by rank 0. Skipping a finished
expert is decided by rank 0 and shared.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch.distributed as dist
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from lit_distill.console import REPORT, duration
from lit_distill.errors import TrajectoryCorruptError
from lit_distill.experts.module import ExpertModule
from lit_distill.seeding import derive_seed
from lit_distill.trajectory import Trajectory

log = logging.getLogger(__name__)


def is_complete(path: Path) -> bool:
    """Whether ``path`` holds a finished, readable trajectory (a damaged one is retrained)."""
    if not path.exists():
        return False
    try:
        Trajectory.load(path)
    except TrajectoryCorruptError as err:
        log.warning("%s; training this expert again", err)
        return False
    return True


def expert_logger(logger: Logger | None, index: int) -> Logger | None:
    """A per-expert TensorBoard run (``.../expert_003``) next to the configured one."""
    if isinstance(logger, TensorBoardLogger):
        return TensorBoardLogger(
            save_dir=logger.save_dir,
            name=logger.name,
            version=f"expert_{index:03d}",
            default_hp_metric=False,
        )
    return logger


def train_experts(
    model: ExpertModule,
    datamodule: L.LightningDataModule,
    make_trainer: Callable[..., L.Trainer],
    logger: Logger | None = None,
) -> list[Path]:
    """Train every expert of ``model`` whose trajectory file is missing; return all their paths.

    Args:
        model: the expert module (its ``num_experts`` and ``trajectory_dir`` say what to do).
        datamodule: the real data.
        make_trainer: builds a fresh Trainer from keyword overrides (``max_epochs``, ``logger``).
        logger: the configured logger, cloned per expert when it is a TensorBoard logger.
    """
    paths, trained, reused = [], [], []
    count = model.hparams.num_experts
    with REPORT.phase("experts"):
        for index in range(count):
            path = model.trajectory_path(index)
            paths.append(path)
            if _agreed(is_complete(path)):
                reused.append(path)
                continue
            if not trained and reused and rank_zero_only.rank == 0:
                log.info("%d of %d experts already in %s: reused", len(reused), count, path.parent)
            model.start_expert(index)
            L.seed_everything(derive_seed(model.hparams.seed, index) % 2**32, verbose=False)
            trainer = make_trainer(
                max_epochs=model.recipe.epochs, logger=expert_logger(logger, index)
            )
            clock = time.perf_counter()
            trainer.fit(model, datamodule=datamodule)
            if trainer.fast_dev_run:  # a smoke test: one expert, nothing written
                break
            trainer.strategy.barrier()  # the file is written (by rank 0) before anyone looks
            if trainer.is_global_zero and not path.exists():
                raise RuntimeError(f"expert {index} stopped before its last epoch; rerun it")
            trained.append(path)
            accuracy = trainer.callback_metrics.get("val/acc")
            acc = "" if accuracy is None else f", test acc {100 * float(accuracy):.2f} %"
            seconds = duration(time.perf_counter() - clock)
            if trainer.is_global_zero:  # one line per expert, not one per DDP rank
                log.info("expert %d/%d done in %s%s -> %s", index + 1, count, seconds, acc, path)
    if not trained and reused and rank_zero_only.rank == 0:
        log.info("all %d experts already in %s: reused", len(reused), reused[0].parent)
    REPORT.counts["experts"] = f"{len(trained)} trained, {len(reused)} reused"
    for path in paths:
        if path in trained or path in reused:
            REPORT.file("experts", path)
    return paths


def _agreed(decision: bool) -> bool:
    """Rank 0's decision on every rank once the process group exists (all ranks must skip or
    train the same expert together: each expert is trained data-parallel by all of them)."""
    if dist.is_available() and dist.is_initialized():
        shared = [decision]
        dist.broadcast_object_list(shared, src=0)
        return bool(shared[0])
    return decision
