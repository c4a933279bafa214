"""The exact Lipschitz constant of maps that copy input entries, at a traced input shape:
padding (every torch padding module and F.pad: CycleGAN's reflection padding, the option-A
shortcut of CIFAR ResNets, U-Nets padding to a skip's size), nearest upsampling (nn.Upsample,
F.interpolate with mode "nearest" / "nearest-exact"), pixel / channel shuffles and the tensor
ops that move or repeat entries (flip, roll, repeat, expand, tile, narrow).

Each output entry of such a map is a copy of one input entry or a constant (padding's fill;
reflect, replicate and circular padding and upsampling copy some entries several times;
negative padding crops). So its linear part P has at most one 1 per output row, P^T P is
diagonal, holding how many times each input entry is copied, and ||P|| = sqrt(most copies of
one entry), exactly: the gradient of the map's output sum on one sample counts them. The
fill constant moves outputs alike and does not change the constant. That a call IS such a
map is checked on distinct input values before it is counted (copy_norm). Upsampling with a
weighted mode (bilinear, ...) goes to interpolation.py instead.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .interpolation import SEPARABLE_MODES, separable_norm

PAD_MODES = ("constant", "reflect", "replicate", "circular")
COPY_MODES = ("nearest", "nearest-exact")  # interpolation modes that copy
FUNCTIONS = (F.pad, F.interpolate, F.pixel_shuffle, F.pixel_unshuffle, torch.flip, torch.roll, torch.tile, torch.narrow)
# Tensor methods that copy entries (x.flip(2), x.repeat(1, 2, 1, 1), x.expand(-1, 4, -1, -1), ...)
METHODS = ("flip", "roll", "repeat", "expand", "tile", "narrow")
PAD_MODULES = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
               nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d, nn.ReplicationPad2d,
               nn.ReplicationPad3d, nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d)
MODULES = (*PAD_MODULES, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle)


def copy_norm(fn: Callable[[torch.Tensor], torch.Tensor], sample_shape: tuple[int, ...]) -> float:
    """||fn|| for a map fn that copies entries, on one sample of `sample_shape` (a batch of 1
    is passed): the square root of the most copies of one entry (0 when nothing is kept).
    ValueError when an output entry of fn is neither an input entry nor fn's constant."""
    # distinct values, from a generator of its own: a bound must not move the caller's RNG
    order = torch.randperm(math.prod(sample_shape), generator=torch.Generator().manual_seed(0))
    x = order.to(torch.float64).add_(1).view(1, *sample_shape)
    out, fill = fn(x), fn(torch.zeros_like(x))
    inputs = x.flatten().sort().values
    found = inputs[torch.searchsorted(inputs, out.flatten()).clamp(max=inputs.numel() - 1)]
    if not bool(((found == out.flatten()) | (out.flatten() == fill.flatten())).all()):
        raise ValueError("its outputs are not copies of its inputs (a weighted map, not a copy)")
    x = torch.zeros((1, *sample_shape), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        (copies,) = torch.autograd.grad(fn(x).sum(), x)
    return math.sqrt(float(copies.max())) if copies.numel() else 0.0


def call_constant(fn, args: tuple, kwargs: dict[str, Any], sample_shape: tuple[int, ...]) -> float:
    """The constant of fn(x, *args, **kwargs) (fn in FUNCTIONS, or x.fn(*args, **kwargs) for a
    name in METHODS; arguments as the probe run passed them); ValueError for a mode that does
    not copy."""
    _check_batch_kept(fn, args, kwargs, len(sample_shape) + 1)
    if isinstance(fn, str):
        return copy_norm(lambda x: getattr(x, fn)(*args, **kwargs), sample_shape)
    if fn is F.pad:
        mode = kwargs.get("mode", args[1] if len(args) > 1 else "constant")
        if mode not in PAD_MODES:
            raise ValueError(f"padding mode {mode!r} is not one of {PAD_MODES}")
    if fn is F.interpolate:
        mode = kwargs.get("mode", args[2] if len(args) > 2 else "nearest")
        if mode in SEPARABLE_MODES:
            return separable_norm(lambda x: fn(x, *args, **kwargs), sample_shape)
        if mode not in COPY_MODES:
            raise ValueError(f"interpolation mode {mode!r} is not bounded: only {COPY_MODES + SEPARABLE_MODES} are")
    return copy_norm(lambda x: fn(x, *args, **kwargs), sample_shape)


def _check_batch_kept(fn, args: tuple, kwargs: dict[str, Any], ndim: int) -> None:
    """ValueError for a flip or roll that moves entries across the samples of a batch (over dim
    0, or a roll without dims, which rolls the flattened batch): shapes still follow the batch
    size, so the probe cannot see it, and one sample's output would come from another."""
    name = fn if isinstance(fn, str) else getattr(fn, "__name__", "")
    if name not in ("flip", "roll"):
        return
    if name == "flip":  # torch.flip(x, dims) or x.flip(*dims)
        dims = kwargs.get("dims", args[0] if len(args) == 1 else args)
    else:  # torch.roll(x, shifts, dims=None)
        dims = kwargs.get("dims", args[1] if len(args) > 1 else None)
    dims = (dims,) if isinstance(dims, int) else dims
    if not dims or any(d % ndim == 0 for d in dims):
        raise ValueError(f"{name} over the batch dimension (dims={dims}) mixes the samples of a batch: "
                         "give dims of one sample")


def module_constant(layer: nn.Module, sample_shape: tuple[int, ...]) -> float:
    """The constant of a module of MODULES on samples of `sample_shape`."""
    if isinstance(layer, nn.Upsample) and layer.mode in SEPARABLE_MODES:
        return separable_norm(layer, sample_shape)
    if isinstance(layer, nn.Upsample) and layer.mode not in COPY_MODES:
        raise ValueError(f"{layer}: mode {layer.mode!r} is not bounded, only {COPY_MODES + SEPARABLE_MODES} are")
    return copy_norm(layer, sample_shape)
