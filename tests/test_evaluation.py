"""Evaluation of synthetic sets: protocols, the training loop, the evaluator, module, callback."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lit_distill.data import DigitsDataModule, Normalize
from lit_distill.errors import SyntheticSetError
from lit_distill.evaluation import (
    PROTOCOLS,
    EvalProtocol,
    EvalResult,
    EvaluationCallback,
    EvaluationModule,
    SyntheticEvaluator,
    accuracy,
    format_results,
    resolve_protocol,
    train_on_synthetic,
)
from lit_distill.evaluation.batched import (
    _unfold_pays,
    _unfolded_conv,
    grouped_forward,
    train_together,
)
from lit_distill.evaluation.evaluator import BASELINE_STREAM
from lit_distill.evaluation.train import measured_channels_last
from lit_distill.export import SyntheticData, save_synthetic
from lit_distill.models import build_model
from lit_distill.seeding import generator
from lit_distill.task import DataTask

# A ConvNet of width 8 and depth 2: with depth 3, 8x8 digits reach the last instance norm
# at 2x2 pixels, which leaves it almost nothing to learn from in a few epochs.
ARCH, TINY = "convnet", {"width": 8, "depth": 2}
# A few epochs of the "short" recipe without augmentation: seconds on a CPU.
FAST = {"epochs": 20, "lr": 0.05, "batch_size": 16, "augment": "none"}


def tiny_protocol(**changes: Any) -> EvalProtocol:
    return resolve_protocol("short", **{**FAST, **changes})


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule()
    dm.setup()
    return dm


def random_real(dm: DigitsDataModule, ipc: int = 5, seed: int = 0) -> SyntheticData:
    return SyntheticData.random_real(
        dm.train_set, ipc, generator(seed), dataset=dm.name, zca=False, class_names=dm.class_names
    )


def separable(n_per_class: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes, bright left half or bright right half plus noise: trivially separable.

    (A brightness difference would not do: instance norm removes each map's mean.)
    """
    noise = 0.2 * torch.rand(2 * n_per_class, 1, 8, 8, generator=generator(1))
    images = noise.clone()
    images[:n_per_class, ..., :4] += 0.7
    images[n_per_class:, ..., 4:] += 0.7
    return images, torch.arange(2).repeat_interleave(n_per_class)


def fresh_net(num_classes: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ARCH, num_classes, (1, 8, 8), **TINY)


IDENTITY = Normalize((0.5,), (0.5,))
LR = 0.2  # width-8 networks on the separable set learn quickly at this rate


def mean_loss(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(net(IDENTITY(images)), labels))


# ---------------------------------------------------------------------- protocols
def test_presets_follow_the_published_recipes() -> None:
    mtt, tgdd, dm = PROTOCOLS["mtt"], PROTOCOLS["tgdd"], PROTOCOLS["dm"]
    assert (mtt.epochs, mtt.batch_size, mtt.lr, mtt.milestone_epochs()) == (1000, 256, None, [500])
    assert mtt.learning_rate(0.003) == 0.003 and mtt.learning_rate(None) == 0.01
    assert (tgdd.epochs, tgdd.batch_size, tgdd.gamma, tgdd.cutmix_prob) == (1500, 64, 0.2, 0.5)
    assert tgdd.milestone_epochs() == [1000, 1250]
    assert tgdd.checkpoint_epochs() == [250, 500, 750, 1000, 1250, 1500]
    assert "cutout" not in tgdd.augment and tgdd.select == "best"
    assert dm.learning_rate(0.003) == 0.01 and dm.checkpoint_epochs() == [1000]
    assert PROTOCOLS["short"].epochs < dm.epochs
    assert resolve_protocol("dm", epochs=1).milestone_epochs() == [1]  # never before training


def test_overrides_rename_the_preset() -> None:
    assert resolve_protocol("tgdd") == PROTOCOLS["tgdd"]
    assert resolve_protocol("tgdd", epochs=None).name == "tgdd"
    changed = resolve_protocol("tgdd", epochs=30, milestones=[0.5])
    assert (changed.epochs, changed.milestones, changed.name) == (30, (0.5,), "tgdd*")
    assert resolve_protocol(changed, lr=0.1).name == "tgdd*"
    assert resolve_protocol("dm", lr=0.01).name == "dm"  # same value: still the preset


def test_bad_protocols_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown evaluation protocol 'mttt'"):
        resolve_protocol("mttt")
    with pytest.raises(ValueError, match="unknown protocol field"):
        resolve_protocol("mtt", epoch=10)
    with pytest.raises(ValueError, match="eval_every"):
        resolve_protocol("mtt", select="best")
    with pytest.raises(ValueError, match="unknown DSA op"):
        resolve_protocol("mtt", augment="color_blur")


