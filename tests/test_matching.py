"""MTT and DATM modules on the matching engine: what they learn, resume, guards and windows."""

from __future__ import annotations

import pytest
import torch
from conftest import DIGIT_EXPERTS, make_trajectory, quiet_trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lit_distill.data import DigitsDataModule
from lit_distill.distill import DATMModule, DMModule, MTTModule, TGDDModule
from lit_distill.distill.engine import StudentUnroll, plan_steps
from lit_distill.errors import DivergenceError, TrajectoryMismatchError
from lit_distill.export import load_synthetic
from lit_distill.trajectory import expert_path

DIGITS = DigitsDataModule()
FACTS = dict(
    num_classes=10, image_shape=(1, 8, 8), mean=DIGITS.mean, std=DIGITS.std, dataset="digits"
)
MATCH = dict(
    **DIGIT_EXPERTS, num_experts=2, syn_steps=6, expert_epochs=2, max_start_epoch=4, ipc=1,
    image_every=0, lr_images=100, real_on_device=False,
)  # fmt: skip


trainer = quiet_trainer


def module(cls, folder, tmp_path, **kwargs):
    settings = {**MATCH, "trajectory_dir": str(folder), "export_dir": str(tmp_path), **kwargs}
    return cls(**FACTS, **settings)


# ---------------------------------------------------------------------- what is learned
@pytest.mark.parametrize(
    "cls, learned",
    [
        (DMModule, {"images"}),
        (TGDDModule, {"images"}),
        (MTTModule, {"images", "lr"}),
        (DATMModule, {"images", "lr", "labels"}),
    ],
)
def test_every_trainable_parameter_is_in_exactly_one_optimiser_group(cls, learned):
    model = cls(**FACTS, arch_kwargs={"width": 8}, ipc=2)
    groups = model.param_groups()
    assert {g["name"] for g in groups} == learned
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable) and len(set(grouped)) == len(grouped)
    model.configure_optimizers()  # the same check runs there


def test_mtt_optimises_inputs_without_clamping_and_exports_pixels(digit_experts, tmp_path):
    model = module(MTTModule, digit_experts, tmp_path, iterations=3)
    trainer(tmp_path).fit(model, datamodule=DigitsDataModule())
    assert model.synthetic.space == "input" and model.synthetic.images.min() < 0
    data = load_synthetic(tmp_path / "synthetic_final.pt")
    assert data.method == "mtt" and data.lr == pytest.approx(float(model.synthetic.lr))
    torch.testing.assert_close(model.preprocess(data.images), model.synthetic.images.detach())


def matching_loss_on_fixed_draws(model, draws=6) -> float:
    """Mean matching loss of the current set on fixed (expert, start, minibatch) draws."""
    rng = torch.Generator().manual_seed(123)
    total = 0.0
    for _ in range(draws):
        segment, _ = model.sample_segment(rng)
        plan = plan_steps(model.synthetic.num_images, model.synthetic.num_images, 6, rng)
        engine = StudentUnroll(model.student, model.student_batch, "replay")
        total += float(engine.run(segment, plan, model.synthetic.lr.detach(), []).loss)
    return total / draws


def test_a_few_iterations_on_digits_lower_the_matching_loss(digit_experts, tmp_path):
    model = module(MTTModule, digit_experts, tmp_path, iterations=1, lr_images=1000)
    trainer(tmp_path).fit(model, datamodule=DigitsDataModule())  # sets up the student
    before = matching_loss_on_fixed_draws(model)
    model.hparams.iterations = 25
    trainer(tmp_path).fit(model, datamodule=DigitsDataModule())
    assert int(model.iteration) == 25
    after = matching_loss_on_fixed_draws(model)
    assert after < 0.95 * before, (before, after)


# ---------------------------------------------------------------------- resume
def run(tmp_path, folder, name, stop_at=None, ckpt_path=None) -> dict[str, torch.Tensor]:
    model = module(
        DATMModule, folder, tmp_path, iterations=6, init="real", current_max_start_epoch=2,
        expansion_end=4, threshold=10.0,
    )  # fmt: skip
    save = ModelCheckpoint(dirpath=tmp_path / name, save_last=True, every_n_train_steps=3)
    limits = {} if stop_at is None else {"max_steps": stop_at}
    run = trainer(tmp_path, callbacks=[save], enable_checkpointing=True, **limits)
    run.fit(model, datamodule=DigitsDataModule(), ckpt_path=ckpt_path)
    return {k: v.detach().clone() for k, v in model.synthetic.learned().items()}


def test_resumed_matching_run_equals_an_uninterrupted_one(digit_experts, tmp_path):
    straight = run(tmp_path, digit_experts, "straight")
    run(tmp_path, digit_experts, "interrupted", stop_at=3)
    resumed = run(tmp_path, digit_experts, "resumed", ckpt_path=tmp_path / "interrupted/last.ckpt")
    assert set(straight) == {"images", "labels", "lr"}
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-5, atol=1e-6)
    half = run(tmp_path, digit_experts, "half", stop_at=3)
    assert not torch.allclose(half["images"], straight["images"])  # not vacuous


