"""Comparing sets: DD-Ranking's scores, resumable cells, the comparison command's files."""

from __future__ import annotations

import math

import pytest
import torch

from lit_distill.evaluation.compare import (
    HARD,
    NO_AUGMENT,
    PLAIN,
    Cell,
    CellStore,
    Row,
    augmentation_robust_score,
    conditions,
    label_robust_score,
)
from lit_distill.evaluation.evaluator import EvalResult
from lit_distill.export import SyntheticData, save_synthetic
from lit_distill.main import main

SQUASH_0 = (1 - math.exp(-1)) / (math.e - math.exp(-1))  # a score at parity: 0.269


def test_label_robust_score_by_hand():
    # HLR = 0.90 - 0.60 = 0.30; IOR = 0.70 - 0.50 = 0.20; alpha = 0.5 * 0.2 - 0.5 * 0.3 = -0.05.
    lrs, hlr, ior = label_robust_score(0.90, 0.60, 0.70, 0.50)
    assert (hlr, ior) == (pytest.approx(0.30), pytest.approx(0.20))
    expected = (math.exp(-0.05) - math.exp(-1)) / (math.e - math.exp(-1))
    assert lrs == pytest.approx(expected)
    assert label_robust_score(0.5, 0.5, 0.5, 0.5)[0] == pytest.approx(SQUASH_0)
    assert label_robust_score(0.0, 1.0, 1.0, 0.0)[0] == pytest.approx(1.0)  # the best possible
    assert label_robust_score(1.0, 0.0, 0.0, 1.0)[0] == pytest.approx(0.0)  # the worst


def test_augmentation_robust_score_by_hand():
    # beta = 0.5 * (0.8 - 0.6) + 0.5 * (0.7 - 0.4) = 0.25.
    expected = (math.exp(0.25) - math.exp(-1)) / (math.e - math.exp(-1))
    assert augmentation_robust_score(0.8, 0.6, 0.7, 0.4) == pytest.approx(expected)
    assert augmentation_robust_score(0.8, 0.6, 0.7, 0.4, gamma=1.0) == pytest.approx(
        (math.exp(0.2) - math.exp(-1)) / (math.e - math.exp(-1))
    )


def test_conditions_follow_what_the_scores_need():
    soft = Row("datm", "set", 1, True, "x")
    hard = Row("tgdd", "set", 1, False, "y")
    assert conditions(soft, scores=True) == [PLAIN, NO_AUGMENT, HARD]
    assert conditions(hard, scores=True) == [PLAIN, NO_AUGMENT]  # hard labels = its own
    assert conditions(Row("full", "full", 0, False, "z"), scores=True) == [HARD]
    assert conditions(soft, scores=False) == [PLAIN]


def test_cells_are_stored_under_keys_that_change_with_their_settings(tmp_path):
    cell = Cell(Row("tgdd", "set", 1, False, "123"), "convnet3", PLAIN)
    result = EvalResult("tgdd", "convnet3", "short", 1, (0.5, 0.6))
    store = CellStore(tmp_path, {"protocol": "short", "epochs": 300})
    assert store.get(cell) is None
    store.put(cell, result, seconds=12.5)
    assert store.get(cell) == (result, 12.5)
    assert CellStore(tmp_path, {"protocol": "short", "epochs": 30}).get(cell) is None
    other = Cell(Row("tgdd", "set", 1, False, "456"), "convnet3", PLAIN)  # another file's data
    assert store.get(other) is None


def export(tmp_path, name: str, dataset: str = "digits", soft: bool = False) -> str:
    torch.manual_seed(len(name))
    data = SyntheticData(
        images=torch.rand(10, 1, 8, 8), labels=torch.arange(10),
        label_logits=torch.randn(10, 10) if soft else None, lr=0.01, factor=1, ipc=1,
        num_classes=10, class_names=[str(i) for i in range(10)], dataset=dataset,
        image_shape=[1, 8, 8], zca=False, method=name,
    )  # fmt: skip
    return str(save_synthetic(tmp_path / f"{name}.pt", data))


TINY = ["--model.epochs=2", "--model.num_runs=1", "--model.full_epochs=1"]
TINY += ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]


def test_comparison_writes_its_table_scores_and_heat_map_and_resumes(in_tmp, capsys, monkeypatch):
    sets = f"[{export(in_tmp, 'tgdd')},{export(in_tmp, 'datm', soft=True)}]"
    main(["test", "--config", "compare.yaml", f"--model.sets={sets}", *TINY])
    summary = capsys.readouterr().out
    folder = in_tmp / "runs/compare"
    for name in ("comparison.md", "comparison.csv", "comparison.png"):
        assert (folder / name).is_file()
    table = (folder / "comparison.md").read_text()
    for row in (
        "| tgdd | 1 |",
        "| datm | 1 |",
        "| random real (IPC 1) | 1 |",
        "| full data | all |",
    ):
        assert row in table
    assert "| datm | convnet_bn |" in table and "LRS" in table  # the scores, per arch
    assert "| tgdd | 1 |" in summary
    csv = (folder / "comparison.csv").read_text().splitlines()
    # tgdd 2 conditions + datm 3 + random 2, on 2 archs, + full data on 2: 16 cells.
    assert len(csv) == 1 + 16 and len(list((folder / "cells").glob("*.json"))) == 16
    # Started again: every cell is read back, none is trained.
    from lit_distill.evaluation import evaluator

    monkeypatch.setattr(evaluator.SyntheticEvaluator, "evaluate", _never)
    main(["test", "--config", "compare.yaml", f"--model.sets={sets}", *TINY])
    assert (folder / "comparison.md").read_text() == table


def _never(*args, **kwargs):
    raise AssertionError("a finished cell was trained again")
