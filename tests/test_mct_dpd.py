"""MCT's convexified trajectory and DPD's difference-driven pruning: algorithms and modules."""

from __future__ import annotations

import pytest
import torch
from conftest import DIGIT_EXPERTS, make_trajectory, quiet_trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_distill.data import DigitsDataModule
from lit_distill.distill import DATMModule, DPDModule, MCTModule, MTTModule
from lit_distill.distill.pruning import difference_mask
from lit_distill.errors import SettingError
from lit_distill.experts import ExpertModule
from lit_distill.trajectory import Trajectory, expert_path
from lit_distill.trajectory.convex import (
    EpochScale,
    LineConstants,
    line_constants,
    line_point,
    sample_lambda,
)

DIGITS = DigitsDataModule()
FACTS = dict(
    num_classes=10, image_shape=(1, 8, 8), mean=DIGITS.mean, std=DIGITS.std, dataset="digits"
)
MATCH = dict(
    **DIGIT_EXPERTS, num_experts=2, syn_steps=5, expert_epochs=2, ipc=1, image_every=0,
    lr_images=100, real_on_device=False,
)  # fmt: skip


trainer = quiet_trainer


def fit(model, tmp_path, **kwargs):
    trainer(tmp_path, **kwargs).fit(model, datamodule=DigitsDataModule())
    return {k: v.detach().clone() for k, v in model.synthetic.learned().items()}


# ---------------------------------------------------------------------- pruning
def test_pruning_keeps_a_minus_floor_a_rate_and_drops_the_largest_differences():
    torch.manual_seed(0)
    target, student = torch.randn(1003), torch.randn(1003)
    kept = difference_mask(student, target, 0.1)
    assert kept.dtype == torch.bool and int(kept.sum()) == 1003 - int(1003 * 0.1)
    score = (target - student).abs()
    assert score[~kept].min() >= score[kept].max()  # the dropped ones are the largest


def test_pruning_rate_zero_keeps_everything_and_bad_settings_are_refused():
    x = torch.randn(10)
    assert difference_mask(x, x + 1, 0.0) is None
    assert difference_mask(x, x + 1, 0.05) is None  # floor(10 * 0.05) = 0 dropped
    with pytest.raises(ValueError, match="pruning_rate"):
        difference_mask(x, x, 1.0)
    with pytest.raises(ValueError, match="pruning_metric"):
        difference_mask(x, x, 0.1, "cosine")


def test_relative_and_random_metrics():
    target = torch.tensor([1.0, 100.0, 1.0, 100.0])
    student = torch.tensor([0.0, 90.0, 1.0, 100.0])
    kept = difference_mask(student, target, 0.25, "relative")
    assert kept.tolist() == [False, True, True, True]  # 100 % off beats 10 % off
    draws = [difference_mask(student, target, 0.5, "random", torch.Generator().manual_seed(s))
             for s in (1, 1, 2)]  # fmt: skip
    assert torch.equal(draws[0], draws[1]) and int(draws[0].sum()) == 2


def test_dpd_with_rate_zero_equals_datm_exactly(digit_experts, tmp_path):
    options = dict(MATCH, trajectory_dir=str(digit_experts), max_start_epoch=4, iterations=3)
    options.update(init="real", threshold=10.0, export_dir=str(tmp_path))
    datm = fit(DATMModule(**FACTS, **options), tmp_path)
    dpd = fit(DPDModule(**FACTS, **options, pruning_rate=0.0), tmp_path)
    for name in datm:
        assert torch.equal(datm[name], dpd[name]), name
    pruned = fit(DPDModule(**FACTS, **options, pruning_rate=0.1), tmp_path)
    assert not torch.equal(pruned["images"], datm["images"])  # the comparison is not vacuous


# ---------------------------------------------------------------------- the line
def test_line_ends_are_the_snapshots_and_constants_describe_the_path():
    traj = make_trajectory(epochs=5, **DIGIT_EXPERTS)
    first, last = traj.params[0], traj.params[-1]
    assert torch.equal(line_point(first, last, 0.0), first)
    assert torch.equal(line_point(first, last, 1.0), last)
    line = line_constants(traj.params)
    assert line.position[0] == 0 and line.position[-1] == pytest.approx(1.0)
    assert line.distance[0] == 0 and line.distance[-1] == pytest.approx(0.0, abs=1e-4)
    middle = line_point(first, last, line.position[2])
    assert (traj.params[2] - middle).norm() == pytest.approx(line.distance[2], rel=1e-4)


