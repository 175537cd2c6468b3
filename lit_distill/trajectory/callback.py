"""A callback that records an expert's trajectory while it trains and writes it at the end."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from lit_distill.trajectory.convex import line_constants
from lit_distill.trajectory.format import STORE_DTYPES, Trajectory, flatten, named_state

log = logging.getLogger(__name__)


class TrajectoryCallback(L.Callback):
    """Snapshot ``pl_module.net`` at initialisation and after every epoch; save one file at the end.

    The LightningModule provides the network as ``net`` and the trajectory's metadata through
    ``trajectory_metadata()`` (architecture, data facts, seed, recipe). The file is written only
    when the fit ran all ``num_epochs`` epochs, so an interrupted expert leaves nothing behind
    and is simply trained again. Snapshots are kept on the CPU (one flat vector each, in the
    storage precision); in ``convex`` mode they are all kept until the end, to compute MCT's
    line constants, and only the first and last are written.

    Args:
        path: file to write.
        num_epochs: epochs the expert is trained for (the trajectory is complete after them).
        mode: ``"full"`` keeps every epoch; ``"convex"`` only the first and last snapshot (MCT).
        dtype: storage precision of the parameters (``float16`` halves the file).
    """

    def __init__(
        self,
        path: str | Path,
        num_epochs: int,
        mode: Literal["full", "convex"] = "full",
        dtype: Literal["float32", "float16", "bfloat16"] = "float32",
    ) -> None:
        self.path = Path(path)
        self.num_epochs = num_epochs
        self.mode = mode
        self.dtype = STORE_DTYPES[dtype]
        self._params: list[Tensor] = []
        self._buffers: list[Tensor] = []
        self._epochs: list[int] = []
        self._accuracy: dict[int, float] = {}

    def _record(self, pl_module: L.LightningModule, epoch: int) -> None:
        params, buffers = named_state(pl_module.net)
        self._params.append(flatten(list(params.values())).to(self.dtype))
        self._buffers.append(flatten(list(buffers.values())))
        self._epochs.append(epoch)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._params, self._buffers, self._epochs, self._accuracy = [], [], [], {}
        self._record(pl_module, 0)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        acc = trainer.callback_metrics.get("val/acc")
        if not trainer.sanity_checking and acc is not None:
            self._accuracy[trainer.current_epoch + 1] = float(acc)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(pl_module, trainer.current_epoch + 1)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = self._epochs[-1] if self._epochs else 0
        if done != self.num_epochs:
            log.warning(
                "expert stopped after %d of %d epochs: no trajectory written to %s",
                done,
                self.num_epochs,
                self.path,
            )
            return
        if trainer.is_global_zero:
            self.build(pl_module.trajectory_metadata(), pl_module.net).save(self.path)
            log.debug("trajectory written: %s", self.path)

    def build(self, metadata: dict[str, Any], net: torch.nn.Module) -> Trajectory:
        """Assemble the recorded snapshots into a :class:`Trajectory`."""
        params, buffers = named_state(net)
        snapshots = torch.stack(self._params)
        line = line_constants(snapshots.float())
        keep = [0, len(self._epochs) - 1] if self.mode == "convex" else range(len(self._epochs))
        keep = list(keep)
        return Trajectory(
            **metadata,
            param_names=list(params),
            param_shapes=[list(p.shape) for p in params.values()],
            buffer_names=list(buffers),
            buffer_shapes=[list(b.shape) for b in buffers.values()],
            buffers=torch.stack([self._buffers[i] for i in keep]) if buffers else None,
            epochs=[self._epochs[i] for i in keep],
            num_epochs=self.num_epochs,
            params=snapshots[keep].clone(),
            test_accuracy=[self._accuracy.get(e) for e in range(1, self.num_epochs + 1)],
            line_position=line.position,
            line_distance=line.distance,
            line_length=line.length,
        )
