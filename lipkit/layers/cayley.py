"""An exactly orthogonal convolution: the Cayley transform of a circular conv's symbol
(Trockman & Kolter, ICLR 2021, "Orthogonalizing convolutional layers with the Cayley
transform"; the idea only, written for lipkit).

A circular (wrap-around) convolution on an n x n input is block-diagonalized by the 2-D DFT:
at each frequency k it multiplies the channel vector by a c_out x c_in complex matrix, the
symbol V(k) (the FFT of the kernel zero-padded to n x n). The Cayley transform turns any
square matrix into a unitary one: with A = V - V^H (skew-Hermitian), Q = (I + A)^{-1} (I - A)
is unitary. Applying Q(k) at every frequency (rfft2 -> Q -> irfft2) is then an orthogonal
map of the whole input: every singular value 1, so the layer is 1-Lipschitz AND preserves
gradient norms (what GroupSort networks need, lipkit/layers/sort.py). V real makes
V(-k) = conj V(k), hence Q(-k) = conj Q(k) and a real output.

For c_out != c_in the symbol is padded to c = max(c_in, c_out) and Q cut to its first c_out
rows and c_in columns: full rows (orthonormal rows, norm 1) when c_out < c_in, full
columns (an isometry) when c_out > c_in.

Not a reparametrization of an ordinary Conv2d: Q(k) is a dense n x n filter, not a small
kernel, so this is a layer of its own with a fixed input size (circular padding, stride 1).
Its certified bound (lk.lipschitz_bound) is the exact max_k ||Q(k)||_2 in float64: 1 up to
rounding.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from ..norms.full_precision import full_precision


class CayleyConv2d(nn.Module):
    """Orthogonal circular convolution on (N, in_channels, size, size) inputs."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, size: int, bias: bool = True) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("kernel_size", kernel_size), ("size", size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CayleyConv2d: {name} must be an int >= 1, got {value!r}")
        if kernel_size > size:
            raise ValueError(f"CayleyConv2d: kernel_size={kernel_size} is larger than the input size={size}")
        self.in_channels, self.out_channels, self.kernel_size, self.size = in_channels, out_channels, kernel_size, size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def symbol(self, weight: Tensor | None = None) -> Tensor:
        """Q(k) for every rfft2 frequency: (size, size // 2 + 1, c_out, c_in), complex; of
        `weight` instead of self.weight if given (the bound evaluates it in float64)."""
        c = max(self.in_channels, self.out_channels)
        w = self.weight if weight is None else weight
        if self.in_channels != self.out_channels:  # pad the kernel's channel dims to c x c
            w = w.new_zeros(c, c, self.kernel_size, self.kernel_size).index_put(
                (torch.arange(self.out_channels, device=w.device)[:, None],
                 torch.arange(self.in_channels, device=w.device)[None, :]), w)
        v = torch.fft.rfft2(w, s=(self.size, self.size)).permute(2, 3, 0, 1)  # (n, n/2+1, c, c)
        a = v - v.mH
        eye = torch.eye(c, dtype=a.dtype, device=a.device)
        q = torch.linalg.solve(eye + a, eye - a)  # (I + A)^{-1} (I - A): unitary
        return q[..., :self.out_channels, :self.in_channels]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != (self.size, self.size):
            raise ValueError(f"CayleyConv2d expects inputs (N, {self.in_channels}, {self.size}, {self.size}), "
                             f"got {tuple(x.shape)}: its orthogonal filters are built for that size")
        x_hat = torch.fft.rfft2(x)  # (N, c_in, n, n/2+1)
        with full_precision(x.device.type):  # an orthogonal symbol needs it (norms/full_precision.py)
            symbol = self.symbol()
        y_hat = torch.einsum("hwoi,nihw->nohw", symbol.to(x_hat.dtype), x_hat)
        y = torch.fft.irfft2(y_hat, s=(self.size, self.size))
        return y if self.bias is None else y + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, size={self.size}, "
                f"bias={self.bias is not None}")
