"""Elementwise activations: each is as Lipschitz as its largest slope, max |f'|.

The module rules are registered here; function_rules.py reads FUNCTIONS (and
function_constant) for the functional and method forms, segments.py the slope ranges. Constants that are not exact are
rounded UP; tests/test_bounds_activations.py checks every one against the largest secant
slope on a dense grid (each secant slope is f' somewhere: a certified lower bound). Until
2026-12-01 Mish was certified as 1.0 and SiLU as 1.0998 (rounded down), and ELU with
alpha < -1 as 1: bounds too small by up to 8.8% per Mish. Step functions (Threshold,
Hardshrink) have no constant and no rule.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layer_rules import LayerRule, UnsupportedLayerError, constant_rule, layer_bound

MISH_SLOPE = 1.0885  # 1.08849816 at x = 1.4906
SILU_SLOPE = 1.0999  # 1.09983932 at x = 2.3994
GELU_SLOPE = 1.1290  # 1.12890 (exact erf form) and 1.128993 (tanh form) at x = 1.414
SELU_SLOPE = 1.7581  # scale * alpha = 1.05070099 * 1.67326324 = 1.75809934, the slope at 0-

SLOPE_ONE = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Softsign, nn.LogSigmoid, nn.Softshrink,
             nn.Tanhshrink)
MAX_SLOPES = {nn.Mish: MISH_SLOPE, nn.Sigmoid: 0.25, nn.SiLU: SILU_SLOPE, nn.GELU: GELU_SLOPE, nn.Hardswish: 1.5,
          nn.Hardsigmoid: 1 / 6, nn.SELU: SELU_SLOPE}


for _cls in SLOPE_ONE:
    layer_bound.register(_cls)(constant_rule(1.0, "activation, |f'| <= 1"))
for _cls, _slope in MAX_SLOPES.items():
    layer_bound.register(_cls)(constant_rule(_slope, f"{_cls.__name__.lower()}, max |f'| = {_slope:.4g}"))


@layer_bound.register(nn.LeakyReLU)
def _leaky(layer, input_shape, method):
    return LayerRule(max(1.0, abs(layer.negative_slope)), "leaky relu, max(1, |slope|)")


@layer_bound.register(nn.PReLU)
def _prelu(layer, input_shape, method):  # the learned slopes as they are now
    return LayerRule(max(1.0, float(layer.weight.detach().abs().max())), "prelu, max(1, |slopes|)")


@layer_bound.register(nn.RReLU)
def _rrelu(layer, input_shape, method):  # bounds are of the eval network, where its slope is (lower + upper) / 2
    return LayerRule(max(1.0, abs(layer.lower + layer.upper) / 2), "rrelu (eval), max(1, |lower + upper| / 2)")


@layer_bound.register(nn.ELU)
def _elu(layer, input_shape, method):  # for x < 0 the slope is alpha e^x: |alpha| bounds it, whatever its sign
    return LayerRule(max(1.0, abs(layer.alpha)), "elu, max(1, |alpha|)")


@layer_bound.register(nn.CELU)
def _celu(layer, input_shape, method):
    return LayerRule(celu_constant(layer.alpha), "celu, slope e^(x / alpha) <= 1")


def celu_constant(alpha: float) -> float:
    """For x < 0 CELU's slope is e^(x / alpha): at most 1 when alpha > 0, unbounded when alpha < 0."""
    if alpha <= 0:
        raise UnsupportedLayerError(f"CELU with alpha={alpha} <= 0 has an unbounded slope (e^(x / alpha) for x < 0)")
    return 1.0


# Functional and method forms: their constants, None where an argument sets it (function_constant)
FUNCTIONS = {
    F.relu: 1.0, torch.relu: 1.0, "relu": 1.0, "relu_": 1.0, torch.tanh: 1.0, "tanh": 1.0, F.tanh: 1.0,
    torch.sigmoid: 0.25, "sigmoid": 0.25, F.sigmoid: 0.25, F.elu: None, F.leaky_relu: None, F.celu: None,
    F.gelu: GELU_SLOPE, F.silu: SILU_SLOPE, F.mish: MISH_SLOPE, F.selu: SELU_SLOPE, F.softplus: 1.0, F.hardtanh: 1.0,
    F.relu6: 1.0, F.hardswish: 1.5, F.hardsigmoid: 1 / 6, F.softsign: 1.0, F.logsigmoid: 1.0, F.tanhshrink: 1.0,
    F.softshrink: 1.0, torch.abs: 1.0, "abs": 1.0, "abs_": 1.0, torch.clamp: 1.0, torch.clip: 1.0, "clamp": 1.0,
    "clamp_": 1.0, "clip": 1.0, "clamp_min": 1.0, "clamp_max": 1.0,
}


def function_constant(fn, args: tuple, kwargs: dict) -> float:
    """The constant of activation call fn(x, *args, **kwargs) (fn a key of FUNCTIONS)."""
    if fn is F.leaky_relu:
        return max(1.0, abs(kwargs.get("negative_slope", args[0] if args else 0.01)))
    if fn is F.elu:  # slope alpha e^x for x < 0
        return max(1.0, abs(kwargs.get("alpha", args[0] if args else 1.0)))
    if fn is F.celu:
        return celu_constant(kwargs.get("alpha", args[0] if args else 1.0))
    return FUNCTIONS[fn]


# The range [a, b] of each activation's derivative, for the segment expansion (segments.py;
# outward-rounded where not exact; tests/test_bounds_segments.py checks each on a dense grid).
SLOPE_RANGES: dict[type, Callable[[nn.Module], tuple[float, float]]] = {
    nn.ReLU: lambda m: (0.0, 1.0), nn.ReLU6: lambda m: (0.0, 1.0), nn.Tanh: lambda m: (0.0, 1.0),
    nn.Hardtanh: lambda m: (0.0, 1.0), nn.Softplus: lambda m: (0.0, 1.0), nn.Softsign: lambda m: (0.0, 1.0),
    nn.Sigmoid: lambda m: (0.0, 0.25),
    nn.LeakyReLU: lambda m: (min(m.negative_slope, 1.0), max(m.negative_slope, 1.0)),
    nn.ELU: lambda m: (min(0.0, m.alpha), max(1.0, m.alpha)),
    nn.SiLU: lambda m: (-0.0999, 1.0999), nn.GELU: lambda m: (-0.1291, 1.1291),
    nn.Mish: lambda m: (-0.1126, MISH_SLOPE), nn.Hardswish: lambda m: (-0.5, 1.5), nn.Hardsigmoid: lambda m: (0.0, 0.1667),
    nn.SELU: lambda m: (0.0, SELU_SLOPE), nn.CELU: lambda m: (0.0, celu_constant(m.alpha)),
    nn.LogSigmoid: lambda m: (0.0, 1.0), nn.Softshrink: lambda m: (0.0, 1.0), nn.Tanhshrink: lambda m: (0.0, 1.0),
    nn.PReLU: lambda m: (min(1.0, float(m.weight.detach().min())), max(1.0, float(m.weight.detach().max()))),
    nn.RReLU: lambda m: (min(1.0, (m.lower + m.upper) / 2), max(1.0, (m.lower + m.upper) / 2)),  # eval
}
FUNCTION_SLOPE_RANGES = {torch.relu: (0.0, 1.0), F.relu: (0.0, 1.0), torch.tanh: (0.0, 1.0), torch.sigmoid: (0.0, 0.25),
                         "relu": (0.0, 1.0), "tanh": (0.0, 1.0), "sigmoid": (0.0, 0.25)}  # (call_method names)
