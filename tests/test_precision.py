"""--precision bf16 / fp16 (issue 12): every critic stays finite, the gradient penalties (GAN
and supervised input-gradient) are the same function in every precision (closed forms on
linear models), fp16 runs resume exactly
(the loss scaler is checkpointed), and bad values are one-line errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from small_runs import metric_rows, tiny_gan

import lipkit as lk
from lipkit.methods import method_names
from lipkit.train.gan import GanConfig, fit
from lipkit.train.precision import Precision


def gan(out, critic: str, precision: str, steps: int = 50, **extra) -> GanConfig:
    extra = {"n_critic": 1, **extra}  # 50 generator + 50 critic steps: CI time, not coverage
    return tiny_gan(out, critic, steps, precision=precision, **extra)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_every_critic_stays_finite_for_50_steps(precision, tmp_path):
    for critic in method_names("critic"):
        fit(gan(tmp_path / critic, critic, precision))  # a non-finite loss would raise NonFiniteLossError
        last = metric_rows(tmp_path / critic)[-1]
        assert last["step"] == 50 and all(v == v for v in last.values() if isinstance(v, float)), critic


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gradient_penalty_under_autocast_is_the_fp32_closed_form(dtype):
    """A linear critic w.x has input gradient w at every point: GP = (||w|| - 1)^2, and its
    weight gradient through a GradScaler (fp16) is 2 (||w|| - 1) w / ||w|| once unscaled."""
    torch.manual_seed(0)
    critic = nn.Linear(5, 1)
    real, fake = torch.randn(8, 5), torch.randn(8, 5)
    w = critic.weight.detach()[0]
    expected = (w.norm() - 1) ** 2
    scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16)
    with torch.autocast("cpu", dtype=dtype):
        fake_half = critic(fake) * 0 + fake.to(dtype)  # a generated batch arrives in half precision
        penalty = lk.gradient_penalty(critic, real, fake_half.detach())
    assert penalty.dtype == torch.float32
    torch.testing.assert_close(penalty, expected, rtol=1e-6, atol=1e-7)
    scaler.scale(penalty).backward()
    scaler.unscale_(torch.optim.SGD(critic.parameters(), lr=0.1))
    torch.testing.assert_close(critic.weight.grad[0], 2 * (w.norm() - 1) * w / w.norm(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_input_gradient_penalty_under_autocast_is_the_fp32_closed_form(dtype):
    """A linear model W x + b has Jacobian W at every point: the logits penalty is exactly
    ||W||_F^2, and its weight gradient 2 W; autocast must not put either in half precision."""
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x = torch.randn(8, 5)
    w = model.weight.detach()
    with torch.autocast("cpu", dtype=dtype):
        penalty = lk.input_gradient_penalty(model, x.to(dtype), kind="logits", n_proj=None)
    assert penalty.dtype == torch.float32
    torch.testing.assert_close(penalty, w.square().sum(), rtol=1e-6, atol=1e-7)
    penalty.backward()
    torch.testing.assert_close(model.weight.grad, 2 * w, rtol=1e-6, atol=1e-7)


def test_an_fp16_run_resumes_exactly(tmp_path):
    fit(gan(tmp_path / "whole", "gp", "fp16", steps=10))
    fit(gan(tmp_path / "split", "gp", "fp16", steps=5, checkpoint_every=5))
    fit(gan(tmp_path / "split", "gp", "fp16", steps=10, checkpoint_every=5), resume=True)
    for a, b in zip(metric_rows(tmp_path / "whole"), metric_rows(tmp_path / "split"), strict=True):
        trained = {"step", "loss_critic", "loss_generator", "w1_critic", "penalty"}  # (the split run evaluates at 5)
        assert {k: a[k] for k in trained} == {k: b[k] for k in trained}


def test_bad_precisions_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"precision='fp8' is not allowed; choose one of \('fp32', 'bf16', 'fp16'\)"):
        fit(gan(tmp_path / "a", "sn", "fp8"))
    from lipkit.train import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ValueError, match="fp16 with 2 ranks is not supported"):
        distributed.refuse_fp16_ranks("fp16")
    distributed.refuse_fp16_ranks("bf16")  # fine


def test_fp32_is_the_plain_step():
    precision = Precision("fp32", "cpu")
    assert not precision.scaler.is_enabled() and precision.state_dict() == {}
