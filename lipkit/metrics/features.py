"""The domain classifier whose penultimate features FID and KID are computed on.

Inception features mean little on 8x8 digits or 28x28 grey images, and no weights can be
downloaded here, so lipkit trains a small CNN once per data set (seeded, a few CPU epochs)
and caches it. FID/KID values are comparable only between runs that use the same cached
file: the file name carries the data set, the architecture version, epochs and seed.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from ..data import DataSpec

ARCH_VERSION = 2  # bump when FeatureCNN changes: old caches then stop matching
FEATURE_DIM = 128
LEARNING_RATE = 1e-3
EVAL_BATCH = 1000


class FeatureCNN(nn.Module):
    """conv16-pool-conv32-pool-conv64-avgpool(4x4)-fc128 (features)-fc(num_classes).

    Two poolings and an adaptive pool make one architecture fit 8x8 and 28x28 inputs; the
    network is small so that a Fashion-MNIST epoch takes ~30 s on one loaded CPU core. A 4x4
    (not 2x2) final pool: 83.7% vs 78.7% Fashion-MNIST test accuracy after 2 epochs (measured).
    Inputs: (N, C, H, W) in [0, 1].
    """

    def __init__(self, num_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(1024, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class PenultimateFeatures(nn.Module):
    """The classifier's penultimate layer: the feature map of FID / KID (num_features is the
    width, also what torchmetrics reads of a custom `feature` module)."""

    def __init__(self, classifier: FeatureCNN) -> None:
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = FEATURE_DIM

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.features(x.float())


@dataclass
class DomainClassifier:
    """A trained FeatureCNN with its test accuracy and where it is cached."""

    model: FeatureCNN
    dataset: str
    test_accuracy: float
    train_seconds: float
    path: Path | None

    def feature_module(self) -> PenultimateFeatures:
        return PenultimateFeatures(self.model)

    def predict(self, images: Tensor) -> Tensor:
        """Predicted class per image ((N,) long); images (N, C, H, W) in [0, 1]."""
        return predict(self.model, images)


@torch.no_grad()
def predict(model: nn.Module, images: Tensor) -> Tensor:
    """argmax of model's logits, in chunks, in eval mode ((N,) long on the CPU)."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(chunk.to(device).float()).argmax(1).cpu() for chunk in images.split(EVAL_BATCH)])


def train_classifier(train_images: Tensor, train_labels: Tensor, test_images: Tensor, test_labels: Tensor,
                     *, num_classes: int, epochs: int, batch_size: int = 128,
                     seed: int = 0) -> tuple[FeatureCNN, float]:
    """Train a FeatureCNN with Adam, seeded (init and batch order); returns (model, test accuracy)."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs={epochs!r}, batch_size={batch_size!r}: both must be >= 1")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        model = FeatureCNN(num_classes, train_images.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train_labels), generator=generator)
        for index in order.split(batch_size):
            loss = F.cross_entropy(model(train_images[index]), train_labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    accuracy = float((predict(model, test_images) == test_labels).double().mean())
    return model, accuracy


def default_cache_dir() -> Path:
    """$LIPKIT_CACHE, else ~/.cache/lipkit (XDG_CACHE_HOME respected)."""
    if os.environ.get("LIPKIT_CACHE"):
        return Path(os.environ["LIPKIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lipkit"


def domain_classifier(dataset: "str | DataSpec" = "digits", *, cache_dir: str | Path | None = None,
                      epochs: int | None = None, seed: int = 0, retrain: bool = False) -> DomainClassifier:
    """The cached classifier of an image set (a registered name, an idx folder or a DataSpec),
    trained on first use with the set's feature_epochs / feature_batch.

    The cache key covers (data set, ARCH_VERSION, epochs, seed, training-set size); the file
    is written atomically, so an interrupted run never leaves a half-written classifier.
    """
    from ..data import DataSpec, data_names, get_data

    spec = dataset if isinstance(dataset, DataSpec) else get_data(dataset)
    if spec.is_toy:
        raise ValueError(f"dataset={spec.name!r} is a 2-D toy set; FID features need an image set: "
                         f"{', '.join(data_names('image'))} or an idx folder")
    epochs = spec.feature_epochs if epochs is None else epochs
    train, test = spec.split("train"), spec.split("test")
    key = {"dataset": spec.cache_name, "arch": ARCH_VERSION, "epochs": epochs, "batch_size": spec.feature_batch,
           "seed": seed, "n_train": len(train)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir or default_cache_dir()) / f"classifier-{spec.cache_name}-{digest}.pt"
    if path.is_file() and not retrain:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = FeatureCNN(saved["num_classes"], saved["in_channels"])
        model.load_state_dict(saved["state_dict"])
        return DomainClassifier(model.eval(), spec.name, saved["test_accuracy"], saved["train_seconds"], path)
    start = time.perf_counter()
    model, accuracy = train_classifier(train.images, train.labels, test.images, test.labels,
                                       num_classes=train.num_classes, epochs=epochs,
                                       batch_size=spec.feature_batch, seed=seed)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": model.state_dict(), "num_classes": train.num_classes,
               "in_channels": train.images.shape[1], "test_accuracy": accuracy, "train_seconds": seconds, **key}
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        torch.save(payload, handle)
    os.replace(handle.name, path)  # atomic on POSIX: readers see the old file or the new one
    return DomainClassifier(model, spec.name, accuracy, seconds, path)
