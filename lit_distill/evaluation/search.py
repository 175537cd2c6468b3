"""``lit-distill test --config nas.yaml``: how well distilled sets rank architectures.

Every architecture of a ConvNet search space (:class:`lit_distill.evaluation.nas.SearchSpace`)
is trained on each proxy (the given sets, and a random real subset of their IPC) and on real
training data, and measured on the real test split. The table gives, per proxy, Spearman's rho
with the real data's ranking over its top 5, 10 and 20 architectures, and the time the search
took on it (DPD §4.5). Every (proxy, architecture) is kept on disk when it finishes, so a
stopped search resumes.
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
from lit_distill.evaluation.compare import PLAIN, Cell, CellStore, Row, csv_text, markdown
from lit_distill.evaluation.evaluator import EvalResult, SyntheticEvaluator, random_real_baseline
from lit_distill.evaluation.nas import SearchSpace, name_of, top_k_correlations
from lit_distill.evaluation.protocols import ProtocolName
from lit_distill.export import SyntheticData, load_synthetic
from lit_distill.fileio import checksum
from lit_distill.task import DataTask

log = logging.getLogger(__name__)


class NASModule(DataTask):
    """Rank a ConvNet search space with distilled sets and with real data.

    Args:
        num_classes, image_shape, mean, std, dataset: data facts (linked from the datamodule).
        sets: exported synthetic sets of this dataset (the proxies).
        names: their names in the table (default: their methods).
        random_baseline: also rank with a random real subset of each set's IPC.
        widths, depths, norms, activations, poolings: the options of the search space.
        space_size: architectures drawn from it (``None``: every combination).
        protocol: how a network is trained on a proxy (``short``: CPU-sized).
        epochs: override of the protocol's epochs on the proxies.
        real_per_class: real training images per class for the ground truth (``None``: all).
        real_epochs: epochs of training on them.
        topk: the sizes of the top lists correlated.
        output_dir: where the tables and the finished cells go (default: the trainer's
            ``default_root_dir``).
        seed: seed of the space's draw, the networks and the subsets.
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
        random_baseline: bool = True,
        widths: Sequence[int] = (16, 32),
        depths: Sequence[int] = (1, 2, 3),
        norms: Sequence[str] = ("instance", "batch", "none"),
        activations: Sequence[str] = ("relu", "leakyrelu", "sigmoid"),
        poolings: Sequence[str] = ("avg", "max"),
        space_size: int | None = 30,
        protocol: ProtocolName = "short",
        epochs: int | None = None,
        real_per_class: int | None = 500,
        real_epochs: int = 5,
        topk: Sequence[int] = (5, 10, 20),
        output_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(num_classes, image_shape, mean, std, dataset)
        self.save_hyperparameters()
        if not sets:
            raise ValueError("sets is empty: give --model.sets [path, ...] (exported sets)")
        if names is not None and len(names) != len(sets):
            raise ValueError(f"names has {len(names)} entries for {len(sets)} sets")
        self.space = SearchSpace(
            tuple(widths), tuple(depths), tuple(norms), tuple(activations), tuple(poolings),
            space_size, seed,
        )  # fmt: skip
        self.archs = self.space.architectures()
        for options in self.archs:  # every variant must build on this data (a clear error)
            SyntheticEvaluator("convnet", options, protocol, 1, seed, epochs=epochs)
            _check_builds(options, num_classes, image_shape)
        self.sets = [self._load(path) for path in sets]
        self.set_names = list(names) if names is not None else [d.method for d in self.sets]
        if len(set(self.set_names)) != len(self.set_names):
            raise ValueError(f"two sets have one name {self.set_names}: give --model.names")
        self.accuracy: dict[str, list[float]] = {}
        self.seconds: dict[str, float] = {}
        self.images: dict[str, int] = {}

    def _load(self, path: str) -> SyntheticData:
        try:
            data = load_synthetic(path)
        except SyntheticSetNotFoundError as err:
            raise SyntheticSetNotFoundError(f"--model.sets: {err}") from err
        data.check_dataset(self.dataset_name, self.num_classes, self.image_shape)
        return data

    def proxies(self) -> list[tuple[Row, Any]]:
        """The sets, a random subset per IPC (one per architecture run), and the real data."""
        hp = self.hparams
        real = self.datamodule.train_set
        rows = [
            (Row(name, "set", d.ipc, False, str(checksum(d.images, d.label_logits))), d)
            for name, d in zip(self.set_names, self.sets, strict=True)
        ]
        if hp.random_baseline:
            for ipc in sorted({d.ipc for d in self.sets}):
                subset = random_real_baseline(real, ipc, self.zca, hp.seed, 1)[0]
                rows.append(
                    (Row(f"random real (IPC {ipc})", "random", ipc, False, "seeded"), subset)
                )
        per_class = hp.real_per_class or min(real.counts())
        data = random_real_baseline(real, per_class, self.zca, hp.seed + 1, 1)[0]
        rows.append((Row("real data", "full", per_class, False, f"{per_class}/class"), data))
        return rows

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.accuracy:
            return
        hp = self.hparams
        folder = Path(hp.output_dir or self.trainer.default_root_dir)
        settings = {k: hp[k] for k in ("protocol", "epochs", "seed", "real_epochs")}
        store = CellStore(folder, settings)
        test = self.datamodule.test_set
        facts = (test, self.preprocess, self.num_classes, self.image_shape,
                 self.trainer.strategy.root_device)  # fmt: skip
        self.rows = self.proxies()
        with REPORT.phase("evaluation"):
            for row, data in self.rows:
                epochs = hp.real_epochs if row.kind == "full" else hp.epochs
                self.images[row.name] = len(data.images)
                for options in self.archs:
                    cell = Cell(row, name_of(options), PLAIN)
                    result, seconds = self._cell(cell, options, data, epochs, store, facts)
                    self.accuracy.setdefault(row.name, []).append(result.mean)
                    self.seconds[row.name] = self.seconds.get(row.name, 0.0) + seconds

    def _cell(self, cell, options, data, epochs, store, facts) -> tuple[EvalResult, float]:
        found = store.get(cell)
        if found is not None:
            return found
        evaluator = SyntheticEvaluator(
            "convnet", options, self.hparams.protocol, 1, self.hparams.seed, epochs=epochs
        )
        clock = time.perf_counter()
        result = evaluator.evaluate(data, *facts)
        seconds = time.perf_counter() - clock
        if self.trainer.is_global_zero:
            store.put(cell, result, seconds)
        log.info("%s on %s: %.2f %%", cell.arch, cell.row.name, 100 * result.mean)
        return result, seconds

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Nothing: every network was trained and measured at set-up."""

    def on_test_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        hp = self.hparams
        folder = Path(hp.output_dir or self.trainer.default_root_dir)
        real = self.accuracy["real data"]
        header = ["proxy", *(f"top-{k}" for k in hp.topk), "search time", "images"]
        lines = [header]
        for row, _ in self.rows:
            rho = top_k_correlations(real, self.accuracy[row.name], hp.topk)
            spent, images = duration(self.seconds[row.name]), str(self.images[row.name])
            lines.append([row.name, *(f"{rho[k]:.2f}" for k in hp.topk), spent, images])
        text = (
            f"Spearman's rho with the real data's ranking over its best k of {len(self.archs)} "
            f"architectures ({hp.protocol} protocol on the proxies; real data: "
            f"{hp.real_per_class or 'all'} images per class, {hp.real_epochs} epochs):\n\n"
            + markdown(lines)
        )
        every = [["architecture", *(row.name for row, _ in self.rows)]]
        for i, options in enumerate(self.archs):
            every.append(
                [name_of(options), *(f"{self.accuracy[r.name][i]:.4f}" for r, _ in self.rows)]
            )
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "nas.md").write_text(text + "\n", encoding="utf-8")
        (folder / "nas.csv").write_text(csv_text(every), encoding="utf-8")
        for name in ("nas.md", "nas.csv"):
            REPORT.file("search", folder / name)
        REPORT.table(text, "Architecture search:")

    def training_step(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a search is run with `lit-distill test`, not fit")

    def configure_optimizers(self) -> None:
        return None


def _check_builds(options: dict, num_classes: int, image_shape: Sequence[int]) -> None:
    """A variant that cannot be built on this data (e.g. too deep for small images) fails now."""
    from lit_distill.models import build_model

    with torch.random.fork_rng(devices=[]):
        build_model("convnet", num_classes, image_shape, **options)
