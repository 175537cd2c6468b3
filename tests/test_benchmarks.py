"""The benchmark scripts run end to end with the smallest settings (no timing is checked)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """``bench("expert_throughput")``: a script of ``benchmarks/`` as a module."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their ``common`` module

    def load(name: str) -> ModuleType:
        return importlib.import_module(name)

    return load


@pytest.fixture
def tiny_npz(tmp_path) -> Path:
    """A 10-class RGB 8x8 dataset in the ``.npz`` layout of NpzDataModule."""
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8),
        y_train=np.arange(40) % 10,
        x_test=rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8),
        y_test=np.arange(10),
    )
    return path


@pytest.mark.filterwarnings("ignore:.*smaller than the logging interval")
@pytest.mark.parametrize("recipe", ["mtt", "tgdd"])
def test_expert_throughput_runs(bench, tiny_npz, tmp_path, recipe):
    out = tmp_path / "results.md"
    rows = bench("expert_throughput").main(
        ["--data", str(tiny_npz), "--name", "tiny", "--subset", "32", "--batch-size", "16",
         "--width", "8", "--epochs", "2", "--repeats", "1", "--recipe", recipe,
         "--progress-bar", "none", "--out", str(out)]
    )  # fmt: skip
    assert len(rows) == 1 and rows[0]["app"] > 0 and rows[0]["plain"] > 0
    # Both sides did the same computation: same weights at the end.
    assert float(rows[0]["max_diff"]) < 1e-5
    text = out.read_text()
    assert "python benchmarks/expert_throughput.py --data" in text and "app/plain" in text


def test_trajectory_storage_measures_files(bench, tmp_path):
    storage = bench("trajectory_storage")
    out = tmp_path / "results.md"
    rows = storage.main(
        ["--epochs", "3", "--experts", "2", "--channels", "1", "--image-size", "8",
         "--width", "8", "--out", str(out)]
    )  # fmt: skip
    size = {(r["dtype"], r["store"]): r for r in rows}
    assert size["float32", "full"]["snapshots"] == 4 and size["float32", "convex"]["snapshots"] == 2
    for dtype, itemsize in (("float32", 4), ("float16", 2)):
        full, convex = size[dtype, "full"], size[dtype, "convex"]
        # Two more snapshots cost two more parameter vectors (up to the archive's alignment).
        extra = full["bytes"] - convex["bytes"]
        assert abs(extra - 2 * full["params"] * itemsize) <= 128
    assert size["float16", "full"]["bytes"] < size["float32", "full"]["bytes"]
    assert "bytes per file" in out.read_text()


def test_trajectory_storage_reference_only_for_its_setting(bench):
    storage = bench("trajectory_storage")
    paper = storage.parse_args([])
    assert storage.reference(paper, storage.REFERENCE_EXPERTS) == "6.5 GB"
    other = storage.parse_args(["--epochs", "10"])
    assert storage.reference(other, storage.REFERENCE_EXPERTS) == "—"


@pytest.mark.parametrize("layout", ["auto", "off"])
def test_tgdd_speed_runs_both_sides(bench, tiny_npz, tmp_path, layout):
    out = tmp_path / "results.md"
    med = bench("tgdd_speed").main(
        ["--data", str(tiny_npz), "--name", "tiny", "--width", "8", "--ipc", "1", "--factor", "1",
         "--real-batch", "2", "--iterations", "1", "--warmup", "0", "--rounds", "2",
         "--channels-last", layout, "--real-forward-batch", "3",
         "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    )  # fmt: skip
    assert set(med) == {"app", "plain"} and all(w > 0 and c > 0 for w, c in med.values())
    text = out.read_text()
    setting = {"auto": "channels_last=None", "off": "channels_last=False"}[layout]
    assert "app / plain" in text and f"{setting}, real_forward_batch=3" in text
