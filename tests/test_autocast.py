"""lipkit/autocast.py: the autocast check that constraints and gradient penalties share,
on this torch and on torch < 2.4's signature (no device argument to is_autocast_enabled,
which then raised TypeError inside both penalties)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import lipkit as lk
import lipkit.autocast
from lipkit.autocast import autocast_enabled, autocast_off


class OldTorch:
    """torch as lipkit.autocast sees it on torch < 2.4: is_autocast_enabled() takes no device
    and answers for CUDA only (torch's own autocast keeps the real function)."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def is_autocast_enabled(*args):
        if args:
            raise TypeError("is_autocast_enabled() takes 0 positional arguments")
        return torch.is_autocast_enabled("cuda")


def old_torch_signature(monkeypatch) -> None:
    monkeypatch.setattr(lipkit.autocast, "torch", OldTorch())


@pytest.mark.parametrize("old_torch", [False, True])
def test_autocast_enabled_and_off(monkeypatch, old_torch):
    if old_torch:
        old_torch_signature(monkeypatch)
    assert not autocast_enabled("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert autocast_enabled("cpu")
        with autocast_off("cpu"):
            assert not autocast_enabled("cpu")
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


@pytest.mark.parametrize("old_torch", [False, True])
def test_both_gradient_penalties_under_autocast_on_either_signature(monkeypatch, old_torch):
    if old_torch:
        old_torch_signature(monkeypatch)
    torch.manual_seed(0)
    model, critic = nn.Linear(5, 3), nn.Linear(5, 1)
    x = torch.randn(8, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        igp = lk.input_gradient_penalty(model, x, kind="logits", n_proj=None)
        gp = lk.gradient_penalty(critic, x, torch.randn(8, 5))
    torch.testing.assert_close(igp, model.weight.detach().square().sum(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(gp, (critic.weight.detach().norm() - 1) ** 2, rtol=1e-6, atol=1e-7)
