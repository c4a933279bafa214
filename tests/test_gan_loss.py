"""The critic's loss (--loss wgan|hinge) against closed forms on a linear critic f(x) = w.x + b,
whose gradients are known by hand, and the flag from the config to the run."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from small_runs import tiny_gan

from lipkit.methods import apply_method
from lipkit.train.gan import critic_update, fit


def linear_critic_step(loss_kind: str) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    critic = nn.Linear(3, 1).double()
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
        critic.bias.fill_(0.25)
    real, fake = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64) + 0.5
    w0 = critic.weight.detach().clone()
    optimizer = torch.optim.SGD(critic.parameters(), lr=1.0)  # the step is minus the gradient
    method = apply_method(critic, "none", {}, "critic")
    stats = critic_update(critic, optimizer, method, real, fake, None, torch.Generator(), loss_kind=loss_kind)
    return stats, real, fake, w0, critic.weight.detach() - w0


def test_wgan_loss_gradient_is_the_mean_difference() -> None:
    stats, real, fake, w0, step = linear_critic_step("wgan")
    f_real, f_fake = real @ w0[0] + 0.25, fake @ w0[0] + 0.25
    assert float(stats["loss_critic"]) == pytest.approx(float(f_fake.mean() - f_real.mean()), rel=1e-12)
    assert torch.allclose(step[0], real.mean(0) - fake.mean(0), atol=1e-12)


def test_hinge_loss_and_its_gradient_by_hand() -> None:
    stats, real, fake, w0, step = linear_critic_step("hinge")
    f_real, f_fake = real @ w0[0] + 0.25, fake @ w0[0] + 0.25
    expected = torch.relu(1 - f_real).mean() + torch.relu(1 + f_fake).mean()
    assert float(stats["loss_critic"]) == pytest.approx(float(expected), rel=1e-12)
    assert float(stats["w1_critic"]) == pytest.approx(float(f_real.mean() - f_fake.mean()), rel=1e-12)
    # d/dw: -x on real points with f < 1, +x on fake points with f > -1, each averaged over 16
    active_real, active_fake = (f_real < 1).double(), (f_fake > -1).double()
    gradient = (-(active_real[:, None] * real).sum(0) + (active_fake[:, None] * fake).sum(0)) / 16
    assert 0 < active_real.sum() < 16 or 0 < active_fake.sum() < 16  # the hinge is active somewhere, not all
    assert torch.allclose(step[0], -gradient, atol=1e-12)


def test_the_loss_flag_reaches_the_run_and_bad_values_are_refused(tmp_path) -> None:
    summary = fit(tiny_gan(tmp_path / "hinge", "sn", steps=5, loss="hinge"))
    assert json.loads((tmp_path / "hinge" / "config.json").read_text())["loss"] == "hinge"
    assert summary["config"]["loss"] == "hinge"
    with pytest.raises(ValueError, match="loss must be one of wgan, hinge, got 'square'"):
        fit(tiny_gan(tmp_path / "bad", "sn", steps=5, loss="square"))


def test_an_unknown_loss_in_the_step_is_refused_not_read_as_wgan() -> None:
    with pytest.raises(ValueError, match="loss must be one of wgan, hinge, got 'hinj'"):
        linear_critic_step("hinj")
