"""Every activation's certified constant is at least its largest slope: the oracle is the largest
secant slope on a dense float64 grid (a lower bound on the true constant), for each layer class with a
registered bound and each functional form the tracer understands, with the parameters that
change the slope (negative alpha or slope included). Mish (slope up to 1.0885) was once
certified as 1-Lipschitz, SiLU as 1.0998 (its slope reaches 1.09984) and ELU(alpha < -1) as
1-Lipschitz: each bound was too small."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from bound_oracles import Applies

import lipkit as lk

GRID = torch.linspace(-60, 60, 600001, dtype=torch.float64)  # spacing 2e-4

LAYERS = [nn.ReLU(), nn.ReLU6(), nn.Tanh(), nn.Hardtanh(-2.0, 3.0), nn.Softplus(beta=3.0), nn.Softplus(beta=0.2),
          nn.Softsign(), nn.Sigmoid(), nn.SiLU(), nn.GELU(), nn.GELU(approximate="tanh"), nn.Mish(), nn.Hardswish(),
          nn.Hardsigmoid(), nn.LeakyReLU(0.2), nn.LeakyReLU(-3.0), nn.LeakyReLU(1.5), nn.ELU(), nn.ELU(2.0),
          nn.ELU(-2.0), nn.ELU(0.5), nn.SELU(), nn.CELU(0.5), nn.CELU(2.0), nn.LogSigmoid(), nn.Softshrink(0.7),
          nn.Tanhshrink(), nn.RReLU(-4.0, -2.0), nn.RReLU(0.1, 0.3)]

FUNCTIONS = {
    "F.relu": F.relu, "F.relu6": F.relu6, "torch.tanh": torch.tanh, "F.hardtanh(-2, 3)": lambda x: F.hardtanh(x, -2.0, 3.0),
    "F.softplus(beta=3)": lambda x: F.softplus(x, beta=3.0), "torch.sigmoid": torch.sigmoid, "F.silu": F.silu,
    "F.gelu": F.gelu, "F.gelu(tanh)": lambda x: F.gelu(x, approximate="tanh"), "F.mish": F.mish,
    "F.hardswish": F.hardswish, "F.hardsigmoid": F.hardsigmoid, "F.leaky_relu(x, -3)": lambda x: F.leaky_relu(x, -3.0),
    "F.leaky_relu(slope=1.5)": lambda x: F.leaky_relu(x, negative_slope=1.5),
    "F.elu(alpha=-2)": lambda x: F.elu(x, alpha=-2.0), "F.elu(x, 2)": lambda x: F.elu(x, 2.0),
    "x.relu()": lambda x: x.relu(), "x.tanh()": lambda x: x.tanh(), "x.sigmoid()": lambda x: x.sigmoid(),
    "F.selu": F.selu, "F.celu(alpha=0.5)": lambda x: F.celu(x, alpha=0.5), "F.logsigmoid": F.logsigmoid,
    "F.softsign": F.softsign, "F.tanhshrink": F.tanhshrink, "F.softshrink": F.softshrink, "torch.abs": torch.abs,
    "x.abs()": lambda x: x.abs(), "x.clamp(-1, 2)": lambda x: x.clamp(-1.0, 2.0), "torch.clip": lambda x: torch.clip(x, max=0.5),
    "x.clamp_min(0.1)": lambda x: x.clamp_min(0.1),
}




def largest_slope(fn) -> float:
    """The largest |secant slope| between neighbouring grid points: each is |f'| somewhere
    between them (mean value theorem), so each is a certified lower bound on the constant
    (autograd's slopes are not: hardsigmoid's float64 backward multiplies by a float32 1/6)."""
    y = fn(GRID)
    return float(((y[1:] - y[:-1]) / (GRID[1:] - GRID[:-1])).abs().max())


def check(model: nn.Module, fn) -> None:
    certified = lk.lipschitz_bound(model.eval(), (3,)).upper
    slope = largest_slope(fn)
    assert certified >= slope - 1e-9  # (float64 rounding of the secants: ~1e-11)
    assert certified - slope < 1e-3  # and not needlessly loose


@pytest.mark.parametrize("layer", LAYERS, ids=repr)
def test_layer_constant_is_at_least_the_largest_slope(layer):
    check(nn.Sequential(layer), layer)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_function_constant_is_at_least_the_largest_slope(name):
    check(Applies(FUNCTIONS[name]), FUNCTIONS[name])


@pytest.mark.parametrize("weight", [-2.5, 0.25, 1.7])
def test_prelu_constant_is_at_least_its_learned_slope(weight):
    layer = nn.PReLU(init=weight).double()
    with torch.no_grad():
        check(nn.Sequential(layer), layer)


def test_celu_with_negative_alpha_is_refused():
    """CELU's slope for x < 0 is e^(x / alpha): unbounded when alpha < 0."""
    with pytest.raises(lk.UnsupportedLayerError, match="unbounded slope"):
        lk.lipschitz_bound(nn.Sequential(nn.CELU(-1.0)).eval(), (3,))
