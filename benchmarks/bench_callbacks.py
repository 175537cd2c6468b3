"""Callbacks the benchmarks add to command-line runs (``--trainer.callbacks+=...``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch


class IterationClock(L.Callback):
    """Rank 0 writes the wall time of every training batch, and of every epoch, to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.batches: list[float] = []
        self.epochs: list[float] = []

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self._epoch = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._batch = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        self.batches.append(time.perf_counter() - self._batch)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self.epochs.append(time.perf_counter() - self._epoch)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            record = {"batches": self.batches, "epochs": self.epochs, "world": trainer.world_size}
            self.path.write_text(json.dumps(record))
