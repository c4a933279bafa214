"""Argument checks shared by the data sets and batch streams; messages name the fix."""
from __future__ import annotations

import torch


def _check_generator(generator: torch.Generator | None) -> torch.Generator:
    # A missing generator would silently use the global RNG: a run could not be replayed.
    if generator is None:
        raise ValueError("generator=None: pass a torch.Generator (e.g. torch.Generator().manual_seed(0)) "
                         "so that samples are reproducible")
    if generator.device.type != "cpu":
        raise ValueError(f"generator on {generator.device}: toy samplers draw on the CPU; use a CPU "
                         "generator and move the batch with .to(device)")
    return generator


def _check_count(name: str, n: int, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise ValueError(f"{name}={n!r}: expected an int >= {minimum}")
    return n


def check_labels(labels: torch.Tensor, where: str, *, every_class: bool) -> int:
    """The number of classes of integer labels 0..K-1 (K >= 2), named in the error if not.

    every_class: each of 0..K-1 must occur (a training split): labels all equal to 200 would
    otherwise train a 201-class model in silence."""
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dim() != 1:
        raise ValueError(f"{where}: labels must be a 1-D integer tensor, got {labels.dtype} of shape "
                         f"{tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError(f"{where}: no labels (an empty split)")
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise ValueError(f"{where}: label {low} < 0; classes must be numbered 0..K-1")
    present = torch.unique(labels)
    if every_class and (len(present) < 2 or len(present) != high + 1):
        missing = high + 1 - len(present)
        raise ValueError(f"{where}: labels span 0..{high} but {missing} of those {high + 1} classes have no "
                         f"image (present: {_short(present.tolist())}); number the classes 0..K-1 with K >= 2")
    return high + 1


def _short(values: list[int]) -> str:
    return ", ".join(map(str, values[:8])) + (f", ... ({len(values)} values)" if len(values) > 8 else "")
