"""Weight penalties read off the weights alone: L2 (eq. L2) and the Frobenius excess.

||W||_F >= ||W||_2 = the layer's Lipschitz constant under the reshape convention, so both
are cheap, loose Lipschitz regularizers (SEED_NOTES section 2): l2_penalty is exactly
weight decay, frobenius_penalty only acts on layers whose Frobenius norm exceeds a bound
(the seed found it works for WGAN critics but converges slowly).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from .layers import Where, select_layers
from .norms import safe_sqrt


def l2_penalty(model: nn.Module, where: Where = None) -> Tensor:
    """sum over the selected layers of ||W||_F^2 (weights only, biases excluded).

    Added as `lambda * l2_penalty(model)` it is weight decay restricted to the layers that
    carry the Lipschitz constant. `where`: see lipkit.penalties.layers.
    """
    return torch.stack([layer.weight.pow(2).sum() for layer in select_layers(model, where)]).sum()


def frobenius_penalty(model: nn.Module, max_norm: float = 1.0, where: Where = None) -> Tensor:
    """sum over the selected layers of relu(||W||_F - max_norm)^2.

    Zero (with zero gradient) for every layer already inside the Frobenius ball of radius
    max_norm, so unlike l2_penalty it does not shrink weights that satisfy the bound.
    max_norm=0 gives l2_penalty. The norm is safe at a zero weight (no NaN gradient).
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not (
        math.isfinite(max_norm) and max_norm >= 0
    ):
        raise ValueError(f"max_norm must be a finite number >= 0, got {max_norm!r}")
    terms = [
        torch.relu(safe_sqrt(layer.weight.pow(2).sum()) - max_norm).pow(2)
        for layer in select_layers(model, where)
    ]
    return torch.stack(terms).sum()