# ---------------------------------------------------------------------- training loop
def test_training_reduces_the_loss_and_is_reproducible() -> None:
    images, labels = separable()
    protocol = tiny_protocol(epochs=40)
    before = mean_loss(fresh_net(), images, labels)
    nets = [
        train_on_synthetic(fresh_net(), images, labels, protocol, IDENTITY, LR, generator(3))
        for _ in range(2)
    ]
    assert mean_loss(nets[0], images, labels) < 0.5 * before
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(a, b)
    other = train_on_synthetic(fresh_net(), images, labels, protocol, IDENTITY, LR, generator(4))
    assert not torch.equal(other.classifier.weight, nets[0].classifier.weight)


@pytest.mark.parametrize("soft_labels", ["soft", "hard"])
def test_soft_targets(soft_labels: str) -> None:
    images, labels = separable()
    logits = 5.0 * F.one_hot(labels, 2).float()
    protocol = tiny_protocol(epochs=40, soft_labels=soft_labels)
    net = train_on_synthetic(fresh_net(), images, logits, protocol, IDENTITY, LR, generator(3))
    assert mean_loss(net, images, labels) < 0.3
    # "hard" trains on the arg-max: exactly what the integer labels give.
    hard = train_on_synthetic(fresh_net(), images, labels, protocol, IDENTITY, LR, generator(3))
    same = torch.equal(net.classifier.weight, hard.classifier.weight)
    assert same == (soft_labels == "hard")


def test_cutmix_and_augmentation_paths() -> None:
    images, labels = separable()
    plain = tiny_protocol(epochs=3)
    mixed = replace(plain, cutmix_prob=1.0, augment="color_crop_flip", augment_mode="idc")
    nets = [
        train_on_synthetic(fresh_net(), images, labels, p, IDENTITY, LR, generator(3))
        for p in (plain, mixed)
    ]
    assert not torch.equal(nets[0].classifier.weight, nets[1].classifier.weight)
    assert all(torch.isfinite(p).all() for p in nets[1].parameters())


@pytest.mark.parametrize(
    ("select", "expected"), [("best", [3, 6, 9, 10]), ("last", [10])], ids=["best", "last"]
)
def test_checkpoints(select: str, expected: list[int]) -> None:
    images, labels = separable(4)
    protocol = tiny_protocol(epochs=10, select=select, eval_every=3)
    seen: list[tuple[int, bool]] = []
    train_on_synthetic(
        fresh_net(),
        images,
        labels,
        protocol,
        IDENTITY,
        0.05,
        generator(0),
        on_checkpoint=lambda epoch, net: seen.append((epoch, net.training)),
    )
    assert seen == [(epoch, True) for epoch in expected]


def test_accuracy_restores_the_mode(digits: DigitsDataModule) -> None:
    net = fresh_net(10)
    preprocess = digits.preprocess()
    acc = accuracy(net, digits.test_set, preprocess, batch_size=64)
    assert net.training
    net.eval()
    with torch.no_grad():
        all_rows = torch.arange(len(digits.test_set))
        logits = net(preprocess(digits.test_set.pixels(all_rows)))
    expected = (logits.argmax(1) == digits.test_set.labels).float().mean()
    assert acc == pytest.approx(float(expected)) and not net.training


@pytest.mark.parametrize("channels_last", [True, False, None])
def test_accuracy_in_either_layout_leaves_the_network_as_it_was(digits, channels_last) -> None:
    torch.manual_seed(0)
    net = fresh_net(10)
    rows = torch.arange(400)
    train_on_synthetic(
        net, digits.train_set.pixels(rows), digits.train_set.labels[rows],
        tiny_protocol(epochs=5), IDENTITY, 0.05, generator(0),
    )  # fmt: skip
    before = {k: v.clone() for k, v in net.state_dict().items()}
    acc = accuracy(net, digits.test_set, IDENTITY, channels_last=channels_last)
    assert acc == accuracy(net, digits.test_set, IDENTITY, channels_last=False)
    assert acc > 0.3  # a trained network, so that a broken layout would show
    for name, value in net.state_dict().items():  # values and layout untouched
        assert torch.equal(value, before[name]) and value.is_contiguous(), name
    assert net.training


# ---------------------------------------------------------------------- evaluator
def evaluator(**kwargs: Any) -> SyntheticEvaluator:
    settings = {"arch_kwargs": TINY, "num_runs": 3, **FAST, **kwargs}
    return SyntheticEvaluator(ARCH, **settings)


def evaluate(ev: SyntheticEvaluator, dm: DigitsDataModule, data: SyntheticData) -> EvalResult:
    return ev.evaluate(data, dm.test_set, dm.preprocess(), dm.num_classes, dm.image_shape)


