"""exact_top_pair for many matrices at once: the batched refresh of spectral normalization
(constraints/spectral_batch.py) computes every layer's exact top singular pair in one
zero-padded batch, since a training step is host-bound and one eigh per layer is ~10 small
kernels per layer.

Every tensor operation here costs host time in a training step (a dispatcher call, ~3-8 us
on a CPU inside a step, where the caches are cold), so the batch is built, read back and cut
into layers with a fixed handful of calls whatever the number of layers: one cat and one
index_copy in, one index_select and one split per output out (issue 12: this refresh was
0.8 ms of a 6.9 ms compiled critic step on the CPU overhead proxy, most of it such calls).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .linalg import as_dtype

# Largest entries a matrix may have for its Gram to be formed unscaled: the Gram's entries
# stay within ~1e30 * side (no overflow in float32) and above ~1e-30 (no subnormals). A batch
# with any matrix outside (or a zero matrix) is scaled by its largest entries first.
UNSCALED = (1e-15, 1e15)


class TopPair(NamedTuple):
    """A matrix's top singular pair and its outer product u v^T (the matrix's shape): the
    gradient of u^T W v, which spectral normalization keeps per layer."""
    u: Tensor
    v: Tensor
    outer: Tensor


class _Layout(NamedTuple):
    entries: Tensor  # flat positions of every matrix's entries in the padded (L, s, t) batch
    rows: Tensor  # (L, s): 1 on each matrix's real rows, 0 on the padding
    cols: Tensor  # (L, t): the same for columns
    row_index: Tensor  # flat positions of the real rows in (L, s), matrix after matrix
    col_index: Tensor  # the same in (L, t)
    shape: tuple[int, int, int]


def _turned(matrices: list[Tensor]) -> list[Tensor]:
    """Each matrix with its smaller side first (the side whose Gram the batch's eigh solves)."""
    return [m.mT if m.shape[0] > m.shape[1] else m for m in matrices]


def _side_mask(sizes: list[int], width: int, dtype: torch.dtype, device) -> Tensor:
    """(L, width): 1 on each matrix's real entries of a padded side, 0 on the padding (in the
    batch's dtype: a shift times a bool mask would be float32, where float64's shift underflows)."""
    return (torch.arange(width, device=device) < torch.tensor(sizes, device=device)[:, None]).to(dtype)


def _other_side(top: Tensor, batch: Tensor, shift: Tensor | None = None) -> Tensor:
    """W^T u / ||W^T u|| for every matrix of the batch, with `shift` (the zero-matrix rule's
    sqrt(tiny) on the real entries) added before normalizing."""
    other = torch.bmm(top.unsqueeze(1), batch).squeeze(1)
    other = other if shift is None else other + shift
    return other / torch.linalg.vector_norm(other, dim=1, keepdim=True)


@functools.lru_cache(maxsize=16)
def _layout(shapes: tuple[tuple[int, int], ...], dtype: torch.dtype, device: torch.device) -> _Layout:
    """Index tensors of a batch of matrices of these shapes. Cached: a training run asks for the
    same shapes at every update, and building them from host lists on a GPU would be
    host-to-device copies (waits on the stream) each time."""
    s, t = max(r for r, _ in shapes), max(c for _, c in shapes)

    def positions(sizes: list[int], width: int, rows_of: list[int] | None = None) -> Tensor:
        parts = []
        for i, n in enumerate(sizes):
            within = torch.arange(n) if rows_of is None else (
                torch.arange(rows_of[i])[:, None] * t + torch.arange(n)).reshape(-1)
            parts.append(within + i * width)
        return torch.cat(parts).to(device)

    rows_n, cols_n = [r for r, _ in shapes], [c for _, c in shapes]
    rows, cols = _side_mask(rows_n, s, dtype, "cpu").to(device), _side_mask(cols_n, t, dtype, "cpu").to(device)
    return _Layout(positions(cols_n, s * t, rows_n), rows, cols, positions(rows_n, s), positions(cols_n, t),
                   (len(shapes), s, t))


def exact_top_pairs(matrices: list[Tensor]) -> list[TopPair] | None:
    """exact_top_pair of every matrix at once (same dtype and device) with u v^T, or None when
    any of them holds NaN / inf (one host read of the batch's largest entries serves that check
    and the scaling decision). Each matrix, turned so its smaller side comes first, is
    zero-padded into one batch, so one bmm and one batched eigh serve them all. Zero padding
    adds zero eigenvalues only, so each top eigenvector lives in its matrix's block (its
    entries on the padding are zero to rounding, and are not read out). Matrices with entries
    outside UNSCALED are scaled by their largest entry first (the Gram could overflow or
    underflow), and where one is zero both vectors get sqrt(tiny) added to every real entry
    before they are normalized, so a zero matrix still gets unit vectors (nothing beside a
    nonzero product: the single-matrix exact_top_pair's rule)."""
    turned = _turned(matrices)
    first = matrices[0]
    dtype = first.dtype if first.dtype in (torch.float32, torch.float64) else torch.float32
    layout = _layout(tuple(tuple(m.shape) for m in turned), dtype, first.device)
    count, s, t = layout.shape
    flat = as_dtype(torch.cat([m.reshape(-1) for m in turned]), dtype)
    batch = torch.zeros(count * s * t, dtype=dtype, device=first.device).index_copy_(0, layout.entries, flat)
    batch = batch.view(count, s, t)
    peak = batch.abs().amax(dim=(1, 2))  # each matrix's largest |entry| (vector_norm(inf): 10x slower)
    peaks = peak.tolist()  # the one host sync
    if not all(math.isfinite(p) for p in peaks):  # NaN and inf survive
        return None
    if not all(UNSCALED[0] <= p <= UNSCALED[1] for p in peaks):
        batch = batch / peak.clamp_min(torch.finfo(dtype).tiny)[:, None, None]
    top = torch.linalg.eigh(torch.bmm(batch, batch.mT)).eigenvectors.select(-1, -1)  # (L, s): smaller sides
    if min(peaks) == 0.0:  # a zero matrix's eigh may pick a padded direction: shift, mask, renormalize
        shift = torch.finfo(dtype).tiny ** 0.5
        top = (top + shift) * layout.rows
        top = top / torch.linalg.vector_norm(top, dim=1, keepdim=True)
        other = _other_side(top, batch, shift * layout.cols)
    else:  # a positive top eigenvalue's vector is a unit vector orthogonal to the padding (to rounding)
        other = _other_side(top, batch)  # (L, t), zero on the padding
    outers = (top.unsqueeze(2) * other.unsqueeze(1)).view(-1).index_select(0, layout.entries)
    tops = top.reshape(-1).index_select(0, layout.row_index).split([m.shape[0] for m in turned])
    others = other.view(-1).index_select(0, layout.col_index).split([m.shape[1] for m in turned])
    outer_parts = outers.split([m.shape[0] * m.shape[1] for m in turned])
    pairs = []
    for m, turn, a, b, ab in zip(matrices, turned, tops, others, outer_parts):
        ab = ab.view(turn.shape)
        if turn is not m:  # (contiguous as the layer's own torch.outer: a compiled graph that
            a, b, ab = b, a, ab.mT.contiguous()  # reads it is specialized on its strides)
        pairs.append(TopPair(as_dtype(a, m.dtype), as_dtype(b, m.dtype), as_dtype(ab, m.dtype)))
    return pairs


def traced_top_pairs(matrices: list[Tensor]) -> list[TopPair]:
    """exact_top_pairs written for a compiled graph (--compile refreshes the exact pairs inside
    the first call after an update, spectral_batch.refresh_in_graph): no host read and no branch
    on values, which a graph cannot have, so every batch is scaled by its largest entries and
    both vectors get the zero-matrix shift (sqrt(tiny): nothing beside a nonzero product), and
    NaN / inf are not looked for (the trainers' non-finite-loss guard stops such a run). The
    padding, masks and products fuse into a few kernels around one bmm and one batched eigh."""
    turned = _turned(matrices)
    s, t = max(m.shape[0] for m in turned), max(m.shape[1] for m in turned)
    batch = torch.stack([F.pad(m, (0, t - m.shape[1], 0, s - m.shape[0])) for m in turned])
    dtype, device = batch.dtype, batch.device
    batch = batch / batch.abs().amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    shift = torch.finfo(dtype).tiny ** 0.5
    rows = _side_mask([m.shape[0] for m in turned], s, dtype, device)
    top = (torch.linalg.eigh(batch @ batch.mT).eigenvectors[..., -1] + shift) * rows
    top = top / torch.linalg.vector_norm(top, dim=1, keepdim=True)
    other = _other_side(top, batch, shift * _side_mask([m.shape[1] for m in turned], t, dtype, device))
    pairs = []
    for i, (m, turn) in enumerate(zip(matrices, turned)):
        a, b = top[i, :turn.shape[0]], other[i, :turn.shape[1]]
        if turn is not m:
            a, b = b, a
        pairs.append(TopPair(as_dtype(a, m.dtype), as_dtype(b, m.dtype), as_dtype(torch.outer(a, b), m.dtype)))
    return pairs
