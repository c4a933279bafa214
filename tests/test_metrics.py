"""Metrics against closed forms and hand-built samples (oracles, not snapshots)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn as nn

from lipkit.data import gaussians8, load_digits, rings
from lipkit.metrics import (
    class_accuracy,
    conditional_accuracy,
    domain_classifier,
    fid,
    kid,
    mode_coverage,
    per_class_w1,
    wasserstein1,
)

DT = torch.float64


class Identity(nn.Module):
    """Features = the input rows themselves: FID/KID of point sets with known moments."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def exact_moments(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    """n points whose sample mean and (n - 1)-normalized covariance are EXACTLY mean and cov:
    Gaussian draws, whitened empirically, then coloured by a square root of cov."""
    z = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=DT)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / (n - 1))).T
    return mean + z @ torch.linalg.cholesky(cov).T


def test_w1_of_a_shift_is_its_norm() -> None:
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    shift = torch.tensor([0.3, -0.4])
    # lower bound: the 1-Lipschitz f(x) = <x, shift/|shift|>; upper bound: the shift coupling
    assert wasserstein1(x, x + shift) == pytest.approx(0.5, abs=1e-6)
    assert wasserstein1(x, x) == pytest.approx(0.0, abs=1e-9)
    assert wasserstein1(x, x[torch.randperm(1000)]) == pytest.approx(0.0, abs=1e-9)


def test_w1_unequal_sizes_by_hand() -> None:
    # half the mass of the single point goes to each of the two: (1 + 3) / 2
    assert wasserstein1(torch.zeros(1, 2), torch.tensor([[1.0, 0.0], [0.0, 3.0]])) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        wasserstein1(torch.tensor([[float("nan"), 0.0]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="dim 2 but y has dim 3"):
        wasserstein1(torch.zeros(2, 2), torch.zeros(2, 3))


def test_mode_coverage_on_hand_built_samples() -> None:
    data = gaussians8()
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 2, 5]).repeat_interleave(800)
    on_three = data.centers[labels] + 0.5 * data.std * torch.randn(2400, 2, generator=g).clamp(-2, 2)
    result = mode_coverage(on_three, data.centers, data.std)
    assert (result.modes_covered, result.num_modes, result.hq_percent) == (3, 8, 100.0)
    assert result.hq_counts.tolist() == [800, 0, 800, 0, 0, 800, 0, 0]
    far = torch.full((2500, 2), 10.0)
    assert mode_coverage(far, data.centers, data.std).hq_fraction == 0.0
    assert mode_coverage(far, data.centers, data.std).modes_covered == 0


def test_mode_coverage_thresholds() -> None:
    centers, std = torch.tensor([[0.0, 0.0], [1.0, 0.0]]), 0.1
    inside = torch.tensor([[0.29, 0.0]] * 19 + [[1.0, 0.0]] * 20)
    outside = torch.tensor([[0.0, 0.31]] * 61)  # 3.1 std: nearest mode 0, not high quality
    result = mode_coverage(torch.cat([inside, outside]), centers, std, min_count=20)
    assert result.hq_counts.tolist() == [19, 20] and result.modes_covered == 1  # PacGAN: 19 < 20
    assert result.hq_fraction == pytest.approx(39 / 100)
    assert mode_coverage(inside, centers, std).modes_covered == 2  # GDPP: one HQ sample suffices
    with pytest.raises(ValueError, match="min_count=0"):
        mode_coverage(inside, centers, std, min_count=0)


def test_conditional_accuracy_and_per_class_w1() -> None:
    data = rings(10)
    g = torch.Generator().manual_seed(1)
    real, real_labels = data.sample(2000, g)
    fake, fake_labels = data.sample(2000, g)
    assert conditional_accuracy(fake, fake_labels, data.centers) == 1.0
    assert conditional_accuracy(fake, (fake_labels + 1) % 10, data.centers) == 0.0
    shifted = real + torch.tensor([0.0, 0.05])
    w1 = per_class_w1(shifted, real_labels, real, real_labels, num_classes=11)
    assert torch.allclose(w1[:10], torch.full((10,), 0.05, dtype=DT), atol=1e-6)
    assert math.isnan(w1[10])  # class absent from both sets: a visible gap


def test_fid_closed_form_for_known_gaussians() -> None:
    d = 4
    mean1, mean2 = torch.zeros(d, dtype=DT), torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=DT)
    var1, var2 = torch.tensor([1.0, 4.0, 0.25, 2.0], dtype=DT), torch.tensor([9.0, 1.0, 1.0, 2.0], dtype=DT)
    x1 = exact_moments(400, mean1, torch.diag(var1), seed=0)
    x2 = exact_moments(300, mean2, torch.diag(var2), seed=1)
    # diagonal covariances: |m1 - m2|^2 + sum (sqrt(v1) - sqrt(v2))^2
    closed = float((mean1 - mean2).square().sum() + (var1.sqrt() - var2.sqrt()).square().sum())
    features = Identity(d)
    assert fid(x1, x2, features, check_range=False) == pytest.approx(closed, rel=1e-6)
    assert fid(x1, x1, features, check_range=False) == pytest.approx(0.0, abs=1e-6)
    # non-commuting full covariances against scipy's sqrtm form of the same distance
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(2), dtype=DT)
    cov1, cov2 = a @ a.T + 0.5 * torch.eye(d, dtype=DT), torch.diag(var2) + 0.3
    root = scipy.linalg.sqrtm(cov1.numpy())
    cross = np.real(scipy.linalg.sqrtm(root @ cov2.numpy() @ root))
    closed = float((mean1 - mean2).square().sum()) + float(np.trace(cov1.numpy() + cov2.numpy() - 2 * cross))
    y1, y2 = exact_moments(500, mean1, cov1, 3), exact_moments(500, mean2, cov2, 4)
    assert fid(y1, y2, features, check_range=False) == pytest.approx(closed, rel=1e-6)


def test_kid_is_the_unbiased_polynomial_mmd() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, generator=g, dtype=DT), torch.randn(30, 3, generator=g, dtype=DT) + 0.5
    n = 30  # one subset of all of y (order does not matter) and a random 30 of x: use x[:30] = all of x'
    x = x[:n]
    kernel = lambda a, b: (a @ b.T / 3 + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    off = lambda k: (k.sum() - k.diagonal().sum()) / (n * (n - 1))  # noqa: E731
    expected = float(off(kxx) + off(kyy) - 2 * kxy.mean())
    mean, std = kid(x, y, Identity(3), subsets=3, subset_size=n, check_range=False)
    assert mean == pytest.approx(expected, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_kid_near_zero_for_the_same_distribution() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1000, 8, generator=g), torch.randn(1000, 8, generator=g)
    same, same_std = kid(a, b, Identity(8), subsets=10, subset_size=500, check_range=False)
    shifted, _ = kid(a, b + 0.5, Identity(8), subsets=10, subset_size=500, check_range=False)
    assert abs(same) < 3 * same_std + 1e-3 and shifted > 50 * abs(same)
    assert kid(a, b, Identity(8), subsets=5, subset_size=100, seed=3, check_range=False) == \
        kid(a, b, Identity(8), subsets=5, subset_size=100, seed=3, check_range=False)


@pytest.mark.parametrize("whole_kernels", [True, False])
def test_fid_and_kid_equal_torchmetrics(monkeypatch, whole_kernels: bool) -> None:
    """torchmetrics' FrechetInceptionDistance / KernelInceptionDistance as the oracle, on the
    same float64 features and, for KID, the same subsets (torchmetrics draws them from the
    global RNG under manual_seed(seed); lipkit from a generator seeded the same way), with
    lipkit's kernels computed once for the whole sets and per subset."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    from lipkit.metrics import feature_distances

    if not whole_kernels:
        monkeypatch.setattr(feature_distances, "WHOLE_KERNEL_MAX", 10)
    g = torch.Generator().manual_seed(5)
    a = torch.randn(6, 6, generator=g, dtype=DT)
    real = torch.randn(300, 6, generator=g, dtype=DT) @ a
    fake = torch.randn(250, 6, generator=g, dtype=DT) * 1.5 + 0.3
    theirs = FrechetInceptionDistance(feature=Identity(6))
    theirs.update(real, real=True)
    theirs.update(fake, real=False)
    assert fid(real, fake, Identity(6), check_range=False) == pytest.approx(float(theirs.compute()), rel=1e-9)
    kid_theirs = KernelInceptionDistance(feature=Identity(6), subsets=7, subset_size=100)
    kid_theirs.update(real, real=True)
    kid_theirs.update(fake, real=False)
    torch.manual_seed(11)
    mean, std = (float(v) for v in kid_theirs.compute())
    ours = kid(real, fake, Identity(6), subsets=7, subset_size=100, seed=11, check_range=False)
    assert ours == pytest.approx((mean, std), rel=1e-9)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small-CNN steps on a shared 2-core machine: 2 OpenMP threads under load were ~30x
    slower per step than 1 (measured), so train single-threaded and restore afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_domain_classifier_caches_and_scores(tmp_path: Path, one_thread: None) -> None:
    state = torch.get_rng_state()
    first = domain_classifier("digits", cache_dir=tmp_path, epochs=3, seed=0)
    assert torch.equal(state, torch.get_rng_state())  # training left the caller's RNG alone
    assert first.path is not None and first.path.is_file() and first.test_accuracy > 0.6
    again = domain_classifier("digits", cache_dir=tmp_path, epochs=3, seed=0)
    assert again.path == first.path and again.test_accuracy == first.test_accuracy
    assert all(torch.equal(p, q) for p, q in zip(first.model.parameters(), again.model.parameters()))
    test = load_digits("test")
    assert class_accuracy(test.images, test.labels, again) == pytest.approx(first.test_accuracy)
    train = load_digits("train")
    close, far = fid(train.images, test.images, again), fid(test.images, torch.rand_like(test.images), again)
    assert fid(test.images, test.images, again) == pytest.approx(0.0, abs=1e-3) and close < far / 10
    with pytest.raises(ValueError, match="from_gan_range"):
        fid(test.images * 2 - 1, test.images, again)
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        domain_classifier("cifar", cache_dir=tmp_path)
