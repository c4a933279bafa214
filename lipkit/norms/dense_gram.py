"""The certified norm of a linear map small enough to hold its Gram matrix densely.

Why "gram" needs it: the frequency-symbol bound (conv_symbol.py) is exact only for circular
convs; any other conv is relaxed to a circular one on a larger domain. On inputs >= 16 per
side that costs ~1% for zero padding, more on small domains (a Conv3d at 8^3: +9%; stride
or dilation leave 8x8 subgrids at 16x16: +1% to +4%), and for reflect / replicate padding
the padding map's norm, up to sqrt(2) per padded axis (+83% to +96% in 2-D).

Why no cheap certified bound closes the reflect / replicate gap: with those paddings the
operator is Toeplitz plus Hankel (the pad mirrors or repeats border pixels), so no frequency
transform block-diagonalizes it. Writing it as a circular conv of the mirrored signal, cut
back to the original domain, splits the kernel into an even part (it maps mirrored signals
to mirrored ones, so the cut halves both sides and its symbol bound holds without the pad
factor) and an odd part, but the cut couples every pair of frequencies of opposite parity
between the two, and bounding that coupling by the triangle inequality gives back up to
sqrt(2) per axis. So where the operator's smaller Gram fits in memory, "gram" computes it
and certifies its top eigenvalue by Cholesky (linalg.certified_top_eigenvalue): the exact
norm, times at most 1 + 2e-8 (linalg.certify_margin: float64 rounding, 1e-13 for small
maps). Beyond that size the symbol bound, with the padding map's factor, is what lipkit can
certify cheaply; the README says so.

Costs on one core (float64): a 1024-dimensional Gram (16x16x4) ~0.1 s; 2048 ~1 s; 4096
(32x32x4) ~10 s (the Gram by one batched forward and adjoint of the unit basis ~5 s, its
eigenvalues ~5 s, the Cholesky ~2 s): paid only where the symbol bound is up to 2x loose.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .linalg import EXACT_MAX_DIM, EXACT_MAX_ELEMENTS, _unit_rows, certified_top_eigenvalue
from .operators import LinearOperator

SMALL_DENSE_DIM = 2048  # any conv whose symbol bound is not exact: dense below this (smaller side)...
SMALL_DENSE_ELEMENTS = 2**23  # ...and this many entries of the (never formed) full matrix
CHUNK_ELEMENTS = 2**22  # entries of one batch of basis images (32 MiB in float64)


def is_small(in_dim: int, out_dim: int) -> bool:
    """Small enough that an exact dense norm costs about a second: used by every "gram" rule."""
    return min(in_dim, out_dim) <= SMALL_DENSE_DIM and in_dim * out_dim <= SMALL_DENSE_ELEMENTS


def dense_gram_fits(op: LinearOperator, loose_padding: bool) -> bool:
    """Whether "gram" takes the dense certified path for `op`: when small, or, where the symbol
    bound carries a padding map's factor (reflect / replicate), up to lipkit's exact-SVD limit."""
    if is_small(op.in_dim, op.out_dim):
        return True
    return loose_padding and min(op.in_dim, op.out_dim) <= EXACT_MAX_DIM and op.in_dim * op.out_dim <= EXACT_MAX_ELEMENTS


def smaller_gram(op: LinearOperator, device) -> Tensor:
    """The smaller of A^T A and A A^T, in float64, column by column: the adjoint of the forward
    of a chunk of the unit basis (two batched layer calls; cheaper than forming A and
    multiplying, 4.7 vs 8 s for a 32x32 reflect conv 4 -> 6 channels on one core)."""
    if op.in_dim <= op.out_dim:
        dim, shape, first, then = op.in_dim, op.in_shape, op.forward, op.adjoint
    else:
        dim, shape, first, then = op.out_dim, op.out_shape, op.adjoint, op.forward
    chunk = max(1, CHUNK_ELEMENTS // max(op.in_dim, op.out_dim))
    columns = []
    with torch.no_grad():
        for start in range(0, dim, chunk):
            basis = _unit_rows(start, min(start + chunk, dim), dim, torch.float64, device).view(-1, *shape)
            columns.append(then(first(basis)).flatten(1))
    gram = torch.cat(columns)
    return (gram + gram.T) / 2  # symmetric up to rounding: make it exactly so for eigvalsh / Cholesky


def certified_dense_norm(op: LinearOperator, device) -> float:
    """sigma_max of `op` (a float64 operator), certified from above (within linalg.certify_margin)."""
    return math.sqrt(certified_top_eigenvalue(smaller_gram(op, device)[None], max(op.in_dim, op.out_dim)))