# ---------------------------------------------------------------------- DATM
def test_datm_labels_are_the_mean_logits_of_the_experts_that_are_right(digit_experts, tmp_path):
    model = module(DATMModule, digit_experts, tmp_path, iterations=1, ipc=2, init="real")
    trainer(tmp_path).fit(model, datamodule=DigitsDataModule())
    logits, fallback = model.expert_logits()  # recomputed on the trained set: same method
    assert torch.isfinite(logits).all() and 0 <= fallback <= logits.shape[0]
    net = model.build_network().eval()
    inputs = model.synthetic.images.detach()
    per_expert = []
    for e in range(2):
        model.bank.load_into(net, e, model.bank.num_snapshots - 1)
        per_expert.append(net(inputs))
    stacked = torch.stack(per_expert)
    right = stacked.argmax(2) == model.synthetic.labels
    for i in range(inputs.shape[0]):
        chosen = stacked[right[:, i], i] if right[:, i].any() else stacked[:, i]
        torch.testing.assert_close(logits[i], chosen.mean(0), rtol=1e-5, atol=1e-5)


def test_datm_start_window_grows_as_the_reference(tmp_path):
    model = DATMModule(
        **FACTS, arch_kwargs={"width": 8}, max_start_epoch=6, current_max_start_epoch=2,
        expansion_end=4,
    )  # fmt: skip
    windows = []
    for it in (0, 1, 2, 3, 4, 10):
        model.iteration.fill_(it)
        windows.append(model.start_window())
    assert windows == [(0, 2), (0, 3), (0, 4), (0, 5), (0, 6), (0, 6)]


class Initial(Callback):
    """Keeps the learned tensors as they are when training starts."""

    def on_train_start(self, trainer, pl_module):
        self.learned = {k: v.detach().clone() for k, v in pl_module.synthetic.learned().items()}


def test_datm_skips_the_update_above_the_threshold(digit_experts, tmp_path):
    initial = Initial()
    model = module(DATMModule, digit_experts, tmp_path, iterations=3, init="real", threshold=1e-9)
    trainer(tmp_path, callbacks=[initial]).fit(model, datamodule=DigitsDataModule())
    assert int(model.iteration) == 3
    for name, value in model.synthetic.learned().items():  # nothing moved, momentum included
        assert torch.equal(value.detach(), initial.learned[name]), name
    accepted = module(DATMModule, digit_experts, tmp_path, iterations=1, init="real", threshold=10)
    trainer(tmp_path).fit(accepted, datamodule=DigitsDataModule())
    assert not torch.equal(accepted.synthetic.images.detach(), initial.learned["images"])


# ---------------------------------------------------------------------- guards
class PoisonLearnedLR(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if int(pl_module.iteration) == 2:
            with torch.no_grad():
                pl_module.synthetic.lr.fill_(float("nan"))


def test_a_nan_learned_lr_stops_the_run_and_keeps_the_last_good_set(digit_experts, tmp_path):
    model = module(MTTModule, digit_experts, tmp_path, iterations=5)
    with pytest.raises(DivergenceError, match="iteration 2: .*not finite"):
        trainer(tmp_path, callbacks=[PoisonLearnedLR()]).fit(model, datamodule=DigitsDataModule())
    assert (tmp_path / "synthetic_last_good.pt").exists()
    assert not (tmp_path / "synthetic_final.pt").exists()


class PushLRBelowZero(MTTModule):
    """An update that would take the learned lr below zero (a gradient of +1 at lr_lr 1)."""

    def distill_step(self, rng):
        outcome = super().distill_step(rng)
        self.synthetic.lr.grad = torch.ones_like(self.synthetic.lr)
        return outcome


def test_an_update_to_a_negative_learned_lr_is_refused_before_it_happens(digit_experts, tmp_path):
    model = module(PushLRBelowZero, digit_experts, tmp_path, iterations=3, lr_lr=1.0)
    with pytest.raises(DivergenceError, match=r"iteration 0: the update would make lr \(-0.99\)"):
        trainer(tmp_path).fit(model, datamodule=DigitsDataModule())
    assert float(model.synthetic.lr) == pytest.approx(0.01)  # refused before it was applied


def test_experts_too_short_for_the_start_window_name_the_fix(tmp_path):
    folder = tmp_path / "short"
    for i in range(2):
        make_trajectory(epochs=4, seed=i, **DIGIT_EXPERTS).save(expert_path(folder, i))
    model = module(MTTModule, folder, tmp_path, iterations=1, max_start_epoch=4, expert_epochs=2)
    with pytest.raises(TrajectoryMismatchError, match="needs at least 5.*epochs 5"):
        trainer(tmp_path).fit(model, datamodule=DigitsDataModule())


@pytest.mark.parametrize(
    "bad",
    [
        dict(syn_steps=0),
        dict(max_start_epoch=0),
        dict(min_start_epoch=5, max_start_epoch=5),
        dict(lr_teacher=float("nan")),
        dict(lr_lr=-1.0),
        dict(backward="tesla"),
        dict(batch_syn=0),
    ],
)
def test_bad_matching_settings_are_refused(bad):
    with pytest.raises(ValueError):
        MTTModule(**FACTS, arch_kwargs={"width": 8}, **bad)
