"""Comparing distilled sets fairly: cells of (set, architecture, condition), resumable, and the
two scores of DD-Ranking (Li et al., arXiv 2505.13300), written here from the paper.

Every accuracy of a comparison is one *cell*: a row (an exported set, the random real subset of
an IPC, or the full training data), an architecture and a condition:

* ``labels``: ``own`` (the set's labels: soft ones where it learned them) or ``hard`` (their
  arg-max: soft labels removed);
* ``augment``: the protocol's evaluation-time augmentation on or off.

The plain accuracy of a set is its ``own``/augmented cell. DD-Ranking adds two scores that
cannot be raised by evaluation tricks alone (accuracies are fractions):

* **label-robust score**: hard-label recovery ``HLR = acc(full data, hard) − acc(set, hard)``
  and improvement over random ``IOR = acc(set, own) − acc(random, own)``;
  ``α = w·IOR − (1 − w)·HLR`` and ``LRS = (e^α − e^−1) / (e − e^−1)``, w = 0.5;
* **augmentation-robust score**: ``β = γ·(acc(set, aug) − acc(random, aug)) + (1 − γ)·
  (acc(set, no aug) − acc(random, no aug))`` (own labels), ``ARS = (e^β − e^−1) / (e − e^−1)``,
  γ = 0.5.

Both map a weighted difference in [−1, 1] onto [0, 1]: higher is better, and a set no better
than the random subsets and the full data scores (1 − e^−1) / (e − e^−1) ≈ 0.269. The random
subsets are trained under each condition the sets are (their labels are hard ones: a soft-label
set's IOR therefore includes what its soft labels add).

Each finished cell is written to its own JSON file in the comparison's folder
(:class:`CellStore`): a comparison killed halfway restarts where it stopped, and finished cells
are not recomputed (a cell's key holds everything its result depends on).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from lit_distill.evaluation.evaluator import EvalResult
from lit_distill.fileio import write_atomic

Labels = Literal["own", "hard"]


@dataclass(frozen=True)
class Condition:
    """How a row is trained in a cell: its labels, and evaluation-time augmentation."""

    labels: Labels = "own"
    augment: bool = True

    @property
    def name(self) -> str:
        return f"{self.labels} labels, {'augmented' if self.augment else 'no augmentation'}"


PLAIN = Condition("own", True)
HARD = Condition("hard", True)
NO_AUGMENT = Condition("own", False)


@dataclass(frozen=True)
class Row:
    """A row of the comparison: what is trained in its cells.

    Attributes:
        name: shown in the tables (unique).
        kind: ``set`` (an exported set), ``random`` (random real subsets) or ``full`` (the
            whole training set).
        ipc: images per class (0 for the full data).
        soft: whether the row has soft labels (then its ``hard`` cells differ from ``own``).
        source: what identifies the row's data in a cell's key (file checksum, seed, ...).
    """

    name: str
    kind: Literal["set", "random", "full"]
    ipc: int
    soft: bool
    source: str


@dataclass(frozen=True)
class Cell:
    """One accuracy of the comparison: a row, an architecture, a condition."""

    row: Row
    arch: str
    condition: Condition

    def key(self, settings: dict) -> str:
        """A file name that changes with anything the result depends on."""
        text = json.dumps(
            [asdict(self.row), self.arch, asdict(self.condition), settings], sort_keys=True
        )
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return f"{_safe(self.row.name)}__{_safe(self.arch)}__{digest}.json"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def conditions(row: Row, scores: bool) -> list[Condition]:
    """The conditions a row is evaluated under: the plain one, and what the scores need."""
    if not scores:
        return [PLAIN]
    if row.kind == "full":
        return [HARD]  # the hard-label recovery's reference
    wanted = [PLAIN, NO_AUGMENT]
    if row.soft:  # hard labels differ from its own only where it learned soft ones
        wanted.append(HARD)
    return wanted


class CellStore:
    """Finished cells on disk, one JSON each: what makes a comparison resumable."""

    def __init__(self, folder: str | Path, settings: dict) -> None:
        self.folder = Path(folder)
        self.settings = settings

    def path(self, cell: Cell) -> Path:
        return self.folder / "cells" / cell.key(self.settings)

    def get(self, cell: Cell) -> tuple[EvalResult, float] | None:
        """The cell's result and the seconds it took, if it was finished before."""
        path = self.path(cell)
        if not path.is_file():
            return None
        saved = json.loads(path.read_text(encoding="utf-8"))
        seconds = saved.pop("seconds", 0.0)
        return EvalResult(**{**saved, "accuracies": tuple(saved["accuracies"])}), seconds

    def put(self, cell: Cell, result: EvalResult, seconds: float = 0.0) -> None:
        text = json.dumps({**asdict(result), "seconds": seconds}, indent=1)
        write_atomic(self.path(cell), lambda f: f.write(text.encode("utf-8")))


