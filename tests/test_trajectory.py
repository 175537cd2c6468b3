"""The trajectory file format: round trips, atomic writes, corruption and mismatch errors."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import make_trajectory

from lit_distill.errors import (
    TrajectoryCorruptError,
    TrajectoryMismatchError,
    TrajectoryNotFoundError,
)
from lit_distill.models import build_model
from lit_distill.trajectory import SnapshotBank, Trajectory, expert_path, load_trajectories


def test_round_trip_keeps_everything(tmp_path, trajectory):
    path = trajectory.save(tmp_path / "expert_000.pt")
    loaded = Trajectory.load(path)
    assert torch.equal(loaded.params, trajectory.params)
    for field in ("arch", "arch_kwargs", "num_classes", "image_shape", "dataset", "epochs"):
        assert getattr(loaded, field) == getattr(trajectory, field)
    assert loaded.num_snapshots == 4 and not loaded.convex


def test_half_precision_storage_halves_the_file(tmp_path, trajectory):
    full = trajectory.save(tmp_path / "full.pt").stat().st_size
    trajectory.params = trajectory.params.half()
    half_path = trajectory.save(tmp_path / "half.pt")
    assert half_path.stat().st_size < 0.6 * full
    restored = Trajectory.load(half_path).snapshot(-1)
    assert restored.dtype == torch.float32
    assert torch.allclose(restored, trajectory.params[-1].float(), atol=1e-3)


def test_state_dict_at_loads_into_the_architecture(trajectory):
    net = build_model("convnet3", 10, (1, 8, 8), width=8)
    net.load_state_dict(trajectory.state_dict_at(2))
    loaded = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    assert torch.equal(loaded, trajectory.params[2])


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path, trajectory, monkeypatch):
    path = trajectory.save(tmp_path / "expert_000.pt")
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        trajectory.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expert_000.pt"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b"not a trajectory at all",
    ],
    ids=["truncated", "garbage"],
)
def test_unreadable_files_raise_a_corruption_error(tmp_path, trajectory, damage):
    path = trajectory.save(tmp_path / "expert_000.pt")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(TrajectoryCorruptError, match="train the expert again"):
        Trajectory.load(path)


def test_altered_parameters_fail_the_checksum(tmp_path, trajectory):
    path = tmp_path / "expert_000.pt"
    trajectory.save(path)
    payload = torch.load(path, weights_only=True)
    payload["params"][1, 5] += 1.0
    torch.save(payload, path)
    with pytest.raises(TrajectoryCorruptError, match="checksum"):
        Trajectory.load(path)


def test_foreign_or_future_files_are_refused(tmp_path, trajectory):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(TrajectoryCorruptError, match="not a lit-distill trajectory"):
        Trajectory.load(path)
    trajectory.save(path)
    payload = torch.load(path, weights_only=True)
    payload["version"] = 99
    torch.save(payload, path)
    with pytest.raises(TrajectoryCorruptError, match="version 99"):
        Trajectory.load(path)


def test_compatibility_checks_name_the_mismatch(trajectory):
    same = build_model("convnet3", 10, (1, 8, 8), width=8)
    trajectory.check_compatible(same, dataset="digits", num_classes=10, image_shape=(1, 8, 8))
    wider = build_model("convnet3", 10, (1, 8, 8), width=16)
    with pytest.raises(TrajectoryMismatchError, match="does not match the model"):
        trajectory.check_compatible(wider, fix="Train them with: lit-distill fit ...")
    with pytest.raises(TrajectoryMismatchError, match="dataset 'digits', expected 'mnist'"):
        trajectory.check_compatible(same, dataset="mnist")
    with pytest.raises(TrajectoryMismatchError, match="10 classes, expected 100"):
        trajectory.check_compatible(same, num_classes=100)
    with pytest.raises(TrajectoryMismatchError, match="zca=False, expected zca=True"):
        trajectory.check_compatible(same, zca=True)


def test_load_trajectories_counts_and_explains(tmp_path):
    for i in range(2):
        make_trajectory(seed=i).save(expert_path(tmp_path, i))
    assert len(load_trajectories(tmp_path)) == 2
    with pytest.raises(TrajectoryNotFoundError, match="2 expert trajectories .* 3 needed.*EXPERTS"):
        load_trajectories(tmp_path, 3, fix="EXPERTS")
    with pytest.raises(TrajectoryNotFoundError):
        load_trajectories(tmp_path / "missing")


def test_snapshot_bank_copies_snapshots_by_name(trajectory):
    other = make_trajectory(seed=1)
    bank = SnapshotBank([trajectory, other])
    assert (bank.num_trajectories, bank.num_snapshots) == (2, 4)
    net = build_model("convnet3", 10, (1, 8, 8), width=8)
    bank.load_into(net, 1, 3)
    assert torch.equal(torch.cat([p.reshape(-1) for p in net.parameters()]), other.params[3])


def test_snapshot_bank_refuses_mixed_trajectories(trajectory):
    with pytest.raises(TrajectoryMismatchError, match="share architecture"):
        SnapshotBank([trajectory, make_trajectory(epochs=5)])


def test_expert_files_are_numbered(tmp_path):
    assert expert_path(tmp_path, 7) == tmp_path / "expert_007.pt"
    assert not os.path.exists(expert_path(tmp_path, 0))
