"""A callback for the DDP tests, importable by the processes a DDP launcher starts."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class SaveLearned(L.Callback):
    """At the end of fit, every rank writes its synthetic set to ``folder/rank<r>.pt``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        learned = {k: v.detach().cpu() for k, v in pl_module.synthetic.learned().items()}
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {"world": trainer.world_size, "iteration": int(pl_module.iteration), **learned}
        torch.save(state, self.folder / f"rank{trainer.global_rank}.pt")
