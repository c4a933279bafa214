"""Normalization by the input's own statistics (LayerNorm, GroupNorm, InstanceNorm without
running statistics, RMSNorm) has a global Lipschitz constant only thanks to eps, and it is large.

Per normalized group of n entries, z = (x - mean) / s with s = sqrt(var + eps) has Jacobian
(P - z z^T / n) / s, P = I - 1 1^T / n the centring projection; z is orthogonal to 1 and
|z|^2 / n = var / (var + eps) < 1, so P - z z^T / n has its eigenvalues in [0, 1] and the
Jacobian's norm is at most 1 / s <= 1 / sqrt(eps), reached as the group's variance goes to 0
(a constant input). The affine scale gamma multiplies it by at most max |gamma|, and distinct
groups are independent (a block-diagonal Jacobian). So the constant is max |gamma| / sqrt(eps),
at most (equality for gamma = 1 at a constant input): with eps = 1e-5 that is 316 max|gamma|
per layer, which is what a whole-network bound of a model with such layers honestly says.
InstanceNorm with running statistics in eval mode is a per-channel scale, like BatchNorm.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..norms.operators import batchnorm_scale
from .layer_rules import LayerRule, layer_bound

INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def self_normalizing_constant(weight: torch.Tensor | None, eps: float) -> float:
    """max|gamma| / sqrt(eps) (gamma = 1 without an affine weight): the module docstring says why.
    Also the rule of F.layer_norm / F.group_norm (functional_layers.py)."""
    return (1.0 if weight is None else float(weight.detach().abs().max())) / math.sqrt(eps)


@layer_bound.register(nn.LayerNorm)
@layer_bound.register(nn.GroupNorm)
def _self_normalizing(layer, input_shape, method):
    return LayerRule(self_normalizing_constant(getattr(layer, "weight", None), layer.eps),
                     "max|gamma| / sqrt(eps): the slope at a constant input")


@layer_bound.register(nn.RMSNorm)
def _rms_norm(layer, input_shape, method):
    # x / sqrt(mean(x^2) + eps): Jacobian (I - z z^T / n) / r with |z|^2 / n < 1, so <= 1 / sqrt(eps),
    # reached at x = 0. eps=None means the weight dtype's machine epsilon (torch's default).
    eps = layer.eps if layer.eps is not None else torch.finfo(_dtype(layer)).eps
    return LayerRule(self_normalizing_constant(layer.weight, eps), "max|gamma| / sqrt(eps): the slope at 0")


def _dtype(layer: nn.Module) -> torch.dtype:
    weight = getattr(layer, "weight", None)
    return weight.dtype if weight is not None else torch.get_default_dtype()


for _cls in INSTANCE_NORMS:

    @layer_bound.register(_cls)
    def _instance_norm(layer, input_shape, method):
        if layer.track_running_stats and layer.running_var is not None:  # eval: a per-channel scale
            return LayerRule(float(batchnorm_scale(layer).abs().max()), "max|gamma| / sqrt(running var + eps)")
        return _self_normalizing(layer, input_shape, method)
