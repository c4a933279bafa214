"""A convolution's frequency symbol: the per-frequency matrices whose norms give its norm.

A circular convolution is block-diagonalized by the DFT (Sedghi et al. 2019): its singular
values are those of the small (C_out x C_in) matrices K_hat(w), one per frequency w.
Stride s is handled exactly by a polyphase (space-to-depth) rewrite: a stride-s conv of a
C_in-channel signal of size n equals a stride-1 conv of the (C_in * s^d)-channel signal
X[t, r] = x[t*s + r] of size n/s, with kernel K'[q, r] = K[q*s + r].

Other paddings reduce to that case through two facts:
- a padded convolution is pad(x) followed by a VALID convolution, and a valid
  convolution is a crop of the circular one on the same domain, so
  ||layer|| <= ||pad|| * ||circular conv on the padded domain||; for zero padding an
  even smaller cyclic domain works (see conv_symbol);
- ||pad|| = 1 for zero padding (an embedding), and sqrt(the largest number of copies of
  one input entry) for circular / reflect / replicate padding.
When the padding is circular and "same" (total 2p = d(k-1)) and s divides n, the layer IS
a (shifted) circular conv and the symbol gives its exact norm.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .operators import CONV, CONV_TRANSPOSE, ConvGeometry, as_input_shape, check_input_shape


@dataclass(frozen=True)
class ConvSymbol:
    matrices: Tensor  # (n_freq, C_out, C_in * prod(stride)), complex
    pad_norm: float  # operator norm of the padding map in front of the circular conv
    exact: bool  # True: ||layer|| = max_w sigma_max(matrices[w]); else an upper bound


def dense_kernel(weight: Tensor, groups: int, dilation) -> Tensor:
    """(C_out, C_in, *k_eff) kernel with groups as a block-diagonal and dilation as zeros."""
    c_out, c_in_g, *k = weight.shape
    k_eff = [d * (kk - 1) + 1 for d, kk in zip(dilation, k)]
    dilated = weight.new_zeros(c_out, c_in_g, *k_eff)
    dilated[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in dilation)] = weight
    if groups == 1:
        return dilated
    full = weight.new_zeros(c_out, c_in_g * groups, *k_eff)
    out_g = c_out // groups
    for g in range(groups):
        full[g * out_g:(g + 1) * out_g, g * c_in_g:(g + 1) * c_in_g] = dilated[g * out_g:(g + 1) * out_g]
    return full


def pad_operator_norm(sizes, pads, mode: str) -> float:
    """||pad|| as a linear map: sqrt of the most copies any one input entry gets."""
    if mode == "zeros":
        return 1.0
    copies = 1
    for n, (lo, hi) in zip(sizes, pads):
        if lo == hi == 0:
            continue
        idx = torch.arange(n, dtype=torch.float64).view(1, 1, n)
        padded = F.pad(idx, (lo, hi), mode=mode).long().flatten()
        copies *= int(torch.bincount(padded, minlength=n).max())
    return math.sqrt(copies)


def circular_symbol(kernel: Tensor, stride, sizes) -> Tensor:
    """Per-frequency matrices of the stride-`stride` circular conv on a domain of `sizes`.

    The domain is first zero-extended to a multiple of the stride (an embedding, so the
    norm can only grow and the result stays a bound). Frequencies w and -w have conjugate
    matrices (real kernel), so the half spectrum of rfftn is enough.
    """
    c_out, c_in = kernel.shape[:2]
    nd = kernel.dim() - 2
    blocks = [math.ceil(n / s) for n, s in zip(sizes, stride)]
    taps = [math.ceil(k / s) for k, s in zip(kernel.shape[2:], stride)]
    # Polyphase: split every tap index j = q*s + r and move the phases r into channels.
    pad = []
    for k, s, q in zip(reversed(kernel.shape[2:]), reversed(stride), reversed(taps)):
        pad += [0, q * s - k]
    k = F.pad(kernel, pad)
    shape = [c_out, c_in]
    for q, s in zip(taps, stride):
        shape += [q, s]
    k = k.reshape(shape)
    perm = [0, 1] + [3 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)]
    k = k.permute(perm).reshape(c_out, c_in * math.prod(stride), *taps)
    # A kernel longer than the domain wraps around: fold its taps modulo the domain size.
    for axis, (q, n) in enumerate(zip(taps, blocks)):
        if q > n:
            k = F.pad(k.movedim(2 + axis, -1), (0, -q % n)).unflatten(-1, (-1, n)).sum(-2)
            k = k.movedim(-1, 2 + axis)
    if use_direct_dft(k.shape[2:], blocks):
        return _direct_dft(k, blocks)
    sym = torch.fft.rfftn(k, s=blocks, dim=tuple(range(2, 2 + nd)))
    return sym.flatten(2).permute(2, 0, 1)


def use_direct_dft(taps, blocks) -> bool:
    """A few taps on a large domain: a DFT by matmul (its cost ~ taps per frequency against the
    FFT's ~log(domain)) is 3x faster than rfftn of the zero-padded kernel, and contiguous."""
    return math.prod(taps) <= 2 * math.log2(max(2, math.prod(blocks))) + 8


def _direct_dft(k: Tensor, blocks: list[int]) -> Tensor:
    """rfftn(k, s=blocks) over the spatial dims, as (frequencies, C_out, C_in) in rfftn's
    order: sum over the taps t of k[..., t] exp(-2 pi i <t, f / n>), one matmul with the
    phases (taps, frequencies), built per axis in float64 (t f reduced mod n first)."""
    c_out, c_in = k.shape[:2]
    phases = torch.ones(1, 1, dtype=torch.complex128, device=k.device)
    for axis, (q, n) in enumerate(zip(k.shape[2:], blocks)):
        freqs = n // 2 + 1 if axis == len(blocks) - 1 else n  # rfftn halves the last axis
        t = torch.arange(q, dtype=torch.float64, device=k.device)[:, None]
        f = torch.arange(freqs, dtype=torch.float64, device=k.device)[None, :]
        axis_phases = torch.polar(torch.ones_like(t * f), -2 * math.pi * ((t * f) % n) / n)
        phases = (phases[:, None, :, None] * axis_phases[None, :, None, :]).reshape(
            phases.shape[0] * q, phases.shape[1] * freqs)
    complex_dtype = torch.complex128 if k.dtype == torch.float64 else torch.complex64
    taps = k.reshape(c_out * c_in, -1).to(complex_dtype)
    return (phases.to(complex_dtype).T @ taps.T).reshape(-1, c_out, c_in)


def symbol_plan(geometry: ConvGeometry, in_shape, kernel_size) -> tuple[list[int], float, bool]:
    """(cyclic domain sizes, ||padding map||, exact) of a conv at `in_shape` (no batch dim).

    The one place that decides how a layer embeds into a circular conv (see the module
    docstring); conv_symbol and the certified spectral constraint both use it.
    """
    spatial = tuple(in_shape[1:])
    if geometry.transposed:
        # conv_transpose is the adjoint of the conv with the same weight, stride, padding,
        # dilation and groups acting on the transposed conv's OUTPUT: same norm.
        out = [
            (n - 1) * s - 2 * p + d * (k - 1) + op + 1
            for n, s, p, d, k, op in zip(spatial, geometry.stride, geometry.padding,
                                         geometry.dilation, kernel_size, geometry.output_padding)
        ]
        return [n + p for n, p in zip(out, geometry.padding)], 1.0, False  # as zero padding below
    pads = geometry.axis_pads
    k_eff = [d * (k - 1) + 1 for d, k in zip(geometry.dilation, kernel_size)]
    same = all(lo + hi == k - 1 for (lo, hi), k in zip(pads, k_eff))
    divisible = all(n % s == 0 for n, s in zip(spatial, geometry.stride))
    if geometry.padding_mode == "circular" and same and divisible:
        # Circular "same" padding: a cyclic shift (a permutation) then a circular conv.
        return list(spatial), 1.0, True
    if geometry.padding_mode == "zeros":
        # The padded input is x at [lo, lo+n) with zeros around it. On a cyclic domain of
        # n + max(lo, hi) the data does not overlap itself and every index the valid conv
        # reads past the end wraps onto the left zeros: the layer is a crop of that
        # circular conv restricted to embedded inputs. (n + lo + hi would also be valid,
        # but a smaller domain samples fewer frequencies: a tighter bound.)
        return [n + max(lo, hi) for n, (lo, hi) in zip(spatial, pads)], 1.0, False
    sizes = [n + lo + hi for n, (lo, hi) in zip(spatial, pads)]
    return sizes, pad_operator_norm(spatial, pads, geometry.padding_mode), False


def residue_sizes(n: int, n_out: int, lo: int, k: int, d: int) -> list[int]:
    """Cyclic domain sizes for the undilated convs a stride-1, dilation-d, zero-padded conv
    splits into along one axis (input n, output n_out, left padding lo, k taps).

    Output i reads inputs i + d*j - lo, all in the residue class r = (i - lo) mod d: the layer
    is a direct sum over r of undilated convs on the subgrids x[r + d*s], so its norm is the
    largest of theirs (exactly). Sub-conv r reads x_r[t + j + q] for its outputs t (q from
    the first output of the class), a valid conv of x_r zero-padded by (lo_r, hi_r); as in
    symbol_plan, a cyclic domain of n_r + max(lo_r, hi_r) embeds it. Without this split the
    dilated kernel's symbol is sampled on the whole grid: +12.5% at 10x10 (issue 11)."""
    sizes = set()
    for r in range(d):
        n_r = -(-(n - r) // d)  # inputs in class r
        i0 = (r + lo) % d  # the first output of the class
        m_r = -(-(n_out - i0) // d) if n_out > i0 else 0
        if n_r <= 0 or m_r <= 0:
            continue
        q = (i0 - lo - r) // d
        lo_r, hi_r = max(0, -q), max(0, (m_r - 1) + (k - 1) + q - (n_r - 1))
        sizes.add(n_r + max(lo_r, hi_r))
    return sorted(sizes)


def bound_pieces(geometry: ConvGeometry, in_shape, kernel_size) -> tuple[list[list[int]], float, tuple[int, ...]]:
    """(cyclic domains, ||padding map||, kernel dilation) for a certified bound: the max of
    the circular symbol's norms over every domain, with the kernel dilated as returned.
    A zero-padded axis with dilation and stride 1 is split into residue subgrids
    (residue_sizes: its kernel then is undilated); every other axis keeps symbol_plan's
    single domain."""
    sizes, pad_norm, exact = symbol_plan(geometry, in_shape, kernel_size)
    dilation = tuple(geometry.dilation)
    if exact or geometry.padding_mode != "zeros" or all(d == 1 for d in dilation):
        return [sizes], pad_norm, dilation
    spatial = tuple(in_shape[1:])
    if geometry.transposed:  # the conv it is the adjoint of: input = this layer's output
        n_in = [n - p for n, p in zip(sizes, geometry.padding)]
        los, n_out = list(geometry.padding), list(spatial)
    else:
        pads = geometry.axis_pads
        n_in, los = list(spatial), [lo for lo, _ in pads]
        n_out = [(n + lo + hi - d * (k - 1) - 1) // s + 1
                 for n, (lo, hi), d, k, s in zip(spatial, pads, dilation, kernel_size, geometry.stride)]
    per_axis, kernel_dilation = [], []
    for axis, (d, s) in enumerate(zip(dilation, geometry.stride)):
        if d > 1 and s == 1:
            per_axis.append(residue_sizes(n_in[axis], n_out[axis], los[axis], kernel_size[axis], d))
            kernel_dilation.append(1)
        else:
            per_axis.append([sizes[axis]])
            kernel_dilation.append(d)
    return [list(c) for c in itertools.product(*per_axis)], pad_norm, tuple(kernel_dilation)


def bound_matrices(weight: Tensor, geometry: ConvGeometry, pieces: list[list[int]], dilation) -> Tensor:
    """The symbol matrices of every piece of bound_pieces, stacked along the frequencies."""
    kernel = dense_kernel(weight, geometry.groups, dilation)
    if len(pieces) == 1:  # (torch.cat of one tensor still copies it: 5 s of ResNet-18 at 224)
        return circular_symbol(kernel, geometry.stride, pieces[0])
    return torch.cat([circular_symbol(kernel, geometry.stride, sizes) for sizes in pieces])


def conv_symbol(layer: nn.Module, input_shape, dtype=torch.float64, weight=None) -> ConvSymbol:
    """Symbol of a Conv*/ConvTranspose* layer at `input_shape` (no batch dim)."""
    if not isinstance(layer, (*CONV, *CONV_TRANSPOSE)):
        raise TypeError(f"conv_symbol needs a Conv or ConvTranspose layer, got {type(layer).__name__}")
    in_shape = as_input_shape(input_shape)
    check_input_shape(layer, in_shape)
    return build_symbol(layer, in_shape, dtype, weight)


def build_symbol(layer: nn.Module, in_shape: tuple[int, ...], dtype=torch.float64, weight=None) -> ConvSymbol:
    """conv_symbol for a shape already checked (as_input_shape + check_input_shape)."""
    w = (layer.weight if weight is None else weight).detach().to(dtype)
    geometry = ConvGeometry.of(layer)
    pieces, pad_norm, dilation = bound_pieces(geometry, in_shape, layer.kernel_size)
    exact = symbol_plan(geometry, in_shape, layer.kernel_size)[2]
    # ConvTranspose weights are (C_in, C_out, k): the conv layout of the conv it is the adjoint of
    return ConvSymbol(bound_matrices(w, geometry, pieces, dilation), pad_norm, exact)