# ---------------------------------------------------------------------- the scores
def _squash(value: float) -> float:
    """(e^v − e^−1) / (e − e^−1): a difference in [−1, 1] onto [0, 1]."""
    return (math.exp(value) - math.exp(-1)) / (math.e - math.exp(-1))


def label_robust_score(
    full_hard: float, set_hard: float, set_own: float, random_own: float, w: float = 0.5
) -> tuple[float, float, float]:
    """``(LRS, HLR, IOR)`` from four accuracies (fractions)."""
    hlr = full_hard - set_hard
    ior = set_own - random_own
    return _squash(w * ior - (1 - w) * hlr), hlr, ior


def augmentation_robust_score(
    set_aug: float, random_aug: float, set_plain: float, random_plain: float, gamma: float = 0.5
) -> float:
    """ARS from the set's and the random subset's accuracies with and without augmentation."""
    return _squash(gamma * (set_aug - random_aug) + (1 - gamma) * (set_plain - random_plain))


@dataclass
class Scores:
    """One (set, architecture)'s scores and the differences behind them."""

    lrs: float
    hlr: float
    ior: float
    ars: float


def scores_of(
    results: dict[tuple[str, str, Condition], EvalResult],
    row: Row,
    random_row: Row,
    full_row: Row | None,
    arch: str,
    w: float = 0.5,
    gamma: float = 0.5,
) -> Scores | None:
    """The scores of ``row`` on ``arch`` (None when a cell they need is missing)."""

    def mean(r: Row, c: Condition) -> float | None:
        found = results.get((r.name, arch, c))
        return None if found is None else found.mean

    wanted = {
        "set_own": mean(row, PLAIN), "set_hard": mean(row, HARD if row.soft else PLAIN),
        "set_plain": mean(row, NO_AUGMENT), "random_own": mean(random_row, PLAIN),
        "random_plain": mean(random_row, NO_AUGMENT),
        "full": None if full_row is None else mean(full_row, HARD),
    }  # fmt: skip
    if any(v is None for v in wanted.values()):
        return None
    lrs, hlr, ior = label_robust_score(
        wanted["full"], wanted["set_hard"], wanted["set_own"], wanted["random_own"], w
    )
    ars = augmentation_robust_score(
        wanted["set_own"], wanted["random_own"], wanted["set_plain"], wanted["random_plain"], gamma
    )
    return Scores(lrs, hlr, ior, ars)


# ---------------------------------------------------------------------- the tables
def pct(result: EvalResult | None) -> str:
    return "—" if result is None else f"{100 * result.mean:.2f} ± {100 * result.std:.2f}"


def accuracy_table(rows: Sequence[Row], archs: Sequence[str], results: dict) -> list[list[str]]:
    """Header and lines: one line per row, the plain accuracy per architecture."""
    lines = [["set", "IPC", *archs]]
    for row in rows:
        condition = HARD if row.kind == "full" else PLAIN
        cells = [pct(results.get((row.name, arch, condition))) for arch in archs]
        lines.append([row.name, str(row.ipc) if row.ipc else "all", *cells])
    return lines


def markdown(lines: list[list[str]]) -> str:
    header, *body = lines
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(out + ["| " + " | ".join(line) + " |" for line in body])


def csv_text(lines: list[list[str]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    return buffer.getvalue()