def test_evaluator_mean_std_and_seeds(digits: DigitsDataModule) -> None:
    data = random_real(digits)
    state = torch.get_rng_state()
    result = evaluate(evaluator(), digits, data)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert len(result.accuracies) == 3 and len(set(result.accuracies)) > 1
    assert result.mean == pytest.approx(np.mean(result.accuracies))
    assert result.std == pytest.approx(np.std(result.accuracies))
    assert result.mean > 0.3  # well above chance (0.1) after a few epochs
    assert evaluate(evaluator(), digits, data) == result
    assert evaluate(evaluator(seed=1), digits, data).accuracies != result.accuracies
    assert (result.method, result.arch, result.protocol, result.ipc) == (
        "random_real",
        ARCH,
        "short*",
        5,
    )
    table = format_results([result])
    assert "| random_real | convnet | 5 | short* |" in table
    assert f"{100 * result.mean:.2f} ± {100 * result.std:.2f} | 3 |" in table


def test_best_selection_keeps_the_best_checkpoint(digits: DigitsDataModule) -> None:
    data = random_real(digits)
    args = (data, digits.test_set, digits.preprocess(), 10, (1, 8, 8))
    last = evaluator(num_runs=2, epochs=12).train_runs(*args)
    best = evaluator(num_runs=2, epochs=12, select="best", eval_every=3).train_runs(*args)
    for run_last, run_best in zip(last, best, strict=True):
        # Same seed, same draws: the last checkpoint is one of the candidates of "best".
        assert run_best.accuracy >= run_last.accuracy
        assert accuracy(run_best.net, digits.test_set, digits.preprocess()) == run_best.accuracy


def test_learned_lr_is_used_by_the_mtt_protocol(digits: DigitsDataModule) -> None:
    data = random_real(digits)
    ev = SyntheticEvaluator(ARCH, TINY, "mtt", num_runs=1, epochs=20, augment="none")
    assert ev.protocol.lr is None  # the set's learned lr
    slow = evaluate(ev, digits, replace(data, lr=1e-6))
    fast = evaluate(ev, digits, replace(data, lr=0.05))
    assert slow.mean < fast.mean


# ---------------------------------------------------------------------- module
def module(dm: DigitsDataModule, **kwargs: Any) -> EvaluationModule:
    facts = {"num_classes": dm.num_classes, "image_shape": dm.image_shape, "mean": dm.mean}
    facts.update(std=dm.std, dataset=dm.name)
    settings = {"archs": [ARCH], "arch_kwargs": TINY, "num_runs": 2}
    return EvaluationModule(**facts, **{**settings, **FAST, **kwargs})


def trainer(**kwargs: Any) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, **kwargs)


@pytest.mark.parametrize("channels_last", [False, True])
def test_module_baseline_only(digits: DigitsDataModule, channels_last, monkeypatch) -> None:
    if channels_last:  # as on large images: measured in the channels-last layout
        monkeypatch.setattr(
            "lit_distill.evaluation.module.measured_channels_last", lambda *args: True
        )
    model = module(digits, ipc=5)
    (metrics,) = trainer().test(model, datamodule=digits)
    (result,) = model.results
    assert result.method == "random_real" and len(result.accuracies) == 2
    assert metrics["test/random_real/convnet/acc_mean"] == pytest.approx(result.mean)
    assert metrics["test/random_real/convnet/acc_std"] == pytest.approx(result.std)
    # The test loop measures the networks exactly as the evaluator does, one subset per run.
    subsets = [
        SyntheticData.random_real(
            digits.train_set,
            5,
            generator(0, BASELINE_STREAM, run),
            dataset="digits",
            zca=False,
            class_names=digits.class_names,
        )
        for run in range(2)
    ]
    assert not torch.equal(subsets[0].images, subsets[1].images)
    ev = SyntheticEvaluator(ARCH, TINY, "short", num_runs=2, **FAST)
    assert result.accuracies == pytest.approx(evaluate(ev, digits, subsets).accuracies)
    # Digits-sized networks are measured in their own layout (channels-last pays only on
    # large images); either way the accuracies are the evaluator's.
    weight = model.nets[0][0].features[1].conv.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert model.layouts == [[channels_last] * 2]


def test_channels_last_measuring_only_for_convolutions_on_large_images_on_a_cpu():
    conv = build_model(ARCH, 10, (3, 64, 64), **TINY)
    assert measured_channels_last(conv, torch.device("cpu"), (3, 64, 64))
    assert not measured_channels_last(conv, torch.device("cpu"), (3, 32, 32))
    assert not measured_channels_last(conv, torch.device("cuda"), (3, 64, 64))
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 10))
    assert not measured_channels_last(mlp, torch.device("cpu"), (3, 64, 64))


