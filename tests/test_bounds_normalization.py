"""LayerNorm, GroupNorm and InstanceNorm in lk.lipschitz_bound (bounds/normalization.py): the
certified constant max|gamma| / sqrt(eps) is at least the dense Jacobian's norm everywhere and
equals it at a constant input (where a self-normalizing layer is steepest); InstanceNorm with
running statistics in eval mode is its exact per-channel scale."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from bound_oracles import dense_norm, jacobian_norm_at

import lipkit as lk


@pytest.mark.parametrize("layer,shape", [
    (nn.LayerNorm(6), (6,)), (nn.LayerNorm((3, 4), eps=1e-3), (2, 3, 4)), (nn.GroupNorm(2, 4), (4, 3, 3)),
    (nn.InstanceNorm2d(3, affine=True), (3, 4, 4)), (nn.InstanceNorm1d(2), (2, 5)),
], ids=lambda v: repr(v) if isinstance(v, nn.Module) else str(v))
def test_self_normalizing_layers_are_bounded_and_tight_at_a_constant_input(layer, shape):
    torch.manual_seed(0)
    model = nn.Sequential(layer).double().eval()
    certified = lk.lipschitz_bound(model, shape).upper
    gamma = 1.0 if getattr(layer, "weight", None) is None else float(layer.weight.detach().abs().max())
    assert certified == pytest.approx(gamma / math.sqrt(layer.eps), rel=1e-12)
    for seed in range(6):  # random inputs and nearly constant ones
        assert dense_norm(model, shape, seed) <= certified
        x = 1.0 + 1e-4 * torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        assert jacobian_norm_at(model, x) <= certified
    with torch.no_grad():
        if getattr(layer, "weight", None) is not None:
            layer.weight.fill_(1.0)
    assert jacobian_norm_at(model, torch.ones(shape, dtype=torch.float64)) == pytest.approx(
        lk.lipschitz_bound(model, shape).upper, rel=1e-9)  # gamma = 1, constant input: the bound is reached


def test_instance_norm_with_running_statistics_is_its_per_channel_scale():
    layer = nn.InstanceNorm2d(3, affine=True, track_running_stats=True)
    with torch.no_grad():
        layer.running_var.copy_(torch.tensor([0.5, 2.0, 0.1]))
        layer.weight.copy_(torch.tensor([1.0, -3.0, 0.2]))
    model = nn.Sequential(layer).double().eval()
    assert lk.lipschitz_bound(model, (3, 4, 4)).upper == pytest.approx(dense_norm(model, (3, 4, 4)), rel=1e-9)


def test_a_pre_norm_block_gets_a_bound_above_its_dense_jacobian():
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm, self.up, self.down = nn.LayerNorm(4), nn.Linear(4, 8), nn.Linear(8, 4)

        def forward(self, x):
            return x + self.down(nn.functional.gelu(self.up(self.norm(x))))

    model = Block().double().eval()
    dense = max(dense_norm(model, (3, 4), seed) for seed in range(8))
    assert lk.lipschitz_bound(model, (3, 4)).upper >= dense


@pytest.mark.parametrize("eps", [1e-4, None])
def test_rms_norm_is_bounded_and_reaches_the_bound_at_zero(eps):
    """RMSNorm's Jacobian at x = 0 is diag(gamma) / sqrt(eps): the bound, exactly (eps=None is
    the weight dtype's machine epsilon, as torch's forward uses)."""
    torch.manual_seed(0)
    layer = nn.RMSNorm(6, eps=eps)
    with torch.no_grad():
        layer.weight.normal_()
    model = nn.Sequential(layer).double().eval()
    certified = lk.lipschitz_bound(model, (6,)).upper
    for seed in range(6):
        assert dense_norm(model, (6,), seed) <= certified
    assert jacobian_norm_at(model, torch.zeros(6, dtype=torch.float64)) == pytest.approx(certified, rel=1e-9)
