"""The top singular pair of a linear map by Rayleigh-Ritz on a block Krylov space.

Why not plain power iteration: a conv's top singular values are dense (many modes within
1% of the top), and power iteration converges at the rate of that gap, so after a weight
update it stays on the old top mode for many updates (benchmarks/sn_conv_lag.py). A block
Krylov space built from the previous top vector plus a few global guesses (the conv
symbol's top modes, lipkit/norms/conv_modes.py) and the best vector in it (Rayleigh-Ritz)
find the new top within an update: each Krylov block costs one batched forward and one
batched adjoint, however many vectors the block holds.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Map = Callable[[Tensor], Tensor]
RANK_TOL = 1e-10  # directions of the space below this (relative) are dropped as dependent


def _orthonormal_rows(rows: Tensor) -> Tensor:
    """Rows spanning at least span(rows), orthonormal (Householder QR stays orthonormal when
    rows are dependent, e.g. the zero sine part of a constant wave)."""
    return torch.linalg.qr(rows.T).Q.T


def krylov_top_pair(
    forward: Map, adjoint: Map, start: Tensor, depth: int, runners_up: int = 0
) -> tuple[Tensor, ...]:
    """(sigma, u, v): the best unit v (and u = A v / sigma) in span{X, M X, ..., M^depth X},
    M = A^T A, X = `start` (k vectors, shape (k, *in_shape)). sigma = ||A v|| is never above
    the true top singular value and never below ||A x|| / ||x|| for any x in the space, so a
    start that holds the previous top vector can only improve on it.

    forward / adjoint map batches. Costs depth + 1 batched forwards and depth batched
    adjoints; the small Ritz problem is solved in float64 (the blocks are orthonormal within
    themselves, not across: the basis Gram is whitened, dropping dependent directions).

    runners_up > 0 appends a 4th result: the next `runners_up` Ritz vectors (unit rows, shape
    (runners_up, *in_shape), fewer if the space has fewer
    dimensions), for a caller that carries them into the next start block.
    """
    in_shape = start.shape[1:]
    blocks, images = [_orthonormal_rows(start.flatten(1))], []
    for step in range(depth + 1):
        image = forward(blocks[-1].view(-1, *in_shape))
        images.append(image.flatten(1))
        if step < depth:
            blocks.append(_orthonormal_rows(adjoint(image).flatten(1)))
    basis, a_basis = torch.cat(blocks).double(), torch.cat(images).double()
    weights, vectors = torch.linalg.eigh(basis @ basis.T)
    # Columns: coefficients of an orthonormal basis of the space; dependent directions get
    # zero columns (a mask, not a selection: no host sync, no data-dependent shapes).
    keep = weights > RANK_TOL * weights[-1]
    whiten = vectors * (keep / weights.clamp_min(RANK_TOL * weights[-1]).sqrt())
    # The whitened map's Gram from the images' Gram: one product over the output space
    _, ritz = torch.linalg.eigh(whiten.T @ (a_basis @ a_basis.T) @ whiten)
    c = whiten @ ritz[:, -1]
    v = c @ basis
    av = c @ a_basis
    sigma = torch.linalg.vector_norm(av)
    dtype = start.dtype
    top = (sigma.to(dtype), (av / sigma.clamp_min(1e-300)).to(dtype).view(image.shape[1:]),
           (v / torch.linalg.vector_norm(v)).to(dtype).view(in_shape))
    if not runners_up:
        return top
    rest = (whiten @ ritz[:, -1 - runners_up:-1]).T @ basis  # fewer when the space is smaller
    rest = rest / torch.linalg.vector_norm(rest, dim=1, keepdim=True).clamp_min(1e-300)
    return (*top, rest.to(dtype).view(-1, *in_shape))
