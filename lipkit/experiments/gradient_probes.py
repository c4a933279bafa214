"""Where a critic's Lipschitz constraint holds: its input-gradient norm on the data, on
same-/cross-class interpolates and off the data manifold.

gradient_norms measures ||grad_x f(x, y)||_2 per point and summarize reduces the norms (median,
p90, max, fraction above MAX_SLOPE); probe_regions (of a 2-D mixture) and regions_of (of given
points) build the probe points of each of REGIONS. Claim (d) (many_classes.py) reads them.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

REGIONS = ("data", "same-class interpolates", "cross-class interpolates", "off-manifold")
MAX_SLOPE = 1.05  # a gradient norm above this violates 1-Lipschitz (5% slack for SN's power iteration)
FAR_STD = 4.0  # off-manifold points lie farther than this many std from every centre
BOX_PAD = 0.25  # off-manifold box: the centres' box grown by this fraction of its size per side


def gradient_norms(critic: nn.Module, points: Tensor, labels: Tensor | None = None,
                   batch_size: int = 1024) -> Tensor:
    """||grad_x f(x_i, y_i)||_2 per sample, shape (n,), on the CPU.

    critic(x, labels) when labels are given (a conditional critic), critic(x) otherwise. The
    critic must score samples independently (no BatchNorm), so one backward of the summed
    scores gives every per-sample gradient. Eval mode: measuring must not run power
    iterations or otherwise change the critic.
    """
    if labels is not None and labels.shape != points.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} must be one per point of {tuple(points.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(iter(critic.parameters()), torch.empty(0)).device
    was_training = critic.training
    critic.eval()
    norms = []
    try:
        with torch.enable_grad():
            for start in range(0, points.shape[0], batch_size):
                x = points[start:start + batch_size].detach().to(device).clone().requires_grad_(True)
                y = None if labels is None else labels[start:start + batch_size].to(device)
                scores = critic(x) if y is None else critic(x, y)
                if scores.numel() != x.shape[0]:
                    raise ValueError(f"critic returned {tuple(scores.shape)} for {x.shape[0]} points: "
                                     "expected one score per point")
                (grad,) = torch.autograd.grad(scores.sum(), x, allow_unused=True)
                grad = torch.zeros_like(x) if grad is None else grad  # a flat critic: slope 0
                norms.append(grad.flatten(1).norm(dim=1).detach().cpu())
    finally:
        critic.train(was_training)
    return torch.cat(norms) if norms else torch.empty(0)


def summarize(norms: Tensor) -> dict[str, float]:
    """median, 90th percentile, max and the fraction of violations (> MAX_SLOPE) of the norms."""
    if norms.numel() == 0:
        raise ValueError("no gradient norms to summarize (0 points)")
    n = norms.double()
    return {"median": float(n.median()), "p90": float(torch.quantile(n, 0.9)), "max": float(n.max()),
            "violations": float((n > MAX_SLOPE).double().mean())}


def pair_interpolates(points: Tensor, labels: Tensor, n: int, *, same_class: bool,
                      generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n points t a + (1 - t) b, t ~ U[0, 1], of pairs (a, b) of distinct pool points of the same
    class (same_class) or of different classes. The label is a's class: for a cross-class
    pair that is the class the critic is asked about, not the one of b's end of the segment."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ia = torch.randint(0, len(points), (n,), generator=generator)
    ya = labels[ia]
    ib = torch.empty_like(ia)
    if same_class:
        for c in ya.unique():
            members = (labels == c).nonzero().flatten()  # sorted: searchsorted finds a's position
            if len(members) < 2:
                raise ValueError(f"class {int(c)} has {len(members)} point(s) in the pool: a same-class pair "
                                 "needs 2; use a larger pool")
            rows = (ya == c).nonzero().flatten()
            shift = torch.randint(1, len(members), (len(rows),), generator=generator)  # never a itself
            ib[rows] = members[(torch.searchsorted(members, ia[rows]) + shift) % len(members)]
    else:
        if labels.unique().numel() < 2:
            raise ValueError("the pool holds a single class: cross-class pairs need two")
        ib = torch.randint(0, len(points), (n,), generator=generator)
        while (bad := labels[ib] == ya).any():  # each redraw succeeds with probability >= 1/2
            ib[bad] = torch.randint(0, len(points), (int(bad.sum()),), generator=generator)
    t = torch.rand((n,) + (1,) * (points.dim() - 1), generator=generator)
    return t * points[ia] + (1 - t) * points[ib], ya


def probe_box(centers: Tensor, std: float) -> tuple[Tensor, Tensor]:
    """(low, high) of the off-manifold box: the centres' box padded by BOX_PAD of its size
    and FAR_STD std, so points beyond the outer modes are probed too."""
    low, high = centers.min(0).values, centers.max(0).values
    pad = BOX_PAD * (high - low) + FAR_STD * std
    return low - pad, high + pad


def off_manifold(centers: Tensor, std: float, n: int, generator: torch.Generator) -> Tensor:
    """n uniform points of probe_box farther than FAR_STD std from every centre."""
    low, high = probe_box(centers, std)
    kept, count = [], 0
    for _ in range(1000):
        u = low + (high - low) * torch.rand(2 * n, centers.shape[1], generator=generator)
        far = torch.cdist(u, centers).min(dim=1).values > FAR_STD * std
        kept.append(u[far])
        count += int(far.sum())
        if count >= n:
            return torch.cat(kept)[:n]
    raise ValueError(f"the mixture's {FAR_STD}-std balls fill the probe box: no off-manifold points")


def probe_regions(dataset: Any, n: int, generator: torch.Generator) -> dict[str, tuple[Tensor, Tensor]]:
    """{region: (points, labels)} of a 2-D mixture (.centers, .std, .sample): REGIONS, n points
    each. Interpolates pair the data region's points; off-manifold labels are uniform."""
    k = dataset.num_classes
    if n < 2 * k:
        raise ValueError(f"n={n}: need >= 2 points per class ({2 * k}) to form same-class pairs")
    labels = torch.arange(n) % k  # stratified: every class has the pairs its interpolates need
    points = dataset.sample_given(labels, generator)
    return regions_of(points, labels, off_manifold(dataset.centers, dataset.std, n, generator), dataset.num_classes,
                      generator)


def regions_of(points: Tensor, labels: Tensor, off: Tensor, num_classes: int,
               generator: torch.Generator) -> dict[str, tuple[Tensor, Tensor]]:
    """REGIONS from labelled data points (the pool of the interpolates, as many as the data)
    and off-manifold points (given uniform random labels)."""
    n = len(points)
    return {"data": (points, labels),
            "same-class interpolates": pair_interpolates(points, labels, n, same_class=True, generator=generator),
            "cross-class interpolates": pair_interpolates(points, labels, n, same_class=False, generator=generator),
            "off-manifold": (off, torch.randint(0, num_classes, (len(off),), generator=generator))}
