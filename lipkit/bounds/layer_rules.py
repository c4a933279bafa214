"""Certified Lipschitz constants of single layers, dispatched on the layer's type.

Extend it for your own layer by registering one function, no subclassing:

    @lk.register_layer_bound(MyLayer)
    def _(layer, input_shape, method):
        return LayerRule(bound=..., how="why this is a bound")

`input_shape` is one sample's input shape (no batch dim); `method` is "gram" or "exact".
Parametrized (constrained) layers dispatch to their base class and see the constrained
weight. Bounds are for the model in eval mode (BatchNorm uses its running statistics).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import CayleyConv2d, GroupSort
from ..norms.linalg import certified_top_singular_value
from ..norms.measure import conv_gram_norm, operator_norm
from ..norms.operators import BATCHNORM, CONV, CONV_TRANSPOSE, IDENTITY_LIKE, as_input_shape
from ..overrides import known_base, overridden_base
from .copying import MODULES as COPYING
from .copying import module_constant
from .pooling import adaptive_avg_constant, adaptive_max_constant, pooled_extent


class UnsupportedLayerError(TypeError):
    """A layer with no registered Lipschitz bound."""


@dataclass(frozen=True)
class LayerRule:
    bound: float  # certified Lipschitz constant of the layer (l2 -> l2)
    how: str  # the method or reason, shown in the per-layer table


@functools.singledispatch
def layer_bound(layer: nn.Module, input_shape: tuple[int, ...], method: str) -> LayerRule:
    name = type(layer).__name__
    raise UnsupportedLayerError(
        f"no Lipschitz bound is registered for layer {name} ({layer}). Register one:\n"
        f"    @lipkit.register_layer_bound({name})\n"
        "    def _(layer, input_shape, method):\n"
        "        return lipkit.LayerRule(bound=..., how='...')"
    )


def register_layer_bound(cls: type):
    """Decorator: register a function (layer, input_shape, method) -> LayerRule for `cls`."""
    return layer_bound.register(cls)


def rule_class(cls: type) -> type | None:
    """The nearest class in cls's MRO with a registered rule (None: none is registered)."""
    return known_base(cls, layer_bound.registry)


def has_layer_bound(cls: type) -> bool:
    """Whether a registered rule describes cls's forward (its own, or an ancestor's that cls
    does not override: lipkit/overrides.py)."""
    return rule_class(cls) is not None and overridden_base(cls, layer_bound.registry) is None


def unbounded_kind(cls: type) -> str:
    """How an unsupported layer type is named in the error: its name, and why when it
    inherits a rule that does not apply."""
    base = overridden_base(cls, layer_bound.registry)
    return cls.__name__ + (f" (overrides {base.__name__}.forward, so {base.__name__}'s bound does not describe it)"
                           if base is not None else "")


@layer_bound.register(nn.Linear)
@layer_bound.register(nn.Conv1d)
@layer_bound.register(nn.Conv2d)
@layer_bound.register(nn.Conv3d)
@layer_bound.register(nn.ConvTranspose1d)
@layer_bound.register(nn.ConvTranspose2d)
@layer_bound.register(nn.ConvTranspose3d)
def _linear_layer(layer, input_shape, method):
    return linear_layer_rule(layer, input_shape, method)


@layer_bound.register(nn.AvgPool1d)
@layer_bound.register(nn.AvgPool2d)
@layer_bound.register(nn.AvgPool3d)
def _avg_pool(layer, input_shape, method):
    # A sample without a channel dim ((H, W) into AvgPool2d) is pooled by torch as one
    # unbatched image per sample: bounded as one channel (the norm is per channel anyway).
    spatial = pooled_extent(type(layer).__name__, input_shape)
    return linear_layer_rule(layer, input_shape if len(input_shape) > len(spatial) else (1, *spatial), method)


