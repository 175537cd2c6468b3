"""DDP across processes (gloo, on the CPU) for every task, and mixed precision.

Each run is the real command line in a subprocess: ``lit-distill fit ... --trainer.strategy ddp
--trainer.devices 2``, which Lightning's launcher turns into two processes. A helper callback
(``ddp_helpers.SaveLearned``) writes each rank's synthetic set, so the tests can check that the
ranks hold the same set after every update, and compare with a single process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DIGIT_EXPERTS, make_trajectory

from lit_distill.trajectory import expert_path, list_experts

TESTS = Path(__file__).resolve().parent
TINY = '{"width": 8, "depth": 2}'
QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.logger=false",
]


def cli(folder: Path, *args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """``python -m lit_distill ARGS`` in ``folder`` with ``processes`` DDP ranks on the CPU."""
    ddp = ["--trainer.accelerator=cpu", f"--trainer.devices={processes}"]
    if processes > 1:
        ddp.append("--trainer.strategy=ddp")
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "lit_distill", *args, *QUIET, *ddp],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def distill(folder: Path, config: str, out: str, *extra: str, processes: int = 2) -> dict:
    """A short distillation from a shipped digits config; each rank's final set."""
    args = [
        "fit", "--config", config, f"--model.init_args.arch_kwargs={TINY}",
        "--model.init_args.trajectory_dir=experts", "--model.init_args.num_experts=2",
        "--model.init_args.iterations=3", "--model.init_args.image_every=0",
        f"--model.init_args.export_dir={out}", "--trainer.callbacks=[]",
        "--trainer.callbacks+=ddp_helpers.SaveLearned", f"--trainer.callbacks.folder={out}",
        "--trainer.enable_checkpointing=false", *extra,
    ]  # fmt: skip
    cli(folder, *args, processes=processes)
    return {r: torch.load(folder / out / f"rank{r}.pt") for r in range(processes)}


@pytest.fixture
def experts(in_tmp) -> Path:
    for i in range(2):
        make_trajectory(epochs=6, seed=i, **DIGIT_EXPERTS).save(expert_path("experts", i))
    return in_tmp