def test_epoch_sampling_picks_only_epoch_positions_in_range():
    rng = torch.Generator().manual_seed(0)
    picks = {sample_lambda(rng, 0.0, 0.5, "epochs", EpochScale.uniform(10)) for _ in range(200)}
    assert picks == {k / 10 for k in range(6)}
    uniform = [sample_lambda(rng, 0.2, 0.3) for _ in range(200)]
    assert min(uniform) >= 0.2 and max(uniform) <= 0.3 and len(set(uniform)) == 200


def test_convex_expert_file_keeps_two_snapshots_and_the_same_line_as_the_full_file(tmp_path):
    dm = DigitsDataModule()
    facts = dict(num_classes=10, image_shape=(1, 8, 8), mean=dm.mean, std=dm.std, dataset="digits")
    files = {}
    for store in ("full", "convex"):
        model = ExpertModule(
            **facts, **DIGIT_EXPERTS, recipe="mtt", epochs=3, batch_size=64, store=store,
            trajectory_dir=str(tmp_path / store),
        )  # fmt: skip
        trainer(tmp_path, max_epochs=3).fit(model, datamodule=dm)
        files[store] = Trajectory.load(model.trajectory_path(0))
    full, convex = files["full"], files["convex"]
    assert convex.epochs == [0, 3] and full.epochs == [0, 1, 2, 3]
    assert torch.equal(convex.params[0], full.params[0])
    assert torch.equal(convex.params[1], full.params[-1])
    stored, computed = convex.line(), full.line()
    assert stored.position == pytest.approx(computed.position)
    assert stored.distance == pytest.approx(computed.distance, rel=1e-5, abs=1e-6)


def convex_copy(traj: Trajectory) -> Trajectory:
    line = traj.line()
    traj.params, traj.epochs = traj.params[[0, -1]].clone(), [0, traj.num_epochs]
    traj.line_position, traj.line_distance, traj.line_length = (
        line.position, line.distance, line.length,
    )  # fmt: skip
    return traj


def test_mct_draws_the_same_segments_from_full_and_convex_files(digit_experts, tmp_path):
    segments = {}
    for store in ("full", "convex"):
        folder = tmp_path / store
        for i in range(2):
            traj = Trajectory.load(expert_path(digit_experts, i))
            (traj if store == "full" else convex_copy(traj)).save(expert_path(folder, i))
        model = MCTModule(**FACTS, **{**MATCH, "trajectory_dir": str(folder), "iterations": 1})
        fit(model, tmp_path)
        rng = torch.Generator().manual_seed(7)
        segments[store] = [model.sample_segment(rng) for _ in range(5)]
    for (full, logs_full), (convex, logs_convex) in zip(*segments.values(), strict=True):
        assert logs_full == logs_convex
        assert torch.equal(full.start, convex.start) and torch.equal(full.target, convex.target)


def test_mct_segment_spans_delta_lambda_of_the_line(digit_experts, tmp_path):
    model = MCTModule(**FACTS, **{**MATCH, "trajectory_dir": str(digit_experts), "iterations": 1})
    fit(model, tmp_path)
    assert model.ranges == [(0.0, pytest.approx(1 - 2 / 6))] * 2  # the whole line
    segment, logs = model.sample_segment(torch.Generator().manual_seed(0))
    expert, lam = int(logs["train/expert"]), logs["train/lambda"]
    assert logs["train/target_lambda"] == pytest.approx(lam + 2 / 6)
    first, last = model.bank.vector(expert, 0), model.bank.vector(expert, -1)
    torch.testing.assert_close(segment.start, line_point(first, last, lam))
    torch.testing.assert_close(segment.target, line_point(first, last, lam + 2 / 6))


def test_mct_mtt_window_and_projected_epochs(digit_experts, tmp_path):
    options = {**MATCH, "trajectory_dir": str(digit_experts), "iterations": 1}
    window = MCTModule(**FACTS, **options, max_start_epoch=2)
    fit(window, tmp_path)
    assert window.ranges == [(0.0, pytest.approx(2 / 6))] * 2  # max_start_epoch / K
    projected = MCTModule(**FACTS, **options, max_start_epoch=2, epoch_positions="projected")
    fit(projected, tmp_path)
    rng = torch.Generator().manual_seed(0)
    for _ in range(10):
        _, logs = projected.sample_segment(rng)
        expert = int(logs["train/expert"])
        position = Trajectory.load(expert_path(digit_experts, expert)).line().position
        assert projected.ranges[expert][1] == pytest.approx(position[2])  # λ_2, not 2 / 6
        scale = projected.scales[expert]
        start_epoch = scale.epoch_of(logs["train/lambda"])
        assert logs["train/target_lambda"] == pytest.approx(scale.at(start_epoch + 2))


