"""The exact norm of weighted interpolation (nn.Upsample, F.interpolate with mode linear,
bilinear, bicubic, trilinear, area or lanczos, antialiased or not: U-Net decoders upsample by 2
with align_corners=True) at a traced input shape.

Per channel such a map is a tensor product of one matrix per spatial axis, A_1 x ... x A_d
(torch computes each axis's source positions and weights from that axis's sizes alone), and
every channel gets the same map, so its norm is ||A_1|| ... ||A_d||, exactly. Column i of A_k
is the map applied to a unit vector along axis k (constant along the other axes, where each
row of an interpolation sums to 1); the product form is checked on a random sample before it
is trusted, so a mode that is not separable is refused, never guessed.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..norms.linalg import certified_top_singular_value

SEPARABLE_MODES = ("linear", "bilinear", "bicubic", "trilinear", "area", "lanczos")
CHUNK_ENTRIES = 2 ** 21  # input entries per call of the map while reading its axis matrices


def axis_matrix(fn: Callable[[Tensor], Tensor], spatial: tuple[int, ...], axis: int) -> Tensor:
    """A_axis (out x in): fn applied to one-hot vectors along `axis`, the other axes of size 1
    (cheap), or, where the map shrinks a size-1 axis to nothing (a scale factor below 1), of
    their real sizes (constant along them), read at index 0 of the other axes, CHUNK_ENTRIES
    input entries per call."""
    reduced = tuple(n if k == axis else 1 for k, n in enumerate(spatial))
    try:
        matrix = _axis_matrix(fn, reduced, axis)
        if matrix.numel():
            return matrix
    except RuntimeError:
        pass
    return _axis_matrix(fn, spatial, axis)


def _axis_matrix(fn: Callable[[Tensor], Tensor], spatial: tuple[int, ...], axis: int) -> Tensor:
    n = spatial[axis]
    shape = [1] * len(spatial)
    shape[axis] = n
    index = tuple(slice(None) if k == axis else 0 for k in range(len(spatial)))
    step = max(1, CHUNK_ENTRIES // math.prod(spatial))
    columns = []
    for start in range(0, n, step):
        onehot = torch.eye(n, dtype=torch.float64)[start:start + step].view(-1, 1, *shape).expand(-1, 1, *spatial)
        columns.append(fn(onehot.contiguous())[(slice(None), 0, *index)].clone())  # (chunk, out): no full output kept
    return torch.cat(columns).T


def separable_norm(fn: Callable[[Tensor], Tensor], sample_shape: tuple[int, ...]) -> float:
    """||fn|| on samples of `sample_shape` (C, *spatial) for an interpolation fn acting alike on
    every channel: the product of the per-axis matrices' certified norms. ValueError when fn is
    not that tensor product (checked on one random sample)."""
    spatial = tuple(sample_shape[1:])
    matrices = [axis_matrix(fn, spatial, k) for k in range(len(spatial))]
    sample = torch.randn((1, 1, *spatial), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    product = sample
    for k, a in enumerate(matrices):  # apply A_k along spatial axis k (dim k + 2)
        product = torch.movedim(torch.tensordot(product, a, dims=([k + 2], [1])), -1, k + 2)
    expected = fn(sample)
    if product.shape != expected.shape or not torch.allclose(product, expected, rtol=1e-9, atol=1e-12):
        raise ValueError("it is not a product of per-axis maps (not separable), so its norm is not read off them")
    return math.prod(certified_top_singular_value(a) for a in matrices)
