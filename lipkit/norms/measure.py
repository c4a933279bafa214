"""Spectral norms: of a weight matrix (the SN-GAN convention) and of a layer's true operator.

spectral_norm(weight)            sigma of the weight reshaped to (shape[dim], -1): what
                                 torch / SN-GAN normalize; for a conv NOT the layer's norm.
operator_norm(layer, input_shape) the l2 operator norm of the layer's linear map at that
                                 input shape: exact, a certified upper bound (Gram
                                 iteration), or a power-iteration estimate from below.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from .conv_symbol import build_symbol, symbol_plan
from .dense_gram import certified_dense_norm, dense_gram_fits
from .full_precision import at_full_precision
from .linalg import (
    check_dense_size,
    dense_matrix,
    dense_top_singular_value,
    gram_iteration_bound,
    max_top_singular_value,
    power_iteration,
    start_vector,
)
from .operators import (
    AVGPOOL,
    BATCHNORM,
    CONV,
    CONV_TRANSPOSE,
    IDENTITY_LIKE,
    SUPPORTED,
    ConvGeometry,
    as_input_shape,
    avgpool_as_conv,
    batchnorm_scale,
    build_operator,
    check_input_shape,
)

METHODS = ("exact", "gram", "power")
POWER_MAX_ITER = 1000  # power method default: until converged to POWER_TOL, at most this
POWER_TOL = 1e-7


def check_weight(weight: Tensor, what: str = "weight", min_dim: int = 2) -> None:
    """Clear errors for weights no norm can be computed from."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(weight).__name__}")
    if not weight.is_floating_point():
        raise TypeError(f"{what} is a {weight.dtype} tensor: norms need real floating-point weights "
                        "(convert with .float())")
    if weight.dim() < min_dim:
        raise ValueError(
            f"{what} has shape {tuple(weight.shape)}: the spectral norm needs at least "
            f"{min_dim} dims (a matrix or a conv kernel); for a vector use its l2 norm"
        )
    if not bool(torch.isfinite(weight).all()):
        raise ValueError(f"{what} of shape {tuple(weight.shape)} contains NaN or inf values")


def weight_matrix(weight: Tensor, dim: int = 0) -> Tensor:
    """The weight as a matrix (shape[dim], prod(other dims)): the SN-GAN convention."""
    if dim != 0:
        weight = weight.movedim(dim, 0)  # only when needed: each op here runs at every SN forward
    return weight.flatten(1) if weight.dim() > 2 else weight


@at_full_precision
def spectral_norm(weight: Tensor, n_iter: int | None = None, *, dim: int = 0) -> Tensor:
    """Largest singular value of `weight` reshaped to (shape[dim], -1).

    n_iter=None: exact (SVD). n_iter=k: k rounds of power iteration (an estimate from
    below), from a fixed start. dim=1 for ConvTranspose weights (torch's convention).
    The result is differentiable with respect to `weight`.
    """
    check_weight(weight)
    if n_iter is not None and (not isinstance(n_iter, int) or n_iter < 1):
        raise ValueError(f"n_iter must be None (exact) or an int >= 1, got {n_iter!r}")
    if not -weight.dim() <= dim < weight.dim():
        raise ValueError(f"dim={dim} is out of range for a weight with {weight.dim()} dims")
    w = weight_matrix(weight, dim)
    if w.dtype in (torch.float16, torch.bfloat16):  # torch's SVD has no half kernels (it raised)
        w = w.float()
    if n_iter is None:
        return torch.linalg.matrix_norm(w, ord=2)
    with torch.no_grad():
        wd = w.detach()
        v0 = start_vector((1, w.shape[1]), w.dtype, w.device)
        _, u, v = power_iteration(lambda x: x @ wd.T, lambda y: y @ wd, v0, n_iter)
    return (u[0] @ w @ v[0]).abs()


