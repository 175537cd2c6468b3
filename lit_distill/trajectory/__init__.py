"""Expert trajectories: the on-disk format, the recording callback, folders and snapshot banks."""

from lit_distill.trajectory.callback import TrajectoryCallback
from lit_distill.trajectory.format import Trajectory, unflatten
from lit_distill.trajectory.store import SnapshotBank, expert_path, list_experts, load_trajectories

__all__ = [
    "SnapshotBank",
    "Trajectory",
    "TrajectoryCallback",
    "expert_path",
    "list_experts",
    "load_trajectories",
    "unflatten",
]