def test_module_with_an_export(digits: DigitsDataModule, tmp_path: Path) -> None:
    data = replace(random_real(digits, ipc=3, seed=5), method="tgdd", lr=0.02)
    path = save_synthetic(tmp_path / "synthetic_final.pt", data)
    archs = [ARCH, "convnet_bn"]  # cross-architecture: BatchNorm in train and eval mode
    model = module(digits, synthetic=str(path), archs=archs, select="best", eval_every=10)
    (metrics,) = trainer().validate(model, datamodule=digits)
    methods = [(r.method, r.arch, r.ipc) for r in model.results]
    assert methods == [
        ("tgdd", ARCH, 3),
        ("tgdd", "convnet_bn", 3),
        ("random_real", ARCH, 3),
        ("random_real", "convnet_bn", 3),
    ]
    assert {"val/tgdd/convnet_bn/acc_mean", "val/random_real/convnet/acc_std"} <= set(metrics)
    (again,) = trainer().test(model, datamodule=digits)  # networks reused, metrics reset
    assert again["test/tgdd/convnet/acc_mean"] == pytest.approx(
        metrics["val/tgdd/convnet/acc_mean"]
    )


def test_module_refuses_other_data(digits: DigitsDataModule, tmp_path: Path) -> None:
    other = replace(random_real(digits), dataset="mnist")
    with pytest.raises(SyntheticSetError, match="mnist"):
        module(digits, synthetic=str(save_synthetic(tmp_path / "a.pt", other)))
    zca_set = save_synthetic(tmp_path / "b.pt", replace(random_real(digits), zca=True))
    with pytest.raises(SyntheticSetError, match="zca"):
        trainer().test(module(digits, synthetic=str(zca_set)), datamodule=digits)
    with pytest.raises(ValueError, match="contradicts"):
        module(digits, synthetic=str(zca_set), ipc=7)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        module(digits)


def test_module_has_nothing_to_fit(digits: DigitsDataModule) -> None:
    with pytest.raises(MisconfigurationException, match="lit-distill test"):
        trainer(max_steps=1).fit(module(digits, ipc=2), datamodule=digits)


# ---------------------------------------------------------------------- callback
class FakeDistillation(DataTask):
    """A stand-in distillation module: random real images nudged by a dummy loss."""

    def __init__(self, dm: DigitsDataModule, export_dir: Path) -> None:
        super().__init__(dm.num_classes, dm.image_shape, dm.mean, dm.std, dm.name)
        self.images = torch.nn.Parameter(random_real(dm).images.clone())
        self.export_dir = export_dir
        self.exports: list[str] = []
        self.modes: list[tuple[bool, bool]] = []
        self.iteration = 0  # counted in the step, as distillation modules do
        self.read_at: list[tuple[int, int]] = []

    def train_dataloader(self) -> range:
        return range(100)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.modes.append((self.training, torch.is_grad_enabled()))
        self.iteration += 1
        return (self.images - 0.5).square().mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([self.images], lr=0.1)

    def synthetic_data(self) -> SyntheticData:
        self.read_at.append((self.iteration, self.global_step))
        base = random_real(self.datamodule)
        return replace(base, images=self.images.detach().cpu().clone(), method="fake")

    def export(self, tag: str) -> Path:
        self.exports.append(tag)
        return save_synthetic(self.export_dir / f"synthetic_{tag}.pt", self.synthetic_data())