def linear_layer_rule(layer: nn.Module, input_shape: tuple[int, ...], method: str,
                      weight: torch.Tensor | None = None) -> LayerRule:
    """The rule of a Linear / conv / avg pooling layer; `weight` replaces layer.weight (a
    BatchNorm folded into it: bounds/merges.py)."""
    if isinstance(layer, nn.Linear):
        # A dense matrix's exact norm is cheap; under "gram" certified from above by Cholesky.
        if method == "exact":
            return LayerRule(operator_norm(layer, input_shape, "exact", weight=weight), "exact (SVD)")
        w = layer.weight if weight is None else weight
        return LayerRule(certified_top_singular_value(w.detach()), "exact (dense, certified)")
    if method == "gram" and isinstance(layer, (*CONV, *CONV_TRANSPOSE)):
        # On small inputs (and with reflect / replicate padding) the circular relaxation behind
        # the symbol bound is loose (+10% at 4x4, +50% at 2x2 for 3x3 kernels:
        # benchmarks/bench_norms.py) while the dense norm is cheap: conv_gram_norm takes it,
        # certified by Cholesky.
        value, dense = conv_gram_norm(layer, as_input_shape(input_shape), weight)
        return LayerRule(value, "exact operator norm (dense, certified)" if dense else "Gram bound, true operator")
    value = operator_norm(layer, input_shape, method, weight=weight)
    if isinstance(layer, (*CONV, *CONV_TRANSPOSE)):
        return LayerRule(value, "exact operator norm")
    return LayerRule(value, "exact" if method == "exact" else "pooling bound")


for _bn in BATCHNORM:

    @layer_bound.register(_bn)
    def _batchnorm(layer, input_shape, method):
        return LayerRule(operator_norm(layer, input_shape), "max|gamma|/sqrt(var+eps)")


def constant_rule(value: float, how: str):
    """A rule giving `value` whatever the layer's shape."""
    return lambda layer, input_shape, method: LayerRule(value, how)


# (elementwise activations: activations.py)
# (FullSort is a GroupSort subclass: the same rule)
layer_bound.register(GroupSort)(constant_rule(1.0, "sorting: a permutation, 1-Lipschitz and norm-preserving"))


def _softmax_dim(layer, input_shape) -> int:
    """The (batched) dim a Softmax / LogSoftmax normalizes; refused when it is the batch's."""
    ndim = len(input_shape) + 1  # with the batch dim
    dim = layer.dim if layer.dim is not None else (0 if ndim in (0, 1, 3) else 1)  # torch's implicit choice
    if dim % ndim == 0:
        chosen = "; dim=None chose it" if layer.dim is None else ""
        raise UnsupportedLayerError(f"{layer}: softmax over dim 0 (the batch{chosen}) mixes the samples of a batch: "
                                    "give dim= a dimension of one sample")
    return dim % ndim


@layer_bound.register(nn.Softmax)
@layer_bound.register(nn.Softmin)  # softmax(-x): the same Jacobian up to sign
def _softmax(layer, input_shape, method):
    _softmax_dim(layer, input_shape)
    return LayerRule(1.0, "softmax is 1-Lipschitz (||diag(p) - p p^T|| <= max p)")


@layer_bound.register(nn.Softmax2d)
def _softmax2d(layer, input_shape, method):
    # softmax over dim -3: the channels of a (C, H, W) sample; fed (B, H, W) it would take
    # dim -3 = the batch
    if len(input_shape) != 3:
        raise UnsupportedLayerError(f"{layer}: on samples of shape {tuple(input_shape)} its softmax over dim -3 "
                                    "runs over the batch (it needs (C, H, W) samples)")
    return LayerRule(1.0, "softmax over channels, 1-Lipschitz")


@layer_bound.register(nn.LogSoftmax)
def _log_softmax(layer, input_shape, method):
    # Jacobian I - 1 p^T (p = softmax(x)): its norm grows to sqrt(n) as p tends to a vertex
    # of the simplex (at p = e_1 the Gram has eigenvalues n and 0 on span{e_1, 1}, 1 elsewhere),
    # and the norm is convex in p, so sqrt(n) is its supremum over inputs: the exact constant.
    n = input_shape[_softmax_dim(layer, input_shape) - 1]
    return LayerRule(math.sqrt(n), f"log-softmax over {n} entries, sup ||I - 1 p^T|| = sqrt({n})")