def test_epoch_scale_is_piecewise_linear_and_monotone():
    scale = EpochScale.projected(LineConstants([0.0, 0.5, 0.45, 0.8, 1.0], [0.0] * 5, 1.0))
    assert scale.positions == (0.0, 0.5, 0.5, 0.8, 1.0)  # a step back is flattened
    assert scale.at(0.5) == pytest.approx(0.25) and scale.at(2.5) == pytest.approx(0.65)
    assert scale.epoch_of(0.25) == pytest.approx(0.5) and scale.epoch_of(0.65) == pytest.approx(2.5)
    assert scale.epoch_of(0.5) == pytest.approx(1.0)  # the first epoch at that position
    uniform = EpochScale.uniform(4)
    assert uniform.at(1.5) == pytest.approx(0.375) and uniform.epoch_of(0.375) == pytest.approx(1.5)


def test_mct_refuses_a_segment_longer_than_the_line(digit_experts, tmp_path):
    options = {**MATCH, "trajectory_dir": str(digit_experts), "expert_epochs": 7}
    with pytest.raises(SettingError, match="passes the end of the line"):
        fit(MCTModule(**FACTS, **options, iterations=1), tmp_path)
    options = {**MATCH, "trajectory_dir": str(digit_experts), "max_start_epoch": 5}
    with pytest.raises(SettingError, match="lower max_start_epoch to at most 4"):
        fit(MCTModule(**FACTS, **options, iterations=1), tmp_path)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"lambda_min": 0.6, "lambda_max": 0.4}, "lambda_min 0.6 is above lambda_max 0.4"),
        ({"lambda_max": 1.5}, "lambda_max must lie in"),
        ({"lambda_min": -0.1}, "lambda_min must lie in"),
        ({"max_start_epoch": 2, "lambda_max": 0.3}, "set only one of them"),
        ({"delta_lambda": 0.2, "epoch_positions": "projected"}, "set only one of them"),
    ],
)
def test_mct_refuses_an_impossible_start_range(bad, match):
    with pytest.raises(ValueError, match=match):
        MCTModule(**FACTS, **MATCH, **bad)


def test_pruning_works_on_mtt_and_mct_too(digit_experts, tmp_path):
    for cls, extra in ((MTTModule, {"max_start_epoch": 4}), (MCTModule, {})):
        options = {**MATCH, **extra, "trajectory_dir": str(digit_experts), "iterations": 2}
        model = cls(**FACTS, **options, pruning_rate=0.2)
        trainer(tmp_path, log_every_n_steps=1).fit(model, datamodule=DigitsDataModule())
        total = model.student.num_params
        assert model.trainer.callback_metrics["train/kept_params"] == total - int(total * 0.2)


# ---------------------------------------------------------------------- resume
@pytest.mark.parametrize("cls", [MCTModule, DPDModule])
def test_resumed_mct_and_dpd_runs_equal_uninterrupted_ones(cls, digit_experts, tmp_path):
    options = {**MATCH, "trajectory_dir": str(digit_experts), "iterations": 6}
    if cls is DPDModule:
        options.update(max_start_epoch=4, init="real", threshold=10.0)

    def run(name, stop_at=None, ckpt_path=None):
        save = ModelCheckpoint(dirpath=tmp_path / name, save_last=True, every_n_train_steps=3)
        limits = {} if stop_at is None else {"max_steps": stop_at}
        model = cls(**FACTS, **options)
        run = trainer(tmp_path, callbacks=[save], enable_checkpointing=True, **limits)
        run.fit(model, datamodule=DigitsDataModule(), ckpt_path=ckpt_path)
        return {k: v.detach().clone() for k, v in model.synthetic.learned().items()}

    straight = run("straight")
    run("interrupted", stop_at=3)
    resumed = run("resumed", ckpt_path=tmp_path / "interrupted/last.ckpt")
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-5, atol=1e-6)
    half = run("half", stop_at=3)
    assert not torch.allclose(half["images"], straight["images"])
