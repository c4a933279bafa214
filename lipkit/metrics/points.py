"""Metrics for 2-D samples: exact W1, GDPP/VEEGAN mode coverage, conditional accuracy.

W1 is solved exactly as a linear program (POT's ot.emd2), not with a Sinkhorn
approximation: on a few thousand points the exact value is affordable and has no bias,
so two training methods can be compared without an entropic-smoothing confound.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# GDPP's released evaluation (M-Elfeki/GDPP, gdppgan_Synthetic.py, evaluate_samples): 2500
# generated samples; a sample is high quality (HQ) if its euclidean distance to the NEAREST
# mode is <= 3 std; "modes captured" counts the distinct modes with at least ONE HQ sample.
# PacGAN (Lin et al. 2018) is stricter on the 25-grid: a mode with fewer than 20 of 2500
# samples (1/5 of the expected 100) counts as lost. lipkit defaults to GDPP's rule, the
# one behind ANCHORS.md's Table 1 figures; pass min_count=20 for PacGAN's.
GDPP_NUM_SAMPLES = 2500
GDPP_MIN_COUNT = 1
HQ_STDS = 3.0
MAX_W1_POINTS = 10_000  # the LP is O(n^2) memory (n^2 float64 cost matrix: 800 MB at 10k)


def _points(name: str, x: Tensor | np.ndarray) -> np.ndarray:
    x = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty (n, d) point set, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or inf (a diverged generator?)")
    return x


def wasserstein1(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Exact W1 between the empirical measures of x (n, d) and y (m, d): uniform weights,
    euclidean ground cost, solved by network simplex (ot.emd2)."""
    import ot

    a, b = _points("x", x), _points("y", y)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x has dim {a.shape[1]} but y has dim {b.shape[1]}")
    if max(len(a), len(b)) > MAX_W1_POINTS:
        raise ValueError(f"{len(a)} and {len(b)} points: the exact LP allows at most {MAX_W1_POINTS} "
                         "per set; subsample first")
    cost = ot.dist(a, b, metric="euclidean")
    weights_a, weights_b = np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b))
    return float(ot.emd2(weights_a, weights_b, cost, numItermax=10_000_000))


def nearest_mode(samples: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
    """(index of the nearest centre (n,) long, distance to it (n,)) for each sample."""
    if samples.dim() != 2 or centers.dim() != 2 or samples.shape[1] != centers.shape[1]:
        raise ValueError(f"samples {tuple(samples.shape)} and centers {tuple(centers.shape)}: "
                         "expected (n, d) and (K, d)")
    distances = torch.cdist(samples.detach().double(), centers.detach().double().to(samples.device))
    distance, index = distances.min(dim=1)
    return index, distance


@dataclass(frozen=True)
class ModeCoverage:
    """modes_covered of num_modes; hq_fraction in [0, 1]; hq_counts[k] = HQ samples at mode k."""

    modes_covered: int
    num_modes: int
    hq_fraction: float
    hq_counts: Tensor
    min_count: int

    @property
    def hq_percent(self) -> float:
        return 100.0 * self.hq_fraction


def mode_coverage(samples: Tensor, centers: Tensor, std: float, *, min_count: int = GDPP_MIN_COUNT,
                  num_stds: float = HQ_STDS) -> ModeCoverage:
    """Modes covered and fraction of high-quality samples (GDPP / VEEGAN protocol).

    A sample is HQ if within num_stds * std of its nearest centre; a mode is covered if at
    least min_count HQ samples fall on it. The protocol draws 2500 samples
    (GDPP_NUM_SAMPLES); min_count is an absolute count, so scale it if you draw more.
    """
    if not std > 0 or not num_stds > 0:
        raise ValueError(f"std={std!r}, num_stds={num_stds!r}: both must be > 0")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count={min_count!r}: expected an int >= 1 (GDPP: 1, PacGAN: 20 of 2500)")
    if not torch.isfinite(samples).all():
        raise ValueError("samples: contains NaN or inf (a diverged generator?)")
    index, distance = nearest_mode(samples, centers)
    hq = distance <= num_stds * std
    counts = torch.bincount(index[hq], minlength=centers.shape[0]).cpu()
    return ModeCoverage(int((counts >= min_count).sum()), centers.shape[0],
                        float(hq.double().mean()), counts, min_count)


def conditional_accuracy(samples: Tensor, labels: Tensor, centers: Tensor) -> float:
    """Fraction of generated samples whose nearest centre is the mode they were asked for."""
    if labels.shape != samples.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match samples {tuple(samples.shape)}")
    index, _ = nearest_mode(samples, centers)
    return float((index == labels.to(index.device)).double().mean())


def per_class_w1(fake: Tensor, fake_labels: Tensor, real: Tensor, real_labels: Tensor,
                 num_classes: int) -> Tensor:
    """W1 between fake and real samples of each class ((num_classes,) float64); NaN for a class
    that is missing from either set, so a gap shows instead of averaging away."""
    out = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    for k in range(num_classes):
        f, r = fake[fake_labels == k], real[real_labels == k]
        if len(f) and len(r):
            out[k] = wasserstein1(f, r)
    return out
