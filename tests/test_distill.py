"""Distribution matching (DM) and TGDD: the algorithm, the modules, resume and export."""

from __future__ import annotations

import pytest
import torch
from conftest import make_trajectory, quiet_trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lit_distill.data import DigitsDataModule
from lit_distill.distill import DMModule, TGDDModule
from lit_distill.distill.matching import (
    StagePick,
    class_losses,
    largest_activation,
    mean_embedding_mmd,
    real_class_means,
    sample_stage,
)
from lit_distill.errors import TrajectoryMismatchError, TrajectoryNotFoundError
from lit_distill.export import load_synthetic
from lit_distill.models import build_model
from lit_distill.trajectory import expert_path

DIGITS = DigitsDataModule()
FACTS = dict(
    num_classes=10, image_shape=(1, 8, 8), mean=DIGITS.mean, std=DIGITS.std, dataset="digits"
)
SMALL = dict(arch_kwargs={"width": 8}, real_batch=16, image_every=0, real_on_device=False)


def write_experts(folder, count=2, **kwargs):
    for i in range(count):
        make_trajectory(seed=i, **kwargs).save(expert_path(folder, i))
    return folder


def tgdd(tmp_path, **kwargs) -> TGDDModule:
    folder = write_experts(tmp_path / "experts")
    options = dict(trajectory_dir=str(folder), num_experts=2, ipc=2, iterations=6)
    settings = {**SMALL, **options, **kwargs}
    return TGDDModule(**FACTS, **settings, export_dir=str(tmp_path))


trainer = quiet_trainer


# ---------------------------------------------------------------------- the algorithm
def test_mmd_is_zero_for_equal_means_and_positive_otherwise():
    a = torch.randn(8, 5)
    assert mean_embedding_mmd(a, a[torch.randperm(8)]).abs() < 1e-6
    assert mean_embedding_mmd(a, a + 1) == pytest.approx(5.0)


def test_class_losses_reach_the_synthetic_images_only():
    torch.manual_seed(0)
    net = build_model("convnet3", 3, (1, 8, 8), width=8).requires_grad_(False)
    real = [torch.rand(6, 1, 8, 8, requires_grad=True) for _ in range(3)]
    syn = torch.rand(2, 1, 8, 8, requires_grad=True)
    means = real_class_means(net, real)
    assert means.shape == (3, net.embed_dim) and not means.requires_grad
    torch.testing.assert_close(means[1], net.embed(real[1]).mean(0))  # one forward, per class
    mmd, ce = class_losses(net, net, means[1], syn, 1)
    torch.testing.assert_close(mmd, mean_embedding_mmd(net.embed(real[1]), net.embed(syn)))
    (mmd + ce).backward()
    assert syn.grad is not None and syn.grad.abs().sum() > 0
    assert all(r.grad is None for r in real)  # no gradient through the real side
    _, no_critic = class_losses(net, None, means[1], syn, 1)
    assert no_critic == 0


def test_real_means_in_small_chunks_equal_one_forward():
    torch.manual_seed(0)
    net = build_model("convnet3", 3, (1, 8, 8), width=8).requires_grad_(False)
    real = [torch.rand(n, 1, 8, 8) for n in (6, 3, 7)]
    whole = real_class_means(net, real)
    for chunk in (1, 4, 5, 16):  # chunks that cut through classes, and one larger than all
        torch.testing.assert_close(real_class_means(net, real, chunk), whole)


def test_largest_activation_is_the_widest_layer_output_of_one_image():
    net = build_model("convnet3", 10, (3, 32, 32), width=8, norm="batch").train()
    stats = net.features[0].norm.running_mean.clone()
    assert largest_activation(net, (3, 32, 32), torch.device("cpu")) == 8 * 32 * 32 * 4
    assert net.training and torch.equal(net.features[0].norm.running_mean, stats)  # untouched
    grey = build_model("convnet3", 10, (1, 28, 28), width=4)  # padding 3: 28 -> 32 px
    assert largest_activation(grey, (1, 28, 28), torch.device("cpu")) == 4 * 32 * 32 * 4


