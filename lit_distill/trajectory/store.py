"""Folders of expert trajectories, and their snapshots materialised in memory once.

A folder holds ``expert_000.pt``, ``expert_001.pt``, ... one per expert. Distillation reads
snapshots every iteration, so :class:`SnapshotBank` loads them all once, as one float32 tensor
on the target device, and copies a snapshot into a working network on request (a copy of a few
hundred thousand floats, instead of a ``torch.load`` per iteration).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from lit_distill.errors import TrajectoryMismatchError, TrajectoryNotFoundError
from lit_distill.trajectory.format import Trajectory, named_state, unflatten

_EXPERT_FILE = re.compile(r"^expert_(\d{3,})\.pt$")


def expert_path(directory: str | Path, index: int) -> Path:
    """Where expert ``index`` of a trajectory folder is stored."""
    return Path(directory) / f"expert_{index:03d}.pt"


def list_experts(directory: str | Path) -> list[Path]:
    """The expert files present in ``directory``, by index."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _EXPERT_FILE.match(p.name)]
    return sorted(found, key=lambda p: int(_EXPERT_FILE.match(p.name).group(1)))


def load_trajectories(
    directory: str | Path, count: int | None = None, fix: str = ""
) -> list[Trajectory]:
    """Load (and verify) the first ``count`` trajectories of ``directory`` (all when ``None``).

    Raises:
        TrajectoryNotFoundError: fewer than ``count`` (or no) expert files; ``fix`` says how to
            train them.
    """
    paths = list_experts(directory)
    if count is not None:
        paths = paths[:count]
    wanted = count or 1
    if len(paths) < wanted:
        hint = f" Train them with: {fix}" if fix else ""
        raise TrajectoryNotFoundError(
            f"{len(paths)} expert trajectories in {directory}, {wanted} needed.{hint}"
        )
    return [Trajectory.load(p) for p in paths]


class SnapshotBank:
    """Every snapshot of several trajectories, held once as a ``(E, S, P)`` tensor on ``device``.

    Args:
        trajectories: trajectories of the same architecture and number of snapshots.
        device: where the snapshots live (the accelerator, for speed).
    """

    def __init__(self, trajectories: Sequence[Trajectory], device: torch.device | str = "cpu"):
        first = trajectories[0]
        for traj in trajectories[1:]:
            if traj.param_names != first.param_names or traj.epochs != first.epochs:
                raise TrajectoryMismatchError(
                    "trajectories of one folder must share architecture and stored epochs; "
                    f"found {first.describe()} epochs {first.epochs[-1]} and "
                    f"{traj.describe()} epochs {traj.epochs[-1]}"
                )
        self.epochs = list(first.epochs)
        self.param_names, self.param_shapes = first.param_names, first.param_shapes
        self.buffer_names, self.buffer_shapes = first.buffer_names, first.buffer_shapes
        self.params = torch.stack([t.params.float() for t in trajectories]).to(device)
        self.buffers = (
            torch.stack([t.buffers for t in trajectories]).to(device)
            if first.buffers is not None
            else None
        )

    def to(self, device: torch.device | str) -> SnapshotBank:
        """Move every snapshot to ``device`` (in place; returns the bank)."""
        self.params = self.params.to(device)
        self.buffers = None if self.buffers is None else self.buffers.to(device)
        return self

    @property
    def num_trajectories(self) -> int:
        return self.params.shape[0]

    @property
    def num_snapshots(self) -> int:
        return self.params.shape[1]

    def vector(self, trajectory: int, snapshot: int) -> Tensor:
        """The flat parameter vector of one snapshot (a view, no copy)."""
        return self.params[trajectory, snapshot]

    @torch.no_grad()
    def load_into(self, net: nn.Module, trajectory: int, snapshot: int) -> nn.Module:
        """Copy one snapshot's parameters (and buffers) into ``net``, matching by name."""
        params, buffers = named_state(net)
        _copy(params, self.param_names, self.param_shapes, self.params[trajectory, snapshot])
        if self.buffers is not None:
            _copy(
                buffers, self.buffer_names, self.buffer_shapes, self.buffers[trajectory, snapshot]
            )
        return net


def _copy(targets: dict[str, Tensor], names, shapes, vector: Tensor) -> None:
    for name, piece in unflatten(vector, names, shapes).items():
        targets[name].copy_(piece)
