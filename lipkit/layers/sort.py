"""Sorting activations: GroupSort (Anil, Lucas & Grosse, ICML 2019), MaxMin, FullSort.

Why not ReLU in a 1-Lipschitz network: ReLU zeroes the gradient of every unit that is off,
so with every layer of norm 1 the network's gradient norm is below 1 wherever units switch
off, and a deep ReLU network with norm-1 layers cannot represent functions whose gradient
norm is 1 almost everywhere (the optimal WGAN critic, a margin-maximizing classifier).
Sorting the entries of each group only permutes them: at almost every input its Jacobian
is a permutation matrix, so it is 1-Lipschitz AND preserves gradient norms, and with
orthonormal layers the whole network does.
"""
from __future__ import annotations

import torch.nn as nn
from torch import Tensor


class GroupSort(nn.Module):
    """Sort the channels (dim 1) of the input in consecutive groups of `group_size`,
    ascending. group_size=2 is MaxMin (each pair becomes (min, max)); the channel count
    must be a multiple of group_size."""

    def __init__(self, group_size: int = 2) -> None:
        super().__init__()
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size must be an int >= 1 (2 is MaxMin), got {group_size!r}")
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2:
            raise ValueError(f"{type(self).__name__} sorts dim 1 (channels) of a batch (B, C, ...), "
                             f"got an input of shape {tuple(x.shape)}")
        channels = x.shape[1]
        size = self.group_size or channels
        if channels % size:
            raise ValueError(f"{self!r} needs a channel count (dim 1) divisible by {size}, got {channels} "
                             f"(input shape {tuple(x.shape)}); pick a group_size that divides it")
        if size == 1:
            return x
        return x.unflatten(1, (channels // size, size)).sort(dim=2).values.flatten(1, 2)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class FullSort(GroupSort):
    """Sort all channels (dim 1): GroupSort with one group."""

    def __init__(self) -> None:
        super().__init__(1)
        self.group_size = 0  # 0: the whole channel dim, whatever its size

    def extra_repr(self) -> str:
        return ""
