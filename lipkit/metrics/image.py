"""Image metrics in a domain classifier's feature space: FID, KID, class accuracy.

FID and KID come from torchmetrics with our classifier's penultimate layer as the custom
`feature` module (torchmetrics computes FID through eigenvalues of S1 S2 in float64, and
KID as the unbiased polynomial-kernel MMD^2 averaged over random subsets). Images are
(N, C, H, W) floats in [0, 1], the classifier's training range: map a tanh generator's
output with lipkit.data.from_gan_range first.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from .features import DomainClassifier

KID_SUBSETS = 100  # torchmetrics' default
KID_SUBSET_SIZE = 1000  # torchmetrics' default, lowered to the sample count when fewer
FEATURE_BATCH = 500
RANGE_SLACK = 1e-3


def _feature_module(features: DomainClassifier | nn.Module) -> nn.Module:
    module = features.feature_module() if isinstance(features, DomainClassifier) else features
    if not isinstance(module, nn.Module):
        raise ValueError(f"features: expected a DomainClassifier or an nn.Module, got {type(features).__name__}")
    return module


def _check_images(name: str, images: Tensor, check_range: bool) -> Tensor:
    if images.dim() < 2 or images.shape[0] < 2:
        raise ValueError(f"{name}: expected a batch of at least 2 samples, got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name}: contains NaN or inf")
    if check_range and (images.min() < -RANGE_SLACK or images.max() > 1 + RANGE_SLACK):
        raise ValueError(f"{name}: values in [{float(images.min()):.3g}, {float(images.max()):.3g}] but the "
                         "classifier reads [0, 1]; map [-1, 1] images with lipkit.data.from_gan_range")
    return images


def _feed(metric: nn.Module, images: Tensor, real: bool) -> None:
    for chunk in images.split(FEATURE_BATCH):
        metric.update(chunk, real=real)


def fid(real: Tensor, fake: Tensor, features: DomainClassifier | nn.Module, *, check_range: bool = True) -> float:
    """Frechet distance between Gaussians fitted to the features of real and fake.

    features: a DomainClassifier (its penultimate layer) or any module mapping a batch to
    (N, F) features (needs num_features=F or a forward on a dummy 299x299 input).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_feature_module(features))
    _feed(metric, _check_images("real", real, check_range), True)
    _feed(metric, _check_images("fake", fake, check_range), False)
    return float(metric.compute())


def kid(real: Tensor, fake: Tensor, features: DomainClassifier | nn.Module, *, subsets: int = KID_SUBSETS,
        subset_size: int | None = None, seed: int = 0, check_range: bool = True) -> tuple[float, float]:
    """(mean, std) over `subsets` random subsets of the unbiased MMD^2 with the cubic
    polynomial kernel (x.y / F + 1)^3. Subsets are drawn from the global RNG inside
    torchmetrics, so it runs under fork_rng seeded with `seed`: reproducible, and the
    caller's RNG stream is left untouched."""
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _check_images("real", real, check_range), _check_images("fake", fake, check_range)
    size = min(KID_SUBSET_SIZE, len(real), len(fake)) if subset_size is None else subset_size
    with warnings.catch_warnings():  # "will save all extracted features": known, and bounded here
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_feature_module(features), subsets=subsets, subset_size=size)
    _feed(metric, real, True)
    _feed(metric, fake, False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def class_accuracy(images: Tensor, labels: Tensor, classifier: DomainClassifier, *,
                   check_range: bool = True) -> float:
    """Fraction of (generated) images that the classifier assigns to their requested label."""
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match images {tuple(images.shape)}")
    predicted = classifier.predict(_check_images("images", images, check_range))
    return float((predicted == labels.cpu()).double().mean())


@dataclass(frozen=True)
class ImageScores:
    fid: float
    kid_mean: float
    kid_std: float
    class_accuracy: float | None


def image_scores(real: Tensor, fake: Tensor, classifier: DomainClassifier, *,
                 fake_labels: Tensor | None = None, seed: int = 0) -> ImageScores:
    """FID, KID and (for a conditional generator, given fake_labels) class accuracy at once."""
    kid_mean, kid_std = kid(real, fake, classifier, seed=seed)
    accuracy = None if fake_labels is None else class_accuracy(fake, fake_labels, classifier)
    return ImageScores(fid(real, fake, classifier), kid_mean, kid_std, accuracy)
