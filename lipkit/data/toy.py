"""Toy 2-D sets, after WGAN-GP's toy code (Gulrajani et al. 2017, ANCHORS.md).

8 Gaussians and 25 Gaussians are mixtures whose centres and std are exposed (mode-coverage
metrics need them), the swiss roll is not a mixture. `rings(K)` is lipkit's many-class
mixture for conditional GANs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .checks import _check_count, _check_generator


@dataclass(frozen=True)
class ToyMixture:
    """An equal-weight mixture of isotropic 2-D Gaussians N(centers[k], std^2 I).

    centers: (K, 2) float32; label k means "drawn from mode k". The metrics read centers and
    std (a sample is high quality within 3 std of its nearest centre).
    """

    name: str
    centers: Tensor
    std: float

    @property
    def num_classes(self) -> int:
        return self.centers.shape[0]

    @property
    def dim(self) -> int:
        return 2

    @property
    def shape(self) -> tuple[int, ...]:
        return (2,)

    def sample_labels(self, n: int, generator: torch.Generator) -> Tensor:
        """n mode indices, uniform over the K modes (long, shape (n,))."""
        _check_count("n", n)
        return torch.randint(0, self.num_classes, (n,), generator=_check_generator(generator))

    def sample_given(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        """One point per requested label: the real batch of a conditional step."""
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.dim() != 1 or (labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes)):
            raise ValueError(f"labels must be a 1-D tensor of ints in [0, {self.num_classes}); "
                             f"got shape {tuple(labels.shape)}")
        noise = torch.randn(labels.shape[0], 2, generator=_check_generator(generator))
        return self.centers[labels] + self.std * noise

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(x (n, 2) float32, labels (n,) long)."""
        labels = self.sample_labels(n, generator)
        return self.sample_given(labels, generator), labels


@dataclass(frozen=True)
class SwissRoll:
    """WGAN-GP's swiss roll: make_swiss_roll(noise=.25)[:, [0, 2]] / 7.5. Not a mixture."""

    name: str = "swissroll"
    noise: float = 0.25
    num_classes: int = 0  # no labels: sample() returns labels=None
    dim: int = 2
    shape: tuple[int, ...] = (2,)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, None]:
        from sklearn.datasets import make_swiss_roll

        _check_count("n", n)
        # sklearn wants a numpy seed: draw it from the torch generator so one state drives all.
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=_check_generator(generator)))
        points, _ = make_swiss_roll(n_samples=n, noise=self.noise, random_state=seed)
        return torch.from_numpy(points[:, [0, 2]] / 7.5).float(), None


def gaussians8() -> ToyMixture:
    """8 modes on a radius-2 circle, std 0.02, all divided by 1.414 (WGAN-GP toy code).

    Label k is the mode at angle k * 45 degrees.
    """
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centers = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1) / 1.414
    return ToyMixture("gaussians8", centers.float(), 0.02 / 1.414)


def gaussians25() -> ToyMixture:
    """25 modes on the grid {-2,-1,0,1,2} x 2 (i.e. -4..4 step 2), std 0.05, divided by 2.828.

    Label 5 * i + j is the mode at (2 * (i - 2), 2 * (j - 2)) / 2.828.
    """
    grid = torch.arange(-2, 3, dtype=torch.float64) * 2.0
    centers = torch.cartesian_prod(grid, grid) / 2.828
    return ToyMixture("gaussians25", centers.float(), 0.05 / 2.828)


def rings(num_classes: int = 10, *, num_rings: int | None = None, radius: float = 2.0,
          std: float | None = None) -> ToyMixture:
    """num_classes modes on concentric rings: a many-class set for conditional GANs.

    Ring j (1..R) has radius radius * j / R and a number of modes proportional to j, so
    neighbours are about equally far apart along and across rings. R defaults to the
    smallest with pi R (R + 1) >= K (arc spacing ~ ring spacing). std defaults to a tenth of
    the smallest centre distance: the 3-std balls are disjoint and a sample lies nearer its
    own centre than any other with probability ~1 - 3e-7 per neighbour (a 5-std margin).
    Labels run ring by ring from the inside, by angle within a ring.
    """
    _check_count("num_classes", num_classes, 2)
    if num_rings is None:
        num_rings = 1
        while math.pi * num_rings * (num_rings + 1) < num_classes:
            num_rings += 1
    _check_count("num_rings", num_rings)
    if num_rings > num_classes:
        raise ValueError(f"num_rings={num_rings} > num_classes={num_classes}: every ring needs a mode")
    if not radius > 0:
        raise ValueError(f"radius={radius!r}: expected > 0")
    # Largest-remainder allocation of K modes to rings in proportion to j, at least 1 each.
    share = np.arange(1, num_rings + 1) * num_classes / (num_rings * (num_rings + 1) / 2)
    counts = np.maximum(np.floor(share).astype(int), 1)
    for j in np.argsort(-(share - np.floor(share)), kind="stable"):
        if counts.sum() >= num_classes:
            break
        counts[j] += 1
    while counts.sum() > num_classes:  # only when the max(..., 1) floor over-allocated
        counts[np.argmax(counts)] -= 1
    parts = []
    for j, count in enumerate(counts, start=1):
        # Half-step stagger between rings keeps inner and outer modes from lining up.
        angles = (torch.arange(count, dtype=torch.float64) + 0.5 * (j % 2)) * (2 * math.pi / count)
        parts.append(radius * j / num_rings * torch.stack([angles.cos(), angles.sin()], dim=1))
    centers = torch.cat(parts)
    if std is None:
        distances = torch.cdist(centers, centers) + torch.eye(num_classes, dtype=torch.float64) * 1e9
        std = float(distances.min()) / 10
    if not std > 0:
        raise ValueError(f"std={std!r}: expected > 0")
    return ToyMixture(f"rings{num_classes}", centers.float(), float(std))
