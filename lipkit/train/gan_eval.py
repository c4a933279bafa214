"""Evaluation of a WGAN run at intervals: sample quality, the critic's Lipschitz constant, PNGs.

Kept cheap on a CPU: a fixed number of samples (config.eval_samples), a short lower-bound
search, the certified upper bound only at the end. Samples come from a generator seeded by
config.seed alone (the same z at every evaluation, so PNGs show progress on fixed noise)
and the generator runs in eval mode (BatchNorm running statistics), so evaluating never
changes a training stream or parameter. GanEvaluator holds what evaluation reads (config,
the two networks, the data set and its held-out points), not the training task.
- 2-D: exact W1 to held-out real points, modes covered and %HQ (mixtures), and for a
  conditional run the nearest-mode class accuracy and the per-class W1 (mean, max).
- images: FID/KID in the cached lipkit classifier's feature space, class accuracy.
- critic: lk.lipschitz_lower_bound on real and generated points (per class when conditional).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from .. import data as lkdata
from ..bounds import lipschitz_bound, lipschitz_lower_bound
from ..data import get_data
from .gan_config import GanConfig

EVAL_SEED_OFFSET = 104_729  # eval noise stream: seed + this (disjoint from training streams)
LOWER_BOUND_POINTS = 32  # real and as many fake points start the lower-bound search
LOWER_BOUND_CLASSES = 4  # conditional critics: classes searched (one label map each)
MIN_GRID_PIXELS = 400  # sample grids are enlarged (nearest neighbour) to at least this many pixels
GRID_SIDE = 8  # image PNG: GRID_SIDE x GRID_SIDE samples (rows = classes when conditional)


class FixedLabel(nn.Module):
    """x -> critic(x, label): one class's map, a single-input model for the bound tools."""

    def __init__(self, critic: nn.Module, label: int) -> None:
        super().__init__()
        self.critic, self.label = critic, label

    def forward(self, x: Tensor) -> Tensor:
        return self.critic(x, torch.full((x.shape[0],), self.label, dtype=torch.long, device=x.device))


@torch.no_grad()
def sample(generator: nn.Module, n: int, labels: Tensor | None, noise: torch.Generator,
           device: torch.device | str) -> Tensor:
    """n samples of `generator` in eval mode, on the CPU (labels: one per sample when conditional)."""
    was_training = generator.training
    generator.eval()
    try:
        z = torch.randn(n, generator.noise_dim, generator=noise).to(device)
        y = labels.to(device) if labels is not None else None
        return generator(z, y).cpu()
    finally:
        generator.train(was_training)