def test_a_critic_that_is_the_extractor_costs_one_forward_and_changes_nothing():
    torch.manual_seed(0)
    net = build_model("convnet3", 3, (1, 8, 8), width=8).requires_grad_(False)
    twin = build_model("convnet3", 3, (1, 8, 8), width=8).requires_grad_(False)
    twin.load_state_dict(net.state_dict())
    mean = torch.randn(net.embed_dim)
    calls = []
    net.features.register_forward_hook(lambda *args: calls.append(1))
    results = []
    for critic in (twin, net):
        syn = torch.rand(4, 1, 8, 8, requires_grad=True)
        with torch.no_grad():
            syn.copy_(torch.linspace(0, 1, syn.numel()).view_as(syn))
        mmd, ce = class_losses(net, critic, mean, syn, 2)
        (mmd + ce).backward()
        results.append((mmd.detach(), ce.detach(), syn.grad))
    assert len(calls) == 2  # one forward with the twin critic, one when the critic is net
    for separate, shared in zip(*results, strict=True):
        torch.testing.assert_close(shared, separate)


def test_tgdd_uses_one_network_when_the_critic_is_the_extractors_snapshot(tmp_path, monkeypatch):
    model = tgdd(tmp_path)
    trainer(tmp_path, max_steps=1).fit(model, datamodule=DigitsDataModule())
    picks = iter([StagePick(1, 2, 2), StagePick(1, 2, 3)])
    monkeypatch.setattr("lit_distill.distill.tgdd.sample_stage", lambda *args: next(picks))
    model.log_dict = lambda *args, **kwargs: None
    rng = torch.Generator()
    extractor, critic = model.pick_networks(rng)
    assert critic is extractor
    extractor, critic = model.pick_networks(rng)
    assert critic is not extractor
    assert not torch.equal(extractor.classifier.weight, critic.classifier.weight)


@pytest.mark.parametrize("method", ["dm", "tgdd"])
def test_channels_last_and_real_chunks_change_no_result(tmp_path, method):
    def run(**options):
        if method == "tgdd":
            model = tgdd(tmp_path / str(options), iterations=3, **options)
        else:
            model = DMModule(**FACTS, **SMALL, ipc=2, iterations=3, **options,
                             export_dir=str(tmp_path / str(options)))  # fmt: skip
        start = StartImages()
        trainer(tmp_path, callbacks=[start]).fit(model, datamodule=DigitsDataModule())
        model.start = start.images
        return model

    plain = run(channels_last=False, real_forward_batch=1024)
    weight = plain._nets["extractor"].features[1].conv.weight
    assert plain.real_chunk == 1024 and weight.is_contiguous()
    auto = run()  # the CPU default: channels-last, chunks of at most 8 MiB per layer output
    weight = auto._nets["extractor"].features[1].conv.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    probe = largest_activation(auto._nets["extractor"], FACTS["image_shape"], torch.device("cpu"))
    assert auto.real_chunk == 8 * 2**20 // probe
    small = run(real_forward_batch=5)  # chunks that cut through classes' batches
    for model in (auto, small):
        torch.testing.assert_close(
            model.synthetic.images.detach(), plain.synthetic.images.detach(), rtol=1e-4, atol=1e-5
        )
    assert (plain.synthetic.images.detach() - plain.start).abs().max() > 1e-3  # they moved


class StartImages(Callback):
    """The synthetic images as training starts (after initialisation)."""

    def on_train_start(self, trainer, module) -> None:
        self.images = module.synthetic.images.detach().clone()


def test_stage_sampling_stays_in_the_expert_region():
    rng = torch.Generator().manual_seed(0)
    picks = [sample_stage(3, 10, 7, rng) for _ in range(2000)]
    assert {p.trajectory for p in picks} == {0, 1, 2}
    assert {p.stage for p in picks} == set(range(11))  # stages 0..M, both ends included
    assert all(p.stage <= p.constraint <= min(p.stage + 6, 10) for p in picks)
    assert any(p.constraint == p.stage for p in picks) and any(p.constraint == 10 for p in picks)


# ---------------------------------------------------------------------- the modules
@pytest.mark.parametrize("method", ["tgdd", "dm"])
def test_distillation_runs_and_exports(tmp_path, method):
    if method == "tgdd":
        model = tgdd(tmp_path)
    else:
        model = DMModule(**FACTS, **SMALL, ipc=2, iterations=6, export_dir=str(tmp_path))
    before = model.synthetic.images.detach().clone()
    trainer(tmp_path).fit(model, datamodule=DigitsDataModule())
    assert int(model.iteration) == 6
    assert not torch.equal(before, model.synthetic.images.detach())
    images = model.synthetic.images.detach()
    data = load_synthetic(tmp_path / "synthetic_final.pt")
    assert (data.method, data.ipc, data.dataset, data.iteration) == (method, 2, "digits", 6)
    if method == "tgdd":  # pixels, clamped to [0, 1]
        assert model.synthetic.space == "pixel" and images.min() >= 0 and images.max() <= 1
        assert torch.equal(data.images, images)
    else:  # DM optimises normalised images, unclamped; the export holds them as pixels
        assert model.synthetic.space == "input" and images.min() < 0
        torch.testing.assert_close(model.preprocess(data.images), images)
    assert (tmp_path / "synthetic_final.png").exists()