@at_full_precision
def operator_norm(
    layer: nn.Module,
    input_shape,
    method: str = "exact",
    *,
    n_iter: int | None = None,
    dtype: torch.dtype = torch.float64,
    weight: Tensor | None = None,
) -> float:
    """The true l2 operator norm of `layer`'s linear map for inputs of `input_shape`.

    input_shape: one sample's shape, no batch dim, e.g. (C, H, W) for a Conv2d.
    method: "exact" - the exact value (FFT for circular "same" padding, else a dense SVD,
            which raises a ValueError above a size limit);
            "gram"  - a certified upper bound (the conv's frequency symbol, zero padding and
            stride handled exactly as an embedding; n_iter None: the limit of Gram iteration,
            certified by Cholesky (linalg.max_top_singular_value), or, for a small or
            reflect / replicate padded conv, the exact dense norm certified the same way
            (norms/dense_gram.py); n_iter: that many squarings of the symbol);
            "power" - power iteration on the operator: an estimate from below.
    n_iter: Gram squarings or power steps (None: until converged).
    weight: a tensor to use in place of layer.weight (e.g. a raw weight being normalized).
    Biases are ignored; BatchNorm must be in eval mode; a subclass is measured as its base's
    map whatever its forward does (what a bound registered for the subclass builds on).
    """
    weight = _check_arguments(layer, method, n_iter, weight)
    in_shape = as_input_shape(input_shape)  # checked once here; the helpers below trust it
    check_input_shape(layer, in_shape)
    if isinstance(layer, BATCHNORM):
        return float(batchnorm_scale(layer).abs().max())
    if isinstance(layer, nn.Linear) and method != "power":
        w = weight.detach().to(dtype)
        if method == "exact":
            # eigenvalues of the smaller Gram: 10x faster than matrix_norm's SVD (2048x8192:
            # 2.9 s vs 27.8 s, 1 thread), the same value in float64
            return dense_top_singular_value(w)
        return float(gram_iteration_bound(w, n_iter))
    if isinstance(layer, (*CONV, *CONV_TRANSPOSE)) and method != "power":
        if method == "gram":
            return conv_gram_norm(layer, in_shape, weight, n_iter, dtype)[0]
        sym = build_symbol(layer, in_shape, dtype, weight)
        if sym.exact:
            return float(torch.linalg.matrix_norm(sym.matrices, ord=2).max())

    op = build_operator(layer, in_shape, dtype, weight)  # probes the shape (a clear error if it does not fit)
    if isinstance(layer, IDENTITY_LIKE):
        return 1.0
    if method == "power":
        v0 = start_vector((1, *op.in_shape), dtype, _device(layer))
        steps, tol = (n_iter, None) if n_iter is not None else (POWER_MAX_ITER, POWER_TOL)
        with torch.no_grad():
            sigma, _, _ = power_iteration(op.forward, op.adjoint, v0, steps, tol)
        return float(sigma[0])
    if isinstance(layer, AVGPOOL) and method == "gram":
        conv = avgpool_as_conv(layer, op.in_shape[0])
        conv_bound = operator_norm(conv, in_shape, "gram", n_iter=n_iter) if conv else math.inf
        return min(_schur_bound(op), conv_bound)
    check_dense_size(op.in_dim, op.out_dim, f"{type(layer).__name__} at input {op.in_shape}")
    with torch.no_grad():
        return dense_top_singular_value(dense_matrix(op.forward, op.in_shape, dtype, _device(layer)))


def conv_gram_norm(layer: nn.Module, in_shape: tuple[int, ...], weight: Tensor | None = None,
                   n_iter: int | None = None, dtype: torch.dtype = torch.float64) -> tuple[float, bool]:
    """(certified bound, whether it is the exact dense norm) of a conv / conv-transpose at a
    checked in_shape: operator_norm's "gram". The frequency symbol's bound, exact for circular
    convs; where it is not and the operator is small (or reflect / replicate padded, where the
    symbol bound carries up to sqrt(2) per axis), the Cholesky-certified dense norm
    (dense_gram.py says why and what it costs). n_iter: that many Gram squarings of the
    symbol, nothing else; None: the iteration's limit, certified by Cholesky (faster)."""
    if n_iter is None:
        _, pad_norm, exact = symbol_plan(ConvGeometry.of(layer), in_shape, layer.kernel_size)  # no symbol yet
        if not exact:
            op = build_operator(layer, in_shape, torch.float64, weight)
            if dense_gram_fits(op, loose_padding=pad_norm > 1):
                return certified_dense_norm(op, _device(layer)), True
    sym = build_symbol(layer, in_shape, dtype, weight)
    if n_iter is not None:
        return sym.pad_norm * float(gram_iteration_bound(sym.matrices, n_iter).max()), False
    return sym.pad_norm * max_top_singular_value(sym.matrices), False


def _check_arguments(layer: nn.Module, method: str, n_iter: int | None, weight: Tensor | None) -> Tensor | None:
    """operator_norm's arguments other than the shape; returns the weight to use."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    if n_iter is not None and (not isinstance(n_iter, int) or n_iter < 1):
        raise ValueError(f"n_iter must be None or an int >= 1, got {n_iter!r}")
    if not isinstance(layer, SUPPORTED):
        raise TypeError(
            f"operator_norm does not support {type(layer).__name__}; supported: "
            + ", ".join(t.__name__ for t in SUPPORTED)
        )
    if weight is None and isinstance(getattr(layer, "weight", None), Tensor):
        weight = layer.weight
    if weight is not None and not isinstance(layer, BATCHNORM):
        check_weight(weight, f"{type(layer).__name__}.weight")
    return weight


def _schur_bound(op) -> float:
    """sqrt(max column sum * max row sum): a certified bound for a nonnegative matrix,
    read off two products with the all-ones vector (exact for non-overlapping pooling)."""
    assert op.nonnegative
    with torch.no_grad():
        ones_in = torch.ones((1, *op.in_shape), dtype=torch.float64)
        ones_out = torch.ones((1, *op.out_shape), dtype=torch.float64)
        row = float(op.forward(ones_in).max())
        col = float(op.adjoint(ones_out).max())
    return math.sqrt(row * col)


def _device(layer: nn.Module) -> torch.device:
    return next((p.device for p in layer.parameters()), torch.device("cpu"))
