"""The notebooks run top to bottom (on a small export, with few training epochs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lit_distill.data import DigitsDataModule
from lit_distill.export import SyntheticData, save_synthetic

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def code_cells(path: Path) -> list[str]:
    notebook = json.loads(path.read_text())
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]


@pytest.mark.slow
@pytest.mark.parametrize("start", ["root", "notebooks"])  # Jupyter starts in notebooks/
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, start, in_tmp, monkeypatch):
    dm = DigitsDataModule()
    dm.setup()
    data = SyntheticData.random_real(
        dm.train_set,
        1,
        torch.Generator().manual_seed(0),
        dataset="digits",
        zca=False,
        class_names=dm.class_names,
    )
    export = save_synthetic(in_tmp / "runs/tgdd_digits/synthetic_final.pt", data)
    if start == "notebooks":
        (in_tmp / "notebooks").mkdir()
        monkeypatch.chdir(in_tmp / "notebooks")
    parameters, *rest = code_cells(path)
    namespace: dict = {}
    exec(compile(parameters, str(path), "exec"), namespace)
    namespace["EPOCHS"] = 2  # the first cell holds the parameters; train briefly here
    for source in rest:
        exec(compile(source, str(path), "exec"), namespace)
    assert Path(namespace["EXPORT"]).resolve() == export.resolve()