@dataclass
class GanEvaluator:
    """Everything a WGAN evaluation reads; the networks are the training task's own objects."""

    config: GanConfig
    critic: nn.Module
    generator: nn.Module
    dataset: Any  # the training set (toy mixtures: centers and std for the mode metrics)
    held_out: Tensor  # held-out real points / test images in [-1, 1]
    held_out_labels: Tensor | None
    num_classes: int
    device: torch.device
    _classifier: Any = field(default=None, repr=False)  # cached FID feature network

    def evaluate(self, step: int, folder: Path) -> dict[str, float]:
        """Metrics at `step` and a samples PNG in `folder`."""
        c = self.config
        gen = torch.Generator().manual_seed(c.seed + EVAL_SEED_OFFSET)
        labels = self.held_out_labels if c.conditional else None
        fake = sample(self.generator, self.held_out.shape[0], labels, gen, self.device)
        if not torch.isfinite(fake).all():
            return {"eval_non_finite_samples": 1.0}
        toy = fake.dim() == 2
        metrics = self.toy_metrics(fake, labels) if toy else self.image_metrics(fake, labels)
        metrics["critic_lower_bound"] = self.critic_lower_bound(fake, labels)
        if toy:
            save_scatter(folder / f"samples-{step:08d}.png", self.held_out, fake, labels, step, c.data)
        else:
            grid_labels = None
            if c.conditional:
                grid_labels = torch.arange(GRID_SIDE * GRID_SIDE) // GRID_SIDE % self.num_classes
            grid = sample(self.generator, GRID_SIDE * GRID_SIDE, grid_labels, gen, self.device)
            save_grid(folder / f"samples-{step:08d}.png", grid)
        return metrics

    def toy_metrics(self, fake: Tensor, labels: Tensor | None) -> dict[str, float]:
        from ..metrics import conditional_accuracy, mode_coverage, per_class_w1, wasserstein1

        real = self.held_out
        out = {"w1": wasserstein1(fake, real)}
        centers = getattr(self.dataset, "centers", None)
        if centers is not None:
            coverage = mode_coverage(fake, centers, self.dataset.std)
            out.update(modes_covered=float(coverage.modes_covered), hq_percent=coverage.hq_percent)
            if labels is not None:
                out["class_accuracy"] = conditional_accuracy(fake, labels, centers)
                per_class = per_class_w1(fake, labels, real, self.held_out_labels, self.num_classes)
                finite = per_class[torch.isfinite(per_class)]
                out.update(w1_class_mean=float(finite.mean()) if len(finite) else math.nan,
                           w1_class_max=float(finite.max()) if len(finite) else math.nan)
        return out

    def domain_classifier(self):
        """The cached lipkit classifier whose features FID/KID use (trained once per data set)."""
        from ..metrics import domain_classifier

        if self._classifier is None:
            self._classifier = domain_classifier(get_data(self.config.data))
        return self._classifier

    def image_metrics(self, fake: Tensor, labels: Tensor | None) -> dict[str, float]:
        if not self.config.image_metrics:
            return {}
        from ..metrics import image_scores

        scores = image_scores(lkdata.from_gan_range(self.held_out), lkdata.from_gan_range(fake),
                              self.domain_classifier(), fake_labels=labels, seed=self.config.seed)
        out = {"fid": scores.fid, "kid": scores.kid_mean, "kid_std": scores.kid_std}
        if scores.class_accuracy is not None:
            out["class_accuracy"] = scores.class_accuracy
        return out

    def critic_lower_bound(self, fake: Tensor, labels: Tensor | None) -> float:
        """Largest Lipschitz ratio of the critic found from real and generated points."""
        n, steps = LOWER_BOUND_POINTS, self.config.lower_bound_steps
        real, fake = self.held_out[:n].to(self.device), fake[:n].to(self.device)
        if labels is None:
            return lipschitz_lower_bound(self.critic, torch.cat([real, fake]), steps=steps)
        real_labels, fake_labels = self.held_out_labels[:n], labels[:n]
        best = 0.0
        for k in torch.cat([real_labels, fake_labels]).unique()[:LOWER_BOUND_CLASSES].tolist():
            points = torch.cat([real[real_labels == k], fake[fake_labels == k]])
            best = max(best, lipschitz_lower_bound(FixedLabel(self.critic, int(k)), points, steps=steps))
        return best

    def certified_bound(self) -> float | str | None:
        """lk.lipschitz_bound of the final critic (single-input critics only), or why not."""
        if self.config.conditional:
            return "not computed: the projection critic takes (x, y)"
        shape = tuple(self.held_out.shape[1:])
        try:
            return float(lipschitz_bound(self.critic, shape).upper)
        except (ValueError, TypeError, RuntimeError) as err:
            return f"not computed: {type(err).__name__}: {err}"


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def save_scatter(path: Path, real: Tensor, fake: Tensor, labels: Tensor | None, step: int, title: str) -> None:
    """Held-out real points (grey) and generated ones (coloured by requested class)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(real[:, 0], real[:, 1], s=2, c="0.75", label="real")
    colors: Any = "tab:red" if labels is None else labels.numpy()
    ax.scatter(fake[:, 0], fake[:, 1], s=2, c=colors, cmap="tab20" if labels is not None else None,
               label="generated")
    low, high = real.min(0).values - 0.5, real.max(0).values + 0.5  # frame the data, not outliers
    ax.set_xlim(float(low[0]), float(high[0]))
    ax.set_ylim(float(low[1]), float(high[1]))
    ax.set_title(f"{title}, step {step}")
    ax.set_aspect("equal")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), markerscale=4)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def save_grid(path: Path, images: Tensor) -> None:
    """A square grid of (N, C, H, W) images in [-1, 1] (first channel shown in grey)."""
    plt = _figure()
    images = lkdata.from_gan_range(images)[:, 0]
    side = math.isqrt(images.shape[0])
    h, w = images.shape[1:]
    grid = torch.ones(side * (h + 1) + 1, side * (w + 1) + 1)
    for i in range(side * side):
        r, c = divmod(i, side)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = images[i]
    scale = max(1, MIN_GRID_PIXELS // grid.shape[0])  # 8x8 digits would make a 73-pixel PNG: enlarge
    grid = grid.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    plt.imsave(path, grid.numpy(), cmap="gray", vmin=0, vmax=1)
