"""A Euclidean norm that is safe to differentiate at zero.

d||x||/dx = x / ||x|| is 0/0 at x = 0, and autograd turns that into NaN, which then
poisons every parameter it reaches (a bug users hit in peers' gradient penalties, e.g. a
critic that is locally flat). Here the norm's gradient at zero is defined as 0 (a valid
subgradient), by never evaluating sqrt at a value whose derivative is infinite.
"""
from __future__ import annotations

import torch
from torch import Tensor


def safe_sqrt(sq: Tensor) -> Tensor:
    """sqrt of a nonnegative tensor, with gradient 0 (not inf or NaN) where it is 0."""
    positive = sq > 0
    # The clamped branch keeps sqrt's derivative finite where `positive` is False, so the
    # masked-out gradient is 0 * finite = 0 rather than 0 * inf = NaN.
    root = torch.sqrt(torch.where(positive, sq, torch.ones_like(sq)))
    return torch.where(positive, root, torch.zeros_like(sq))


def per_sample_sq_norm(x: Tensor) -> Tensor:
    """||x_i||^2 over ALL non-batch dims of each sample, shape (B,)."""
    return x.reshape(x.shape[0], -1).pow(2).sum(dim=1)


def per_sample_norm(x: Tensor) -> Tensor:
    """||x_i|| over ALL non-batch dims of each sample, shape (B,), safe at zero."""
    return safe_sqrt(per_sample_sq_norm(x))