@layer_bound.register(CayleyConv2d)
def _cayley(layer, input_shape, method):
    # orthogonal by construction; certified as the exact max over frequencies of ||Q(k)||_2
    # in float64, so float32 rounding of the unitary blocks is counted, not assumed away
    with torch.no_grad():
        q = layer.symbol(layer.weight.detach().double())
    return LayerRule(float(torch.linalg.matrix_norm(q, ord=2).max()), "orthogonal (Cayley), exact per-frequency norm")


for _cls in (*IDENTITY_LIKE, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d):
    layer_bound.register(_cls)(constant_rule(1.0, "identity (eval)"))


def _copying(layer, input_shape, method):
    try:
        return LayerRule(module_constant(layer, tuple(input_shape)), "exact (sqrt of the most copies of one entry)")
    except ValueError as err:
        raise UnsupportedLayerError(str(err)) from None


for _cls in COPYING:
    layer_bound.register(_cls)(_copying)
# Rules cheap enough for the dry walk, which runs them to list their refusals before any norm
# is computed (an unbounded interpolation mode, softmax over the batch).
DRY_RUN_RULES = (*COPYING, nn.Softmax, nn.Softmin, nn.Softmax2d, nn.LogSoftmax)


@layer_bound.register(nn.AdaptiveAvgPool1d)
@layer_bound.register(nn.AdaptiveAvgPool2d)
@layer_bound.register(nn.AdaptiveAvgPool3d)
def _adaptive_avg(layer, input_shape, method):
    spatial = pooled_extent(type(layer).__name__, input_shape)
    return LayerRule(adaptive_avg_constant(spatial, layer.output_size), "exact (separable average)")


@layer_bound.register(nn.AdaptiveMaxPool1d)
@layer_bound.register(nn.AdaptiveMaxPool2d)
@layer_bound.register(nn.AdaptiveMaxPool3d)
def _adaptive_max(layer, input_shape, method):
    if layer.return_indices:
        raise UnsupportedLayerError(f"{layer}: return_indices=True returns indices, which have no Lipschitz bound")
    spatial = pooled_extent(type(layer).__name__, input_shape)
    return LayerRule(adaptive_max_constant(spatial, layer.output_size), "max pool, sqrt(window overlap)")


@layer_bound.register(nn.MaxPool1d)
@layer_bound.register(nn.MaxPool2d)
@layer_bound.register(nn.MaxPool3d)
def _maxpool(layer, input_shape, method):
    # |max_w x - max_w y| <= max_w |x - y|, so ||pool x - pool y||^2 <= sum over windows of
    # ||x - y||^2 restricted to the window <= (most windows sharing one entry) * ||x - y||^2.
    # Count the windows covering each entry with a sum pool of ones.
    spatial = pooled_extent(type(layer).__name__, input_shape)
    nd = len(spatial)
    if layer.dilation not in (1, (1,) * nd):
        raise UnsupportedLayerError(f"{layer}: dilated max pooling has no registered bound")
    k, s, p = (nn.modules.utils._ntuple(nd)(a) for a in (layer.kernel_size, layer.stride, layer.padding))
    if nd == 1:  # avg_pool1d has no divisor_override: count on a 2-D view instead
        k, s, p, spatial, nd = (1, *k), (1, *s), (0, *p), (1, *spatial), 2
    sum_pool = {2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    cover = torch.ones((1, 1, *spatial), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        out = sum_pool(cover, k, s, p, layer.ceil_mode, True, 1)
        (count,) = torch.autograd.grad(out.sum(), cover)
    return LayerRule(math.sqrt(float(count.max())), "max pool, sqrt(window overlap)")
