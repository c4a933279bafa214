"""FID and KID between two sets of feature vectors (rows), in float64.

Why lipkit computes them itself rather than through torchmetrics: importing torchmetrics
imports torchvision whenever one is installed, and a torchvision built for another torch
(the CUDA wheel beside a CPU torch) then fails at import, taking every image evaluation
down with it; and KID, drawn as torchmetrics draws it (a fresh kernel matrix per random
subset), costs subsets x 3 kernel products (about 3 s per evaluation of 500 digits here),
where the kernels of the whole sets, computed once and indexed per subset, give the same
numbers in milliseconds. tests/test_metrics.py checks both against torchmetrics.
"""
from __future__ import annotations

import torch
from torch import Tensor

KERNEL_DEGREE = 3  # KID's polynomial kernel (x.y / F + 1)^3 (Binkowski et al. 2018)
WHOLE_KERNEL_MAX = 5000  # up to this many rows per set, the kernels are computed once


def _rows(name: str, features: Tensor) -> Tensor:
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"{name}: expected features of shape (N >= 2, F), got {tuple(features.shape)}")
    return features.double()


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """||mu_r - mu_f||^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2)) of Gaussians fitted to the rows
    (covariances with the n - 1 denominator). tr (S_r S_f)^(1/2) is the sum of square roots
    of the eigenvalues of S_r^(1/2) S_f S_r^(1/2), a symmetric PSD matrix (the same
    eigenvalues as S_r S_f), so eigvalsh applies and rounding cannot make them complex."""
    real, fake = _rows("real", real), _rows("fake", fake)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in width: {real.shape[1]} vs {fake.shape[1]}")
    mu_r, mu_f = real.mean(0), fake.mean(0)
    cov_r, cov_f = torch.cov(real.T).reshape(real.shape[1], -1), torch.cov(fake.T).reshape(fake.shape[1], -1)
    values, vectors = torch.linalg.eigh(cov_r)
    root_r = (vectors * values.clamp_min(0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_r @ cov_f @ root_r).clamp_min(0).sqrt().sum()
    return float((mu_r - mu_f).square().sum() + cov_r.trace() + cov_f.trace() - 2 * cross)


def _poly_kernel(a: Tensor, b: Tensor) -> Tensor:
    return (a @ b.T / a.shape[1] + 1) ** KERNEL_DEGREE


def _unbiased_mmd2(k_rr: Tensor, k_ff: Tensor, k_rf: Tensor) -> Tensor:
    """Unbiased MMD^2 from the three kernel matrices of two samples of equal size m."""
    m = k_rr.shape[0]
    within = (k_rr.sum() - k_rr.diagonal().sum() + k_ff.sum() - k_ff.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_rf.sum() / m**2


def kernel_distance(real: Tensor, fake: Tensor, *, subsets: int, subset_size: int,
                    seed: int = 0) -> tuple[float, float]:
    """KID: (mean, population std) over `subsets` draws of the unbiased polynomial-kernel
    MMD^2 between `subset_size` random rows of each set. Draw i takes
    randperm(len(real))[:subset_size], then randperm(len(fake))[:subset_size], from a
    generator seeded with `seed`: the draws of torchmetrics' KernelInceptionDistance under
    torch.manual_seed(seed), so the two agree; the global RNG is not touched."""
    real, fake = _rows("real", real), _rows("fake", fake)
    if not 2 <= subset_size <= min(len(real), len(fake)):
        raise ValueError(f"subset_size must be in [2, {min(len(real), len(fake))}] (the smaller set), "
                         f"got {subset_size}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    gen = torch.Generator().manual_seed(seed)
    whole = max(len(real), len(fake)) <= WHOLE_KERNEL_MAX
    if whole:
        k_rr, k_ff, k_rf = _poly_kernel(real, real), _poly_kernel(fake, fake), _poly_kernel(real, fake)
    scores = []
    for _ in range(subsets):
        r = torch.randperm(len(real), generator=gen)[:subset_size]
        f = torch.randperm(len(fake), generator=gen)[:subset_size]
        if whole:
            scores.append(_unbiased_mmd2(k_rr[r][:, r], k_ff[f][:, f], k_rf[r][:, f]))
        else:
            a, b = real[r], fake[f]
            scores.append(_unbiased_mmd2(_poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b)))
    stacked = torch.stack(scores)
    return float(stacked.mean()), float(stacked.std(unbiased=False))
