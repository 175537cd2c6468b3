"""The trajectory-matching engine: steps, loss, and the two exact backward modes."""

from __future__ import annotations

import pytest
import torch

from lit_distill.augment import DSA
from lit_distill.distill.engine import (
    FlatModel,
    Segment,
    StudentUnroll,
    matching_loss,
    plan_steps,
    student_loss,
)
from lit_distill.models import build_model

DSA_SINGLE = DSA("color_crop_cutout_flip_scale_rotate", mode="single", per_sample=True)


def tiny_problem(dtype=torch.float64, images=12, soft=True, augment=True, seed=0):
    """A width-4 ConvNet on 8x8 images, a synthetic set with soft labels, and a segment."""
    torch.manual_seed(seed)
    net = build_model("convnet", 3, (1, 8, 8), width=4, depth=2).to(dtype)
    model = FlatModel(net)
    start = model.flatten()
    target = start + 0.05 * torch.randn_like(start)
    x = torch.randn(images, 1, 8, 8, dtype=dtype, requires_grad=True)
    labels = torch.arange(images) % 3
    logits = (torch.nn.functional.one_hot(labels, 3).to(dtype) * 2).requires_grad_(soft)

    def batch(step):
        inputs = x[step.indices]
        if augment:
            inputs = DSA_SINGLE(inputs, generator=torch.Generator().manual_seed(step.seed))
        targets = logits[step.indices].softmax(1) if soft else labels[step.indices]
        return inputs, targets

    return model, Segment(start, target), batch, x, logits


def run(mode, steps=10, lr=0.05, mask=None, **kwargs):
    model, segment, batch, x, logits = tiny_problem(**kwargs)
    rate = torch.tensor(lr, dtype=x.dtype, requires_grad=True)
    plan = plan_steps(x.shape[0], 4, steps, torch.Generator().manual_seed(1))
    leaves = [x, logits] if logits.requires_grad else [x]
    return StudentUnroll(model, batch, mode).run(segment, plan, rate, leaves, mask=mask)


def test_plan_pops_the_last_chunk_of_each_permutation_and_refills():
    plan = plan_steps(10, 4, 5, torch.Generator().manual_seed(0))
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    chunks = list(perm.split(4))
    assert torch.equal(plan[0].indices, chunks[2]) and torch.equal(plan[2].indices, chunks[0])
    assert [len(s.indices) for s in plan] == [2, 4, 4, 2, 4]  # a new permutation at step 3
    assert len({s.seed for s in plan}) == 5


def test_one_engine_step_equals_hand_written_sgd():
    model, segment, batch, x, _ = tiny_problem(soft=False, augment=False)
    plan = plan_steps(x.shape[0], 4, 1, torch.Generator().manual_seed(0))
    lr = torch.tensor(0.1, dtype=x.dtype)
    result = StudentUnroll(model, batch, "replay").run(segment, plan, lr, [x])
    # By hand: an ordinary module, loss.backward(), p -= lr * p.grad.
    net = model.net
    idx = plan[0].indices
    torch.nn.functional.cross_entropy(net(x[idx].detach()), batch(plan[0])[1]).backward()
    expected = torch.cat([(p - 0.1 * p.grad).detach().reshape(-1) for p in net.parameters()])
    torch.testing.assert_close(result.final, expected)
    torch.testing.assert_close(result.loss, matching_loss(expected, segment))


@pytest.mark.parametrize("soft", [True, False])
def test_replay_gradients_equal_unroll_gradients(soft):
    unrolled = run("unroll", steps=12, soft=soft)
    replayed = run("replay", steps=12, soft=soft)
    torch.testing.assert_close(replayed.loss, unrolled.loss)
    torch.testing.assert_close(replayed.final, unrolled.final)
    torch.testing.assert_close(replayed.grad_lr, unrolled.grad_lr)
    for mine, theirs in zip(replayed.grads, unrolled.grads, strict=True):
        torch.testing.assert_close(mine, theirs)
    assert replayed.grads[0].abs().sum() > 0  # the images do receive a gradient


def test_replay_matches_unroll_in_float32_within_float_tolerance():
    unrolled = run("unroll", steps=10, dtype=torch.float32)
    replayed = run("replay", steps=10, dtype=torch.float32)
    mine = [replayed.grad_lr, *replayed.grads]
    for got, expected in zip(mine, [unrolled.grad_lr, *unrolled.grads], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["unroll", "replay"])