def checkpointed_run(tmp_path, name, stop_at=None, ckpt_path=None) -> torch.Tensor:
    model = tgdd(tmp_path, iterations=8)
    save = ModelCheckpoint(dirpath=tmp_path / name, save_last=True, every_n_train_steps=4)
    run = trainer(tmp_path, callbacks=[save], enable_checkpointing=True)
    if stop_at is not None:
        run = trainer(tmp_path, callbacks=[save], enable_checkpointing=True, max_steps=stop_at)
    run.fit(model, datamodule=DigitsDataModule(), ckpt_path=ckpt_path)
    return model.synthetic.images.detach().clone()


def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(tmp_path):
    straight = checkpointed_run(tmp_path, "straight")
    checkpointed_run(tmp_path, "interrupted", stop_at=4)
    resumed = checkpointed_run(tmp_path, "resumed", ckpt_path=tmp_path / "interrupted/last.ckpt")
    torch.testing.assert_close(resumed, straight, rtol=1e-5, atol=1e-6)
    half_way = checkpointed_run(tmp_path, "half", stop_at=4)
    assert not torch.allclose(half_way, straight)  # the comparison is not vacuous


# ---------------------------------------------------------------------- bad input
def test_missing_trajectories_name_the_expert_command(tmp_path):
    model = TGDDModule(
        **FACTS, **SMALL, trajectory_dir=str(tmp_path / "none"), expert_config="experts_digits.yaml"
    )
    with pytest.raises(
        TrajectoryNotFoundError, match="lit-distill fit --config experts_digits.yaml"
    ):
        trainer(tmp_path).fit(model, datamodule=DigitsDataModule())


@pytest.mark.parametrize(
    "mismatch, message",
    [
        (dict(dataset="mnist"), "dataset 'mnist', expected 'digits'"),
        (dict(num_classes=100), "100 classes, expected 10"),
        (dict(arch_kwargs={"width": 16}), "architecture convnet3\\(width=16\\), expected"),
        (dict(arch_kwargs={"width": 8, "norm": "batch"}), "norm=batch"),
    ],
)
def test_mismatched_trajectories_are_refused(tmp_path, mismatch, message):
    folder = write_experts(tmp_path / "other", **mismatch)
    model = TGDDModule(**FACTS, **SMALL, trajectory_dir=str(folder), num_experts=2)
    with pytest.raises(TrajectoryMismatchError, match=message):
        trainer(tmp_path).fit(model, datamodule=DigitsDataModule())


def test_convex_trajectories_are_refused_by_tgdd(tmp_path):
    folder = tmp_path / "convex"
    for i in range(2):
        traj = make_trajectory(seed=i)
        traj.params, traj.epochs = traj.params[[0, -1]], [0, traj.num_epochs]
        traj.save(expert_path(folder, i))
    model = TGDDModule(**FACTS, **SMALL, trajectory_dir=str(folder), num_experts=2)
    with pytest.raises(TrajectoryMismatchError, match="store=full"):
        trainer(tmp_path).fit(model, datamodule=DigitsDataModule())


def test_invalid_hyper_parameters(tmp_path):
    with pytest.raises(ValueError, match="alpha"):
        TGDDModule(**FACTS, **SMALL, alpha=-1.0)
    with pytest.raises(ValueError, match="ipc"):
        DMModule(**FACTS, **SMALL, ipc=0)
    for bad in (dict(real_forward_batch=0), dict(syn_batch=0), dict(real_batch=0)):
        with pytest.raises(ValueError, match="must be positive"):
            DMModule(**FACTS, **{**SMALL, **bad})


def test_tensorboard_gets_losses_lrs_images_and_hyper_parameters(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = tgdd(tmp_path, iterations=4, image_every=2)
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer(tmp_path, logger=logger, log_every_n_steps=1).fit(model, datamodule=DigitsDataModule())
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {"train/mmd", "train/constraint", "train/loss", "train/lr_images", "train/stage"}
    assert expected <= scalars
    assert [e.step for e in events.Images("synthetic/images")] == [1, 2, 4]
    hparams = (tmp_path / "tb" / "version_0" / "hparams.yaml").read_text()
    assert "alpha: 2.5" in hparams and "expert_region: 7" in hparams
