"""Certified constants of adaptive pooling and of means over feature dims: the global pooling
every torchvision classifier ends with (nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d,
x.mean([2, 3])).

Adaptive average pooling is separable: output (i, j) averages rows [start_i, end_i) and
columns [start_j, end_j), so per channel the map is the Kronecker product of one 1-D
averaging matrix per spatial axis and its norm is the product of their norms: exact, from
SVDs of matrices no larger than (output size x input size) of ONE axis. Adaptive max pooling
moves each output by at most the largest change in its window, so as for max pooling
(layer_rules) its constant is sqrt(the most windows sharing one entry), again per axis.
A mean over feature dims splits the entries into disjoint groups of n and averages each:
exactly 1/sqrt(n) (a sum: sqrt(n)).
"""
from __future__ import annotations

import math

import torch


def averaging_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """The (out_size, in_size) matrix of 1-D adaptive average pooling (PyTorch's windows:
    floor(i * in / out) .. ceil((i + 1) * in / out))."""
    rows = torch.zeros(out_size, in_size, dtype=torch.float64)
    for i in range(out_size):
        start, end = (i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)
        rows[i, start:end] = 1.0 / (end - start)
    return rows


def _output_sizes(spatial: tuple[int, ...], output_size) -> tuple[int, ...]:
    sizes = (output_size,) * len(spatial) if isinstance(output_size, int) else tuple(output_size)
    if len(sizes) != len(spatial):
        raise ValueError(f"output_size {output_size} does not match {len(spatial)} spatial dims")
    return tuple(s if o is None else int(o) for s, o in zip(spatial, sizes))  # None keeps the input size


def adaptive_avg_constant(spatial: tuple[int, ...], output_size) -> float:
    """Exact operator norm of adaptive average pooling of one channel of size `spatial`."""
    norm = 1.0
    for n, m in zip(spatial, _output_sizes(spatial, output_size)):
        norm *= float(torch.linalg.matrix_norm(averaging_matrix(n, m), ord=2))
    return norm


def adaptive_max_constant(spatial: tuple[int, ...], output_size) -> float:
    """sqrt(largest number of adaptive max windows sharing one entry) (a certified bound)."""
    count = 1
    for n, m in zip(spatial, _output_sizes(spatial, output_size)):
        count *= int((averaging_matrix(n, m) > 0).sum(0).max())
    return math.sqrt(count)


def reduced_count(sample_shape: tuple[int, ...], dims) -> int:
    """n, the entries per group of a reduction (mean, sum, ...) over feature dims `dims` of a
    batch (dims count the batch as 0): a mean has constant 1/sqrt(n), a sum sqrt(n). ValueError
    for a reduction that includes the batch dim (it mixes samples)."""
    ndim = len(sample_shape) + 1
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    resolved = {d % ndim for d in dims}
    if not dims or 0 in resolved:
        raise ValueError("a reduction over the batch dimension mixes the samples of a batch")
    return math.prod(sample_shape[d - 1] for d in resolved)


def pooled_extent(name: str, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The extent a d-dimensional pooling ("MaxPool2d", "adaptive_max_pool3d": d from the
    name) pools on a sample of `sample_shape`: its last d dims. Not sample_shape[1:]: a
    MaxPool2d fed (B, H, W) treats it as one unbatched (C, H, W) image and pools over H and
    W, and counting over W alone certified 1.73 for a 3x3 stride-1 pool whose constant is 3."""
    d = int(name[-2])
    if not name.endswith("d") or d not in (1, 2, 3) or len(sample_shape) < d:
        raise ValueError(f"{name} pools {d} dims, but one sample has shape {tuple(sample_shape)}")
    return tuple(sample_shape[-d:])