def test_gradients_agree_with_finite_differences(mode):
    result = run(mode, steps=10)
    model, segment, batch, x, logits = tiny_problem()
    plan = plan_steps(x.shape[0], 4, 10, torch.Generator().manual_seed(1))
    engine = StudentUnroll(model, batch, "replay")

    def loss_at(lr=0.05):
        rate = torch.tensor(lr, dtype=x.dtype)
        return float(engine.run(segment, plan, rate, [x, logits]).loss)

    eps = 1e-6
    numeric_lr = (loss_at(0.05 + eps) - loss_at(0.05 - eps)) / (2 * eps)
    assert float(result.grad_lr) == pytest.approx(numeric_lr, rel=1e-5, abs=1e-9)
    generator = torch.Generator().manual_seed(3)
    for leaf, grad in ((x, result.grads[0]), (logits, result.grads[1])):
        direction = torch.randn(leaf.shape, generator=generator, dtype=leaf.dtype)
        with torch.no_grad():
            leaf += eps * direction
            plus = loss_at()
            leaf -= 2 * eps * direction
            minus = loss_at()
            leaf += eps * direction
        numeric = (plus - minus) / (2 * eps)
        assert float((grad * direction).sum()) == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_a_mask_restricts_numerator_and_denominator_and_carries_no_gradient():
    def keep_first_half(final, segment):
        kept = torch.zeros_like(final, dtype=torch.bool)
        kept[: final.numel() // 2] = True
        return kept

    for mode in ("unroll", "replay"):
        result = run(mode, steps=6, mask=keep_first_half)
        model, segment, *_ = tiny_problem()
        half = result.final.numel() // 2
        moved = (result.final - segment.target)[:half].pow(2).sum()
        span = (segment.start - segment.target)[:half].pow(2).sum()
        torch.testing.assert_close(result.loss, moved / span)
        assert result.kept == half
    torch.testing.assert_close(
        run("replay", steps=6, mask=keep_first_half).grads[0],
        run("unroll", steps=6, mask=keep_first_half).grads[0],
    )


def test_student_loss_soft_equals_hard_for_one_hot_targets():
    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 3, 1, 2, 0])
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    torch.testing.assert_close(student_loss(logits, one_hot), student_loss(logits, labels))


def test_unknown_mode_and_empty_plan_are_refused():
    model, segment, batch, x, _ = tiny_problem()
    with pytest.raises(ValueError, match="backward mode"):
        StudentUnroll(model, batch, "tesla")
    with pytest.raises(ValueError, match="at least one step"):
        StudentUnroll(model, batch).run(segment, [], torch.tensor(0.1), [x])


def test_update_validation_predicts_sgd_with_momentum_exactly():
    from lit_distill.distill.update import invalid_update

    param = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    lr = torch.nn.Parameter(torch.tensor(0.5))
    groups = [{"params": [param], "name": "images", "lr": 1.0, "momentum": 0.5},
              {"params": [lr], "name": "lr", "lr": 1.0, "momentum": 0.5}]  # fmt: skip
    optimizer = torch.optim.SGD(groups, lr=1.0)
    for step in range(3):
        param.grad, lr.grad = torch.tensor([0.1, -0.2]), torch.tensor(0.1)
        assert invalid_update(optimizer) == [], step
        optimizer.step()
    # With momentum: the lr would go 0.5 - 1.0 * (0.5 * buffer + 0.4) < 0: refused, untouched.
    param.grad, lr.grad = torch.tensor([0.0, float("inf")]), torch.tensor(0.4)
    before = (param.detach().clone(), lr.detach().clone())
    assert invalid_update(optimizer) == ["images", f"lr ({float(lr - 0.5 * 0.175 - 0.4):.3g})"]
    assert torch.equal(param.detach(), before[0]) and torch.equal(lr.detach(), before[1])


@pytest.mark.parametrize("mode", ["unroll", "replay"])
def test_a_loss_scale_multiplies_the_gradients_and_nothing_else(mode):
    plain = run(mode, steps=6)
    model, segment, batch, x, logits = tiny_problem()
    rate = torch.tensor(0.05, dtype=x.dtype, requires_grad=True)
    plan = plan_steps(x.shape[0], 4, 6, torch.Generator().manual_seed(1))
    scaled = StudentUnroll(model, batch, mode, scale=1024.0).run(segment, plan, rate, [x, logits])
    torch.testing.assert_close(scaled.loss, plain.loss)
    torch.testing.assert_close(scaled.final, plain.final)
    torch.testing.assert_close(scaled.grad_lr / 1024, plain.grad_lr)
    for mine, theirs in zip(scaled.grads, plain.grads, strict=True):
        torch.testing.assert_close(mine / 1024, theirs)
