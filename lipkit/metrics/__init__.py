"""Metrics: exact W1 and mode coverage on 2-D samples; FID, KID and class accuracy on images
in the feature space of a classifier lipkit trains per data set."""
from .features import (
    DomainClassifier,
    FeatureCNN,
    PenultimateFeatures,
    default_cache_dir,
    domain_classifier,
    train_classifier,
)
from .image import ImageScores, class_accuracy, fid, image_scores, kid
from .points import (
    GDPP_MIN_COUNT,
    GDPP_NUM_SAMPLES,
    ModeCoverage,
    conditional_accuracy,
    mode_coverage,
    nearest_mode,
    per_class_w1,
    wasserstein1,
)

__all__ = [
    "class_accuracy",
    "conditional_accuracy",
    "default_cache_dir",
    "domain_classifier",
    "DomainClassifier",
    "FeatureCNN",
    "fid",
    "GDPP_MIN_COUNT",
    "GDPP_NUM_SAMPLES",
    "image_scores",
    "ImageScores",
    "kid",
    "mode_coverage",
    "ModeCoverage",
    "nearest_mode",
    "PenultimateFeatures",
    "per_class_w1",
    "train_classifier",
    "wasserstein1",
]
