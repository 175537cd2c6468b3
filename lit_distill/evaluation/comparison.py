"""``lit-distill test --config compare.yaml``: several distilled sets in one fair comparison.

Every set (any method, one dataset) and its baselines (the random real subset of each IPC, the
full training data) are trained on every architecture under the conditions DD-Ranking's scores
need (:mod:`lit_distill.evaluation.compare`), with one protocol, seeds and number of runs. The
result is one table, written as Markdown and CSV in the output folder, logged to TensorBoard and
drawn as a PNG heat map (sets x architectures). Cells are saved as they finish: a comparison
that is stopped and started again skips the finished ones. Under DDP each cell's runs are shared
between the ranks (as every evaluation is), and rank 0 writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_distill.console import REPORT, duration
from lit_distill.errors import SyntheticSetNotFoundError
from lit_distill.evaluation.compare import (
    HARD,
    NO_AUGMENT,
    PLAIN,
    Cell,
    CellStore,
    Condition,
    Row,
    accuracy_table,
    conditions,
    csv_text,
    markdown,
    pct,
    scores_of,
)
from lit_distill.evaluation.evaluator import EvalResult, SyntheticEvaluator, random_real_baseline
from lit_distill.evaluation.heatmap import heatmap_png
from lit_distill.evaluation.protocols import ProtocolName
from lit_distill.export import SyntheticData, load_synthetic
from lit_distill.fileio import checksum
from lit_distill.models import available_models, check_model
from lit_distill.task import DataTask

log = logging.getLogger(__name__)


class ComparisonModule(DataTask):
    """Compare exported sets on several architectures, with DD-Ranking's scores.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        sets: exported synthetic sets (``synthetic_final.pt``) of this dataset.
        names: their names in the tables (default: ``<method>`` or ``<method> (<folder>)``).
        archs: networks every row is trained on (``lit_distill.models.available_models()``).
        arch_kwargs: options per architecture, e.g. ``{convnet3: {width: 32}}``.
        protocol: the evaluation protocol of every cell (``short``: CPU-sized).
        epochs: override of the protocol's epochs.
        num_runs: networks per set and cell.
        baseline_runs: networks (each on its own subset) per random-real cell (default
            ``num_runs``).
        scores: also evaluate the conditions of the label- and augmentation-robust scores.
        score_w, score_gamma: DD-Ranking's weights (0.5 each on its leaderboard).
        full_data: a row trained on the whole training set (the "whole dataset" column).
        full_epochs: its epochs (the protocol's other settings; CPU-sized by default).
        full_runs: its networks.
        output_dir: where the tables, the heat map and the finished cells go (default: the
            trainer's ``default_root_dir``).
        seed: seed of every run and subset.
    """

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        dataset: str,
        sets: Sequence[str] = (),
        names: Sequence[str] | None = None,
        archs: Sequence[str] = ("convnet3",),
        arch_kwargs: dict[str, dict[str, Any]] | None = None,
        protocol: ProtocolName = "short",
        epochs: int | None = None,
        num_runs: int = 5,
        baseline_runs: int | None = None,
        scores: bool = True,
        score_w: float = 0.5,
        score_gamma: float = 0.5,
        full_data: bool = True,
        full_epochs: int = 10,
        full_runs: int = 1,
        output_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(num_classes, image_shape, mean, std, dataset)
        self.save_hyperparameters()
        if not sets:
            raise ValueError("sets is empty: give --model.sets [path, ...] (exported sets)")
        if names is not None and len(names) != len(sets):
            raise ValueError(f"names has {len(names)} entries for {len(sets)} sets")
        if not archs:
            raise ValueError("archs is empty: name at least one network, e.g. [convnet3]")
        self.arch_kwargs = {a: dict((arch_kwargs or {}).get(a) or {}) for a in archs}
        for arch in archs:
            check_model(arch, self.arch_kwargs[arch])
        # Options of networks left out of archs are kept for later (a config lists several);
        # a name no network has is a typo.
        unknown = sorted(set(arch_kwargs or {}) - set(available_models()))
        if unknown:
            raise ValueError(
                f"arch_kwargs names {unknown}, which are not networks: use names of "
                f"{available_models()}"
            )
        if num_runs < 1 or full_runs < 1 or (baseline_runs is not None and baseline_runs < 1):
            raise ValueError("num_runs, baseline_runs and full_runs must be at least 1")
        self.evaluator(archs[0], PLAIN, 1)  # an unknown protocol or override fails here
        self.sets = [self._load(path) for path in sets]
        self.set_names = list(names) if names is not None else _names(self.sets, sets)
        if len(set(self.set_names)) != len(self.set_names):
            raise ValueError(f"two sets have one name {self.set_names}: give --model.names")
        self.results: dict[tuple[str, str, Condition], EvalResult] = {}
        self.seconds: dict[str, float] = {}

    def _load(self, path: str) -> SyntheticData:
        try:
            data = load_synthetic(path)
        except SyntheticSetNotFoundError as err:
            raise SyntheticSetNotFoundError(f"--model.sets: {err}") from err
        data.check_dataset(self.dataset_name, self.num_classes, self.image_shape)
        return data

    def evaluator(self, arch: str, condition: Condition, runs: int, **extra) -> SyntheticEvaluator:
        """The evaluator of one cell: the protocol, with the condition's changes."""
        hp = self.hparams
        changes: dict[str, Any] = {"epochs": hp.epochs, **extra}
        if condition.labels == "hard":
            changes["soft_labels"] = "hard"
        if not condition.augment:
            changes.update(augment="none", cutmix_prob=0.0)
        kwargs = self.arch_kwargs[arch]
        return SyntheticEvaluator(arch, kwargs, hp.protocol, runs, hp.seed, **changes)

    # ------------------------------------------------------------------ the rows
    def rows(self) -> list[tuple[Row, Any]]:
        """Every row and its data: the sets, a random subset per IPC, the full data."""
        hp = self.hparams
        rows = [
            (Row(name, "set", data.ipc, data.label_logits is not None, str(_crc(data))), data)
            for name, data in zip(self.set_names, self.sets, strict=True)
        ]
        real = self.datamodule.train_set
        runs = hp.baseline_runs or hp.num_runs
        for ipc in sorted({data.ipc for data in self.sets}):
            subsets = random_real_baseline(real, ipc, self.zca, hp.seed, runs)
            rows.append((Row(f"random real (IPC {ipc})", "random", ipc, False, "seeded"), subsets))
        if hp.full_data:
            rows.append((Row("full data", "full", 0, False, f"{len(real)} images"), None))
        return rows

    def _full_data(self) -> SyntheticData:
        real = self.datamodule.train_set
        return SyntheticData(
            images=_all_pixels(real), labels=real.labels.cpu(), label_logits=None, lr=None,
            factor=1, ipc=0, num_classes=self.num_classes, class_names=list(real.classes),
            dataset=self.dataset_name, image_shape=list(self.image_shape), zca=self.zca,
            method="full_data",
        )  # fmt: skip

    # ------------------------------------------------------------------ the cells
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.results:
            return
        hp = self.hparams
        folder = Path(hp.output_dir or self.trainer.default_root_dir)
        settings = {k: hp[k] for k in ("protocol", "epochs", "num_runs", "seed", "full_epochs")}
        settings.update(baseline_runs=hp.baseline_runs, full_runs=hp.full_runs,
                        arch_kwargs=self.arch_kwargs)  # fmt: skip
        store = CellStore(folder, settings)
        device = self.trainer.strategy.root_device
        test = self.datamodule.test_set
        facts = (test, self.preprocess, self.num_classes, self.image_shape, device)
        self.row_list = [row for row, _ in self.rows()]
        with REPORT.phase("evaluation"):
            for row, data in self.rows():
                for arch in hp.archs:
                    for condition in conditions(row, hp.scores):
                        cell = Cell(row, arch, condition)
                        self.results[(row.name, arch, condition)] = self._cell(
                            cell, data, store, facts
                        )

    def _cell(self, cell: Cell, data, store: CellStore, facts) -> EvalResult:
        found = store.get(cell)
        if found is not None:
            log.info("%s, %s, %s: done before, reused", cell.row.name, cell.arch,
                     cell.condition.name)  # fmt: skip
            result, seconds = found
            self.seconds[cell.row.kind] = self.seconds.get(cell.row.kind, 0.0) + seconds
            return result
        hp = self.hparams
        runs = {"set": hp.num_runs, "random": hp.baseline_runs or hp.num_runs}
        runs["full"] = hp.full_runs
        extra = {"epochs": hp.full_epochs} if cell.row.kind == "full" else {}
        evaluator = self.evaluator(cell.arch, cell.condition, runs[cell.row.kind], **extra)
        if cell.row.kind == "full":
            data = self._full_data()
        clock = time.perf_counter()
        result = evaluator.evaluate(data, *facts)
        seconds = time.perf_counter() - clock
        self.seconds[cell.row.kind] = self.seconds.get(cell.row.kind, 0.0) + seconds
        if self.trainer.is_global_zero:
            store.put(cell, result, seconds)
        log.info("%s, %s, %s: %s %%", cell.row.name, cell.arch, cell.condition.name, pct(result))
        return result

    # ------------------------------------------------------------------ the tables
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Nothing: every cell was trained and measured at set-up."""

    def on_test_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        hp = self.hparams
        folder = Path(hp.output_dir or self.trainer.default_root_dir)
        lines = accuracy_table(self.row_list, hp.archs, self.results)
        text = "Accuracy (%) on the real test split, mean ± std over runs:\n\n" + markdown(lines)
        if hp.scores:
            text += "\n\n" + self.scores_text()
        spent = ", ".join(f"{kind} {duration(s)}" for kind, s in self.seconds.items())
        text += f"\n\nTraining time of the cells, by row: {spent}."
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "comparison.md").write_text(text + "\n", encoding="utf-8")
        (folder / "comparison.csv").write_text(csv_text(self.long_table()), encoding="utf-8")
        heatmap_png(folder / "comparison.png", lines, "plain accuracy (%)")
        for path in ("comparison.md", "comparison.csv", "comparison.png"):
            REPORT.file("comparison", folder / path)
        self.log_results()
        REPORT.table(text, f"Comparison ({hp.protocol} protocol, {hp.num_runs} runs per set):")

    def scores_text(self) -> str:
        """DD-Ranking's scores per set and architecture, with the differences behind them."""
        hp = self.hparams
        full = next((r for r in self.row_list if r.kind == "full"), None)
        lines = [["set", "arch", "LRS", "HLR (pts)", "IOR (pts)", "ARS"]]
        for row in (r for r in self.row_list if r.kind == "set"):
            random = next(r for r in self.row_list if r.kind == "random" and r.ipc == row.ipc)
            for arch in hp.archs:
                s = scores_of(self.results, row, random, full, arch, hp.score_w, hp.score_gamma)
                if s is None:
                    continue
                lines.append([row.name, arch, f"{s.lrs:.3f}", f"{100 * s.hlr:+.2f}",
                              f"{100 * s.ior:+.2f}", f"{s.ars:.3f}"])  # fmt: skip
        return (
            f"Label-robust (LRS) and augmentation-robust (ARS) scores (DD-Ranking; w = "
            f"{hp.score_w}, gamma = {hp.score_gamma}; in [0, 1], higher is better; 0.27 = no "
            "better than the random real subsets and the full data; HLR: full data minus the set "
            "with "
            "hard labels; IOR: the set minus the random subsets):\n\n" + markdown(lines)
        )

    def long_table(self) -> list[list[str]]:
        """Every cell: row, IPC, arch, condition, mean, std, runs (the CSV)."""
        lines = [["set", "ipc", "arch", "labels", "augment", "acc_mean", "acc_std", "runs"]]
        for (name, arch, condition), result in self.results.items():
            row = next(r for r in self.row_list if r.name == name)
            lines.append([name, str(row.ipc), arch, condition.labels, str(condition.augment),
                          f"{result.mean:.6f}", f"{result.std:.6f}",
                          str(len(result.accuracies))])  # fmt: skip
        return lines

    def log_results(self) -> None:
        metrics = {
            f"compare/{name}/{arch}/{condition.labels}_{'aug' if condition.augment else 'noaug'}":
            result.mean
            for (name, arch, condition), result in self.results.items()
        }  # fmt: skip
        for logger in self.trainer.loggers:
            logger.log_metrics(metrics, step=0)

    def training_step(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a comparison is run with `lit-distill test`, not fit")

    def configure_optimizers(self) -> None:
        return None


def _names(sets: Sequence[SyntheticData], paths: Sequence[str]) -> list[str]:
    """``method`` per set, with its folder when two sets share a method."""
    methods = [data.method for data in sets]
    return [
        m if methods.count(m) == 1 else f"{m} ({Path(p).parent.name}/{Path(p).stem})"
        for m, p in zip(methods, paths, strict=True)
    ]


def _crc(data: SyntheticData) -> int:
    return checksum(data.images, data.label_logits)


def _all_pixels(real) -> Tensor:
    """Every training image as float pixels (N, C, H, W) on the CPU."""
    return real.pixels(torch.arange(len(real))).cpu()


__all__ = ["ComparisonModule", "HARD", "NO_AUGMENT", "PLAIN"]