def assert_same_on_every_rank(ranks: dict) -> None:
    first = ranks[0]
    assert first["world"] == len(ranks) and first["iteration"] >= 3
    for state in ranks.values():
        for key in ("images", "labels", "lr"):
            if key in first:
                assert torch.equal(state[key], first[key]), key


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dm", "tgdd"])
def test_distribution_matching_under_ddp_equals_one_process(method, experts):
    extra = ["--model=lit_distill.distill.DMModule"] if method == "dm" else []
    ddp = distill(experts, "tgdd_digits.yaml", "ddp", *extra)
    assert_same_on_every_rank(ddp)
    single = distill(experts, "tgdd_digits.yaml", "single", *extra, processes=1)
    # Classes are split between the ranks and their gradients summed: the same update.
    torch.testing.assert_close(ddp[0]["images"], single[0]["images"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mtt", "datm", "mct", "dpd"])
def test_trajectory_matching_under_ddp_keeps_one_set(method, experts):
    extra = ["--model.init_args.syn_steps=3"]
    if method in ("datm", "dpd"):
        extra += ["--model.init_args.init=real", "--model.init_args.threshold=10"]
        extra += [
            "--model.init_args.max_start_epoch=4",
            "--model.init_args.current_max_start_epoch=2",
        ]
    elif method == "mtt":
        extra += ["--model.init_args.max_start_epoch=4"]
    ranks = distill(experts, f"{method}_digits.yaml", "ddp", *extra)
    assert_same_on_every_rank(ranks)
    start = distill(
        experts, f"{method}_digits.yaml", "start", *extra, "--model.init_args.iterations=1"
    )
    assert not torch.equal(ranks[0]["images"], start[0]["images"])  # it did learn


@pytest.mark.slow
def test_experts_are_trained_data_parallel_and_written_once(in_tmp):
    args = [
        "fit", "--config", "experts_digits.yaml", f"--model.init_args.arch_kwargs={TINY}",
        "--model.init_args.epochs=2", "--model.init_args.num_experts=2",
        "--model.init_args.trajectory_dir=ddp_experts", "--trainer.callbacks=[]",
    ]  # fmt: skip
    done = cli(in_tmp, *args)
    assert len(list_experts(in_tmp / "ddp_experts")) == 2
    log = done.stdout + done.stderr
    for index in (1, 2):  # one line per expert (rank 0 writes it), one summary
        assert log.count(f"expert {index}/2 done") == 1
    assert log.count("Summary") == 1
    again = cli(in_tmp, *args)  # nothing left to train: no second process is even started
    assert (again.stdout + again.stderr).count("all 2 experts already in") == 1


@pytest.mark.slow
def test_ddp_resume_equals_the_uninterrupted_ddp_run(experts):
    def run(out, *extra):
        return distill(
            experts, "tgdd_digits.yaml", out, "--model.init_args.iterations=4",
            "--trainer.enable_checkpointing=true",
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            f"--trainer.callbacks.dirpath={out}_ckpt", "--trainer.callbacks.save_last=true",
            "--trainer.callbacks.every_n_train_steps=2", *extra,
        )  # fmt: skip

    straight = run("straight")
    run("half", "--trainer.max_steps=2")
    resumed = run("resumed", "--ckpt_path=half_ckpt/last.ckpt")
    for r in (0, 1):
        torch.testing.assert_close(resumed[r]["images"], straight[r]["images"], rtol=0, atol=0)


# ---------------------------------------------------------------------- mixed precision
def in_process(model, tmp_path, **kwargs):
    import lightning as L

    from lit_distill.data import DigitsDataModule

    options = dict(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
    )  # fmt: skip
    L.Trainer(**{**options, **kwargs}).fit(model, datamodule=DigitsDataModule())
    return model


def small(cls, folder, **kwargs):
    from lit_distill.data import DigitsDataModule

    dm = DigitsDataModule()
    facts = dict(num_classes=10, image_shape=(1, 8, 8), mean=dm.mean, std=dm.std, dataset="digits")
    options = dict(ipc=2, iterations=4, image_every=0, arch_kwargs={"width": 8, "depth": 2})
    if cls.__name__ != "DMModule":
        options.update(trajectory_dir=str(folder), num_experts=2)
    if cls.__name__ in ("MTTModule", "DATMModule"):
        options.update(syn_steps=3, max_start_epoch=4, arch="convnet")
    if cls.__name__ == "DATMModule":
        options.update(init="real", threshold=10.0)
    if cls.__name__ == "TGDDModule":
        options.update(arch="convnet", real_batch=16)
    return cls(**facts, **{**options, **kwargs})


@pytest.mark.parametrize("name", ["DMModule", "TGDDModule", "MTTModule", "DATMModule"])
def test_bf16_mixed_trains_with_fp32_master_copies(name, experts):
    import lit_distill.distill as methods

    cls = getattr(methods, name)
    model = in_process(small(cls, experts / "experts"), experts, precision="bf16-mixed")
    assert int(model.iteration) == 4
    for tensor in model.synthetic.learned().values():
        assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all()


def fp16_plugin():
    from lightning.pytorch.plugins.precision import MixedPrecision

    # 16-mixed falls back to bf16 on a CPU Trainer: the plugin is built by hand for the test.
    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))


def test_16_mixed_scales_losses_skips_overflows_and_recovers(experts):
    from lit_distill.distill import DMModule

    model = small(DMModule, None, iterations=12)
    model.loss_scaler.state[0] = 2.0**24  # too large for fp16: the first updates overflow
    start = model.synthetic.images.detach().clone()
    in_process(model, experts, plugins=[fp16_plugin()])
    scale, good, skipped = model.loss_scaler.state.tolist()
    assert int(model.iteration) == 12 and skipped == 0 and good >= 1 and scale < 2.0**24
    assert not torch.equal(model.synthetic.images.detach(), start)  # updates were applied


def test_16_mixed_that_only_overflows_stops_instead_of_skipping_every_step(experts):
    from lit_distill.distill import DMModule
    from lit_distill.errors import DivergenceError

    model = small(DMModule, None, iterations=40)
    model.loss_scaler.state[0] = 1e300
    with pytest.raises(DivergenceError, match="25 updates in a row overflowed in fp16"):
        in_process(model, experts, plugins=[fp16_plugin()])
