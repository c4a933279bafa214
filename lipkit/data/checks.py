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
