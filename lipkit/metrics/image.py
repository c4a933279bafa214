"""Image metrics in a domain classifier's feature space: FID, KID, class accuracy.

The features are the classifier's penultimate layer (any module mapping a batch to (N, F)
works too); FID and KID between the two feature sets are feature_distances.py's (the
definitions torchmetrics implements, checked against it in the tests). Images are
(N, C, H, W) floats in [0, 1], the classifier's training range: map a tanh generator's
output with lipkit.data.from_gan_range first.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from .feature_distances import frechet_distance, kernel_distance
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


@torch.no_grad()
def features_of(images: Tensor, features: DomainClassifier | nn.Module) -> Tensor:
    """(N, F) features of a batch of images, computed FEATURE_BATCH images at a time."""
    module = _feature_module(features)
    return torch.cat([module(chunk) for chunk in images.split(FEATURE_BATCH)])


def fid(real: Tensor, fake: Tensor, features: DomainClassifier | nn.Module, *, check_range: bool = True) -> float:
    """Frechet distance between Gaussians fitted to the features of real and fake.

    features: a DomainClassifier (its penultimate layer) or any module mapping a batch to
    (N, F) features.
    """
    real, fake = _check_images("real", real, check_range), _check_images("fake", fake, check_range)
    return frechet_distance(features_of(real, features), features_of(fake, features))


def kid(real: Tensor, fake: Tensor, features: DomainClassifier | nn.Module, *, subsets: int = KID_SUBSETS,
        subset_size: int | None = None, seed: int = 0, check_range: bool = True) -> tuple[float, float]:
    """(mean, std) over `subsets` random subsets of the unbiased MMD^2 with the cubic
    polynomial kernel (x.y / F + 1)^3; the subsets are drawn from a generator seeded with
    `seed` (reproducible; the caller's RNG stream is left untouched)."""
    real, fake = _check_images("real", real, check_range), _check_images("fake", fake, check_range)
    return _kid(features_of(real, features), features_of(fake, features), subsets, subset_size, seed)


def _kid(real: Tensor, fake: Tensor, subsets: int, subset_size: int | None, seed: int) -> tuple[float, float]:
    """KID of two feature sets; subset_size None: KID_SUBSET_SIZE, or the smaller set if smaller."""
    size = min(KID_SUBSET_SIZE, len(real), len(fake)) if subset_size is None else subset_size
    return kernel_distance(real, fake, subsets=subsets, subset_size=size, seed=seed)


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
    """FID, KID and (for a conditional generator, given fake_labels) class accuracy at once,
    from one feature pass over each set."""
    real, fake = _check_images("real", real, True), _check_images("fake", fake, True)
    real_features, fake_features = features_of(real, classifier), features_of(fake, classifier)
    kid_mean, kid_std = _kid(real_features, fake_features, KID_SUBSETS, None, seed)
    accuracy = None if fake_labels is None else class_accuracy(fake, fake_labels, classifier)
    return ImageScores(frechet_distance(real_features, fake_features), kid_mean, kid_std, accuracy)