def callback(**kwargs: Any) -> EvaluationCallback:
    settings = {"arch": ARCH, "arch_kwargs": TINY, "num_runs": 2, "epochs": 5, "lr": 0.05, **kwargs}
    return EvaluationCallback(**settings)


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader`")
def test_callback_during_fit(digits: DigitsDataModule, tmp_path: Path) -> None:
    model = FakeDistillation(digits, tmp_path)
    cb = callback(every_n_steps=2)
    fit = L.Trainer(
        accelerator="cpu",
        max_steps=5,
        logger=CSVLogger(tmp_path),
        callbacks=[cb],
        enable_progress_bar=False,
        enable_checkpointing=False,
        limit_val_batches=0,
    )
    fit.fit(model, datamodule=digits)
    with open(Path(fit.logger.log_dir) / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("eval/acc_mean")]
    assert [int(row["step"]) for row in rows] == [2, 4, 5]  # every 2 steps, and at the end
    assert float(rows[-1]["eval/acc_best"]) == pytest.approx(cb.best_acc)
    assert cb.last_step == 5 and cb.best_step in (2, 4, 5)
    assert model.exports and set(model.exports) == {"best"}
    assert (tmp_path / "synthetic_best.pt").is_file()
    assert all(mode == (True, True) for mode in model.modes)  # evaluation left them alone
    # The set is read once the module has finished its step.
    assert all(iteration == step for iteration, step in model.read_at)
    assert [r.method for r in cb.results] == ["fake", "random_real"]  # the final report
    fit.save_checkpoint(tmp_path / "last.ckpt")
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"][cb.state_key]
    assert saved == cb.state_dict()


def test_callback_state_round_trip() -> None:
    cb = callback()
    cb.best_acc, cb.best_step, cb.last_step = 0.7, 1000, 1500
    restored = callback()
    restored.load_state_dict(cb.state_dict())
    assert restored.state_dict() == {"best_acc": 0.7, "best_step": 1000, "last_step": 1500}
    assert callback(arch="convnet_bn").state_key != cb.state_key


def fake_module(digits: DigitsDataModule, tmp_path: Path, **extra: Any) -> SimpleNamespace:
    """What the callback reads of a distillation module; ``exported`` lists the exports."""
    model = SimpleNamespace(
        synthetic_data=lambda: random_real(digits),
        datamodule=digits,
        preprocess=digits.preprocess(),
        num_classes=digits.num_classes,
        image_shape=digits.image_shape,
        device=torch.device("cpu"),
        exported=[],
        **extra,
    )
    model.export = lambda tag: model.exported.append(tag) or tmp_path / tag
    return model


def test_callback_exports_only_improvements(digits: DigitsDataModule, tmp_path: Path) -> None:
    cb = callback(every_n_steps=10, report=False)
    means = iter([0.5, 0.4, 0.6, 0.7])
    cb.evaluator.evaluate_many = lambda sets, *a, **k: [
        EvalResult("fake", ARCH, "short", 5, (next(means),)) for _ in sets
    ]
    model = fake_module(digits, tmp_path)
    logged: list[tuple[dict, int]] = []
    logger = SimpleNamespace(log_metrics=lambda metrics, step: logged.append((metrics, step)))
    fake = SimpleNamespace(global_step=0, is_global_zero=True, fast_dev_run=False, loggers=[logger])
    for step in range(1, 31):
        fake.global_step = step
        cb.on_train_batch_end(fake, model, None, None, step)
    cb.on_train_end(fake, model)  # already evaluated at step 30: nothing more
    assert [step for _, step in logged] == [10, 20, 30]
    assert [m["eval/acc_best"] for m, _ in logged] == [0.5, 0.5, 0.6]
    assert model.exported == ["best", "best"] and (cb.best_acc, cb.best_step) == (0.6, 30)
    # Another DDP rank evaluates too (its share of the runs) and keeps the same best-so-far
    # state, but neither logs nor exports.
    other_rank = SimpleNamespace(**{**vars(fake), "is_global_zero": False, "global_step": 40})
    cb.on_train_batch_end(other_rank, model, None, None, 40)
    assert len(logged) == 3 and cb.last_step == 40 and model.exported == ["best", "best"]
    assert (cb.best_acc, cb.best_step) == (0.7, 40)


# ---------------------------------------------------------------------- runs trained together
def trained_pair(digits, data, **settings):
    """The same runs trained one at a time and together: (sequential, batched)."""
    args = (data, digits.test_set, digits.preprocess(), digits.num_classes, digits.image_shape)
    return [evaluator(batching=mode, **settings).train_runs(*args) for mode in ("off", "on")]


def assert_same_runs(sequential, batched, rtol=1e-4, atol=1e-5) -> None:
    assert [r.accuracy for r in batched] == pytest.approx(
        [r.accuracy for r in sequential], abs=0.01
    )
    for one, other in zip(sequential, batched, strict=True):
        for (name, a), (_, b) in zip(one.net.state_dict().items(), other.net.state_dict().items(),
                                     strict=True):  # fmt: skip
            torch.testing.assert_close(b, a, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize(
    "protocol",
    [
        {"augment": "color_crop_cutout_flip_scale_rotate"},  # one DSA op per batch, per sample
        {"augment": "color_crop_flip_scale_rotate", "augment_mode": "idc", "cutmix_prob": 0.5},
    ],
    ids=["mtt-dsa", "tgdd-dsa-cutmix"],
)
@pytest.mark.parametrize("forward", ["grouped", "vmap"])
def test_runs_trained_together_equal_runs_trained_one_at_a_time(
    digits, protocol, forward, monkeypatch
):
    if forward == "vmap":  # the forward of networks that are not plain convolutional ones
        monkeypatch.setattr("lit_distill.evaluation.batched.grouped_forward", lambda net: None)
    sequential, batched = trained_pair(digits, random_real(digits), epochs=8, **protocol)
    assert_same_runs(sequential, batched)
    # Not vacuous: the three runs differ from each other (their own seeds and draws).
    first, second = (r.net.state_dict()["classifier.weight"] for r in batched[:2])
    assert not torch.allclose(first, second)


def test_runs_together_with_one_set_each_soft_labels_and_best_checkpoints(digits):
    per_run = [random_real(digits, seed=s) for s in range(3)]  # the random-real baseline's shape
    sequential, batched = trained_pair(digits, per_run, epochs=6)
    assert_same_runs(sequential, batched)
    soft = replace(random_real(digits), label_logits=torch.randn(50, 10), method="datm")
    sequential, batched = trained_pair(digits, soft, epochs=6, select="best", eval_every=2)
    assert_same_runs(sequential, batched)


@pytest.mark.parametrize(
    "arch, kwargs, shape",
    [
        ("convnet", {"width": 8, "depth": 2}, (1, 8, 8)),  # first padding 3, 12 px then 6 px
        ("convnet", {"width": 8, "depth": 3, "norm": "layer", "pooling": "max"}, (3, 16, 16)),
        ("convnet", {"width": 8, "depth": 2, "norm": "none", "activation": "gelu"}, (3, 9, 9)),
        ("convnet", {"width": 8, "depth": 1, "pooling": "none"}, (1, 5, 7)),
        ("vgg11", {}, (3, 32, 32)),
        ("alexnet", {}, (1, 28, 28)),
    ],
)
def test_the_grouped_forward_is_each_networks_forward(arch, kwargs, shape):
    torch.manual_seed(0)
    nets = [build_model(arch, 10, shape, **kwargs) for _ in range(3)]
    for net in nets:  # affine norms away from their (1, 0) start: a misplaced one shows
        for name, param in net.named_parameters():
            if ".norm." in name:
                param.data.normal_()
    forward = grouped_forward(nets[0])
    assert forward is not None
    stacked = {
        name: torch.stack([dict(n.named_parameters())[name] for n in nets])
        for name, _ in nets[0].named_parameters()
    }
    x = torch.randn(3, 4, *shape)  # each run its own images
    with torch.no_grad():
        expected = torch.stack([net(images) for net, images in zip(nets, x, strict=True)])
        torch.testing.assert_close(forward(stacked, x), expected, rtol=1e-4, atol=1e-5)


def test_the_first_convolution_is_computed_from_patches_only_where_it_pays():
    conv = torch.nn.Conv2d(1, 8, 3, padding=3)
    images = torch.rand(10, 3 * 1, 8, 8)  # 3 runs of 10 one-channel images
    assert _unfold_pays(conv, images)
    assert not _unfold_pays(conv, images.clone().requires_grad_(True))  # a later layer's input
    colour = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert _unfold_pays(colour, torch.rand(10, 3 * 3, 32, 32))  # 10 x 1,024 px per run
    assert not _unfold_pays(colour, torch.rand(50, 3 * 3, 32, 32))  # 51,200 px per run
    weight, bias = torch.randn(3, 8, 1, 3, 3), torch.randn(3, 8)
    torch.testing.assert_close(
        _unfolded_conv(images, conv, weight, bias),
        F.conv2d(images, weight.flatten(0, 1), bias.flatten(), padding=3, groups=3),
        rtol=1e-5, atol=1e-5,
    )  # fmt: skip


def test_only_plain_convolutional_networks_are_grouped():
    assert grouped_forward(build_model("resnet18", 10, (3, 32, 32))) is None
    assert grouped_forward(build_model("convnet_bn", 10, (3, 32, 32))) is None

    class Doubled(type(build_model("convnet", 10, (1, 8, 8), **TINY))):
        def forward(self, x):
            return 2 * super().forward(x)

    assert grouped_forward(Doubled(10, (1, 8, 8), **TINY)) is None


def test_the_callback_and_the_test_module_pass_batching_on(digits):
    assert EvaluationCallback(batching="off").evaluator.batching == "off"
    assert EvaluationCallback().evaluator.batching == "auto"
    evaluation = module(digits, batching="off", archs=["convnet", "convnet_bn"], ipc=1)
    assert [ev.batching for ev in evaluation.evaluators] == ["off", "off"]
    with pytest.raises(ValueError, match="batching='sometimes'"):
        EvaluationCallback(batching="sometimes")


def test_batching_is_chosen_only_where_it_is_exact(digits):
    data = random_real(digits)
    args = (data, digits.test_set, digits.preprocess(), 10, (1, 8, 8))
    ev = evaluator(batching="on", arch_kwargs={**TINY, "norm": "batch"})
    with pytest.raises(ValueError, match="cannot train together"):
        ev.train_runs(*args)
    auto = evaluator(arch_kwargs={**TINY, "norm": "batch"})  # BatchNorm: one at a time
    sets = [tuple(data.decoded())] * 3
    assert not auto.batched(sets, [0.01] * 3, (10, (1, 8, 8), "cpu"))
    assert evaluator().batched(sets, [0.01] * 3, (10, (1, 8, 8), "cpu"))
    assert not evaluator().batched(sets[:1], [0.01], (10, (1, 8, 8), "cpu"))  # one run
    assert not evaluator(batch_size=4096).batched(sets * 30, [0.01] * 90, (10, (1, 8, 8), "cpu"))


# ---------------------------------------------------------------------- several sets together
def test_a_soft_label_set_and_a_hard_label_baseline_train_together(digits, monkeypatch):
    """Sets of one shape and learning rate join one group whatever their labels."""
    soft = replace(random_real(digits, ipc=2, seed=3), label_logits=torch.randn(20, 10))
    baseline = [random_real(digits, ipc=2, seed=s) for s in range(3)]
    facts = (digits.test_set, digits.preprocess(), digits.num_classes, digits.image_shape)
    ev = evaluator(epochs=5)
    alone = [ev.evaluate(d, *facts) for d in (soft, baseline)]
    sizes = []
    real_train_together = train_together
    monkeypatch.setattr(
        "lit_distill.evaluation.evaluator.train_together",
        lambda nets, *a, **k: sizes.append(len(nets)) or real_train_together(nets, *a, **k),
    )
    together = ev.evaluate_many([soft, baseline], *facts)
    assert sizes == [6]
    for one, other in zip(alone, together, strict=True):
        assert other.accuracies == pytest.approx(one.accuracies, abs=0.01)


def test_sets_evaluated_together_give_each_sets_own_result(digits, monkeypatch):
    """A set and its per-run baseline, evaluated in one call: each result is the one
    ``evaluate`` gives for that set alone, and the six runs trained in one group."""
    data = random_real(digits, ipc=2, seed=5)
    baseline = [random_real(digits, ipc=2, seed=s) for s in range(3)]
    facts = (digits.test_set, digits.preprocess(), digits.num_classes, digits.image_shape)
    ev = evaluator(epochs=6, augment="color_crop_cutout_flip_scale_rotate")
    alone = [ev.evaluate(d, *facts) for d in (data, baseline)]
    sizes = []
    real_train_together = train_together

    def counting(nets, *args, **kwargs):
        sizes.append(len(nets))
        return real_train_together(nets, *args, **kwargs)

    monkeypatch.setattr("lit_distill.evaluation.evaluator.train_together", counting)
    together = ev.evaluate_many([data, baseline], *facts)
    assert sizes == [6]
    for one, other in zip(alone, together, strict=True):
        assert other.method == one.method and other.ipc == one.ipc
        assert other.accuracies == pytest.approx(one.accuracies, abs=0.01)
    assert together[0].accuracies != together[1].accuracies  # not one set evaluated twice


def test_sets_join_one_group_only_when_they_can(digits):
    """Sets of another shape or learning rate, or beyond the step's image budget, keep their
    own group; the networks come back in each set's run order whatever the grouping."""
    small, large = (tuple(random_real(digits, ipc=i).decoded()) for i in (1, 2))
    ev = evaluator()
    facts = (10, (1, 8, 8), "cpu")

    def groups(sets_per_set, lrs_per_set, ev=ev):
        jobs = [(k, r) for k in range(len(sets_per_set)) for r in range(3)]
        sets = [sets_per_set[k] for k, _ in jobs]
        lrs = [lrs_per_set[k] for k, _ in jobs]
        return ev._groups(jobs, sets, lrs, facts)

    assert groups([small, small], [0.01, 0.01]) == [[0, 1, 2, 3, 4, 5]]
    assert groups([small, large], [0.01, 0.01]) == [[0, 1, 2], [3, 4, 5]]
    assert groups([small, small], [0.01, 0.02]) == [[0, 1, 2], [3, 4, 5]]
    assert groups([small, small, small], [0.01, 0.02, 0.01]) == [[0, 1, 2, 6, 7, 8], [3, 4, 5]]
    # auto: two sets of 3 runs x 1,000 images per step exceed BATCH_IMAGES; "on" joins them
    big = (small[0].repeat(100, 1, 1, 1), small[1].repeat(100))
    assert groups([big, big], [0.01, 0.01], evaluator(batch_size=1000)) == [[0, 1, 2], [3, 4, 5]]
    on = evaluator(batch_size=1000, batching="on")
    assert groups([big, big], [0.01, 0.01], on) == [[0, 1, 2, 3, 4, 5]]
    assert groups([small, small], [0.01, 0.01], evaluator(batching="off")) == [
        [i] for i in range(6)
    ]


def test_networks_return_in_run_order_when_groups_interleave(digits):
    """A set whose runs cannot train together between two that join: every set still gets
    its own networks, run by run (compared with each set trained alone)."""
    one = random_real(digits, ipc=1, seed=1)
    mixed = [replace(random_real(digits, ipc=1, seed=s), lr=0.01 * (s + 1)) for s in range(3)]
    other = random_real(digits, ipc=1, seed=2)
    args = (digits.test_set, digits.preprocess(), digits.num_classes, digits.image_shape)
    ev = evaluator(epochs=4, lr=None)
    jointly = ev.train_runs_many([one, mixed, other], *args)
    for data, runs in zip([one, mixed, other], jointly, strict=True):
        assert_same_runs(ev.train_runs(data, *args), runs)


@pytest.mark.parametrize("report", [True, False])
def test_the_last_iteration_is_evaluated_with_the_baseline(digits, tmp_path, report):
    """At a distillation's last iteration the reporting callback evaluates the set together
    with the random-real baseline (one call, two sets) and the end of fit reports both without
    another evaluation; without the report the set alone is evaluated, as at every interval."""
    cb = callback(every_n_steps=10, report=report)
    calls: list[tuple[int, list[str]]] = []

    def evaluate_many(sets, *args, **kwargs):
        methods = [s.method if isinstance(s, SyntheticData) else s[0].method for s in sets]
        calls.append((fake.global_step, methods))
        return [EvalResult(m, ARCH, "short", 5, (0.5,)) for m in methods]

    cb.evaluator.evaluate_many = evaluate_many
    model = fake_module(digits, tmp_path, finished=False)
    fake = SimpleNamespace(global_step=0, is_global_zero=True, fast_dev_run=False, loggers=[])
    model.trainer = fake
    for step in range(1, 21):
        fake.global_step, model.finished = step, step == 20
        cb.on_train_batch_end(fake, model, None, None, step)
    # Evaluated at the step (before that step's checkpoint saves the callback's state).
    assert calls[-1][0] == 20 and cb.last_step == 20
    cb.on_train_end(fake, model)
    if report:
        assert calls == [(10, ["random_real"]), (20, ["random_real", "random_real"])]
        assert [r.method for r in cb.results] == ["random_real"] * 2 and cb.last_step == 20
    else:
        assert calls == [(10, ["random_real"]), (20, ["random_real"])]
    # A fit stopped between intervals (max_steps, a time limit): the end evaluates the set,
    # with the baseline when reporting.
    calls.clear()
    fake.global_step, model.finished = 25, False
    cb.on_train_end(fake, model)
    assert calls == [(25, ["random_real"] * (2 if report else 1))] and cb.last_step == 25


def test_auto_batching_on_a_cpu_only_where_a_step_is_small():
    """On a CPU, runs whose steps hold much work (CIFAR-10 IPC 10; IPC 1 and 3 at width 128)
    train one at a time under ``auto`` (grouping measured no faster there); small steps, another
    device, or ``on`` group."""
    small = [(torch.zeros(10, 3, 32, 32), torch.zeros(10, dtype=torch.long))] * 3
    large = [(torch.zeros(100, 3, 32, 32), torch.zeros(100, dtype=torch.long))] * 3
    cpu, gpu = (10, (3, 32, 32), "cpu"), (10, (3, 32, 32), "cuda")
    ev = evaluator(arch_kwargs={"width": 32}, batch_size=256)  # the CPU configs' evaluator
    assert ev.batched(small, [0.01] * 3, cpu)
    assert not ev.batched(large, [0.01] * 3, cpu)
    assert ev.batched(large, [0.01] * 3, gpu)
    on = evaluator(arch_kwargs={"width": 32}, batch_size=256, batching="on")
    assert on.batched(large, [0.01] * 3, cpu)
    # The bound counts the network's width: the small steps of a wide network train alone.
    mid = [(torch.zeros(30, 3, 32, 32), torch.zeros(30, dtype=torch.long))] * 3
    assert evaluator(arch_kwargs={"width": 32}, batch_size=256).batched(mid, [0.01] * 3, cpu)
    assert not evaluator(arch_kwargs={"width": 128}, batch_size=256).batched(mid, [0.01] * 3, cpu)
    # CIFAR-10 IPC 1 at width 128: 10 x 1,024 px x 128 channels, about even either way.
    assert not evaluator(arch_kwargs={"width": 128}, batch_size=256).batched(small, [0.01] * 3, cpu)


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader`")
def test_the_checkpoint_of_the_last_iteration_holds_its_joint_evaluation(digits, tmp_path):
    """In a real fit: the last iteration's evaluation trains the set with the baseline before
    that step's checkpoint is written, which then holds it (a resume with more iterations
    neither evaluates again at once nor forgets the last result)."""

    class Finishing(FakeDistillation):
        @property
        def finished(self) -> bool:
            return self.iteration >= 4

    cb = callback(every_n_steps=2)
    sizes: list[int] = []
    evaluate_many = cb.evaluator.evaluate_many
    cb.evaluator.evaluate_many = lambda sets, *a, **k: (
        sizes.append(len(sets)) or evaluate_many(sets, *a, **k)
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_last=True)
    fit = L.Trainer(
        accelerator="cpu", max_steps=4, logger=False, callbacks=[cb, checkpoint],
        enable_progress_bar=False, limit_val_batches=0,
    )  # fmt: skip
    fit.fit(Finishing(digits, tmp_path), datamodule=digits)
    assert sizes == [1, 2]  # step 2: the set; step 4: the set and the baseline, once
    assert [r.method for r in cb.results] == ["fake", "random_real"]
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    assert saved[cb.state_key]["last_step"] == 4
    assert saved[cb.state_key]["best_acc"] == pytest.approx(cb.best_acc)
