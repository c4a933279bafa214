"""The exact Lipschitz constant of padding at a traced input shape: F.pad and torch's padding
modules (ZeroPad, ConstantPad, ReflectionPad, ReplicationPad, CircularPad; CycleGAN's
generators, the option-A shortcut of CIFAR ResNets, U-Nets padding to match a skip).

Padding copies input entries into the output (reflect, replicate and circular padding copy
some entries several times; negative amounts crop) and fills the rest with a constant. Its
linear part P has a single 1 in each output row, so P^T P is diagonal, holding how many
times each input entry is copied: ||P|| = sqrt(most copies of one entry), exactly. The fill
constant moves every output alike and does not change the constant.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD_MODES = ("constant", "reflect", "replicate", "circular")
PAD_MODULES = {
    **dict.fromkeys((nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d),
                    "constant"),
    **dict.fromkeys((nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d), "reflect"),
    **dict.fromkeys((nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d), "replicate"),
    **dict.fromkeys((nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d), "circular"),
}


def pad_constant(sample_shape: tuple[int, ...], pad, mode: str | None) -> float:
    """||F.pad(., pad, mode)|| on samples of `sample_shape`: the square root of the copy count
    of the most-copied entry, counted as the gradient of the padded sum of one sample (0 when
    everything is cropped). ValueError for an unknown mode or pad amounts that are not ints."""
    mode = "constant" if mode is None else mode
    if mode not in PAD_MODES:
        raise ValueError(f"padding mode {mode!r} is not one of {PAD_MODES}")
    if not isinstance(pad, (tuple, list)) or not pad or len(pad) % 2 \
            or not all(isinstance(p, int) and not isinstance(p, bool) for p in pad):
        raise ValueError(f"pad={pad!r} must be a tuple of ints, two per padded dimension")
    x = torch.zeros((1, *sample_shape), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        (copies,) = torch.autograd.grad(F.pad(x, tuple(pad), mode=mode).sum(), x)
    return math.sqrt(float(copies.max())) if copies.numel() else 0.0
