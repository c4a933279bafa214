"""AOL: Almost-Orthogonal Lipschitz rescaling (Prach & Lampert, ECCV 2022).

W -> W D with D = diag(d), d_i = (sum_j |(W^T W)_ij|)^(-1/2): then ||W D|| <= 1 for ANY W
(Schur's test on D W^T W D, whose absolute row sums are <= 1), and W D is orthogonal when
W's columns already are. No iteration, no state: a certified 1-Lipschitz layer at the cost
of one small Gram per forward, differentiable.

Convolutions, directly (no reshape): the conv operator's Gram A^T A is, on an unbounded
domain, a conv with the kernel's autocorrelation P_ij[delta] = sum_o sum_u W[o,i,u]
W[o,j,u+delta] (within each group; a dilated kernel's autocorrelation has the same values
at dilated shifts, so dilation changes nothing), so the absolute row
sum of input channel i is r_i = sum_j sum_delta |P_ij[delta]|, and scaling input channel i
by r_i^(-1/2) makes the unbounded conv 1-Lipschitz. The layer on a finite input is that
conv after a zero extension and before a crop and a subsampling (zero padding, stride),
each of norm <= 1, so the bound holds at every input size, stride and dilation; circular
padding folds the Gram's rows (same row sums, triangle inequality). Reflect / replicate
padding copy input entries: their padding map has norm sqrt(most copies), and d is divided
by its worst case over input sizes (reflect: 3 copies per padded axis, replicate: 1 + pad),
so prefer zero padding. ConvTranspose is the adjoint of the conv with its weight: the same
rescaling on its input channels with the autocorrelation taken over the output channels.
"""
from __future__ import annotations

import math

import torch.nn as nn
from torch import Tensor

from ..norms.operators import CONV, CONV_FN, CONV_TRANSPOSE, ConvGeometry
from .base import Constraint, as_dtype, autocast_off, compute_dtype

EPS = 1e-12  # an all-zero input channel: its column stays zero instead of 0 * inf


def _padding_factor(geometry: ConvGeometry, kernel_size: tuple[int, ...]) -> float:
    """Worst case over input sizes of ||padding map||: sqrt(most copies of one entry)."""
    if geometry.padding_mode == "zeros" or geometry.transposed:
        return 1.0
    copies = 1
    for (lo, hi), k, d in zip(geometry.axis_pads, kernel_size, geometry.dilation):
        if geometry.padding_mode == "circular" and lo + hi <= d * (k - 1):
            continue  # a shifted circular conv, cropped: no copy reaches one output twice
        if geometry.padding_mode == "replicate":
            copies *= 1 + lo + hi  # every pad entry may copy the same edge entry
        else:  # reflect / circular: each side copies distinct entries, so <= 1 + one per side
            copies *= 1 + (lo > 0) + (hi > 0)
    return math.sqrt(copies)


def _as_conv_layout(w: Tensor, groups: int) -> Tensor:
    """A ConvTranspose weight (in, out/g, k..) as the conv weight (g*out/g, in/g, k..) whose
    input channels are the transposed layer's input channels (its adjoint's)."""
    c_in, out_g, *k = w.shape
    in_g = c_in // groups
    return w.view(groups, in_g, out_g, *k).transpose(1, 2).reshape(groups * out_g, in_g, *k)


def conv_row_sums(w: Tensor, groups: int) -> Tensor:
    """r_i = sum_j sum_delta |P_ij[delta]| for every input channel i of the conv weight w
    (out, in/g, k..), in the layer's input-channel order."""
    c_out, in_g, *k = w.shape
    nd = len(k)
    out_g = c_out // groups
    # Batch b = input channel b of each group, channels = the group's output channels: a
    # grouped conv of w with itself gives P_g[b, j, delta] at output channel g * in_g + j.
    x = w.transpose(0, 1)  # (in/g, out, k..)
    kernel = w.view(groups, out_g, in_g, *k).transpose(1, 2).reshape(groups * in_g, out_g, *k)
    autocorr = CONV_FN[nd](x, kernel, padding=[kk - 1 for kk in k], groups=groups)
    sums = autocorr.abs().view(in_g, groups, in_g, -1).sum(dim=(2, 3))  # (in/g, groups)
    return sums.T.reshape(-1)


class AOLRescaling(Constraint):
    """W -> W D: every input channel (column) scaled so the layer's map has norm <= bound."""

    method = "aol"

    def __init__(self, layer: nn.Module, *, bound: float = 1.0) -> None:
        super().__init__()
        self.bound = float(bound)
        self.geometry = ConvGeometry.of(layer) if isinstance(layer, (*CONV, *CONV_TRANSPOSE)) else None
        self.factor = self.bound
        if self.geometry is not None:
            self.factor /= _padding_factor(self.geometry, tuple(layer.kernel_size))

    def input_scale(self, w: Tensor) -> Tensor:
        """d for weight w, shaped to multiply it."""
        g = self.geometry
        if g is None:  # Linear (out, in): column sums of |W^T W|
            return ((w.T @ w).abs().sum(dim=1).clamp_min(EPS).rsqrt() * self.factor)[None, :]
        conv_w = _as_conv_layout(w, g.groups) if g.transposed else w
        d = conv_row_sums(conv_w, g.groups).clamp_min(EPS).rsqrt() * self.factor
        trailing = (1,) * (w.dim() - 2)
        if g.transposed:  # the layer's input channels are dim 0
            return d.view(-1, 1, *trailing)
        out, in_g = w.shape[:2]
        return d.view(g.groups, 1, in_g).expand(g.groups, out // g.groups, in_g).reshape(out, in_g, *trailing)

    def constrained(self, raw: Tensor) -> Tensor:
        with autocast_off(raw.device.type):
            w = as_dtype(raw, compute_dtype(raw.dtype))
            return as_dtype(w * self.input_scale(w), raw.dtype)

    def options(self) -> dict:
        return {"bound": self.bound}

