"""exact_top_pair for many matrices at once: the batched refresh of spectral normalization
(constraints/spectral_batch.py) computes every layer's exact top singular pair in one
zero-padded batch, since a training step is host-bound and one eigh per layer is ~10 small
kernels per layer."""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .linalg import as_dtype


@functools.lru_cache(maxsize=16)
def _padding_masks(shapes: tuple[tuple[int, int], ...], dtype: torch.dtype, device: torch.device
                   ) -> tuple[Tensor, Tensor]:
    """1 on the real entries of each padded side, 0 on the padding. Cached: a training run
    asks for the same shapes at every update, and building them from a host list on a GPU
    would be a host-to-device copy (a wait on the stream) each time."""
    sizes = torch.tensor(shapes, device=device)  # (L, 2)
    rows = (torch.arange(int(sizes[:, 0].max()), device=device) < sizes[:, :1]).to(dtype)
    cols = (torch.arange(int(sizes[:, 1].max()), device=device) < sizes[:, 1:]).to(dtype)
    return rows, cols


def exact_top_pairs(matrices: list[Tensor]) -> list[tuple[Tensor, Tensor]] | None:
    """exact_top_pair of every matrix at once (same dtype and device), or None when any of
    them holds NaN / inf (one sum of the batch: one host sync for all). Each matrix, turned so
    its smaller side comes first and scaled by its largest entry, is zero-padded into one
    batch, so one bmm and one batched eigh serve them all (spectral normalization refreshes
    every layer of a model this way: a step is host-bound, and this is ~10 kernels in all
    instead of ~10 per layer). Zero padding adds zero eigenvalues only, so each top
    eigenvector lives in its matrix's block; the shift of exact_top_pair goes to the real
    entries only, so a zero matrix still gets unit vectors."""
    turned = [m.T if m.shape[0] > m.shape[1] else m for m in matrices]
    s, t = max(m.shape[0] for m in turned), max(m.shape[1] for m in turned)
    first = matrices[0]
    dtype = first.dtype if first.dtype in (torch.float32, torch.float64) else torch.float32
    batch = torch.zeros(len(turned), s, t, dtype=dtype, device=first.device)
    for i, m in enumerate(turned):
        batch[i, :m.shape[0], :m.shape[1]] = m
    if not math.isfinite(float(batch.sum())):  # NaN and inf survive a sum
        return None
    rows, cols = _padding_masks(tuple(tuple(m.shape) for m in turned), dtype, first.device)
    batch = batch / batch.abs().amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    shift = torch.finfo(dtype).tiny ** 0.5
    top = torch.linalg.eigh(batch @ batch.mT)[1][..., -1]  # (L, s): the smaller side's vectors
    top = (top + shift) * rows  # a zero matrix's eigh may pick a padded direction: drop it
    top = top / torch.linalg.vector_norm(top, dim=1, keepdim=True)
    other = (batch.mT @ top[..., None])[..., 0] + shift * cols
    other = other / torch.linalg.vector_norm(other, dim=1, keepdim=True)
    pairs = []
    for i, (m, turn) in enumerate(zip(matrices, turned)):
        a, b = top[i, :turn.shape[0]], other[i, :turn.shape[1]]
        a, b = (b, a) if turn is not m else (a, b)
        pairs.append((as_dtype(a, m.dtype), as_dtype(b, m.dtype)))
    return pairs
