"""BatchNorm's gamma under a spectral constraint (opt-in: batchnorm="lipschitz" | "seed").

In eval mode BatchNorm is the diagonal map x -> gamma / sqrt(running_var + eps) * x (plus
a shift), whose norm is max_c |gamma_c| / sqrt(running_var_c + eps):
- "lipschitz" scales gamma so that this norm is `bound` (soft=True: at most `bound`), so
  the eval-mode layer is bound-Lipschitz (in training mode BatchNorm divides by batch
  statistics, which no constraint on gamma controls: prefer no BN in a critic);
- "seed" is the seed post's convention: gamma -> gamma * bound / ||gamma||_2, i.e. gamma
  treated as a 1 x C matrix (it ignores running_var, so it bounds nothing by itself).
The running variance is read from the layer at every forward (a pre-hook binds it), never
through a stored reference to the layer (that would make the module tree cyclic).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from .base import Constraint, as_dtype, autocast_off, compute_dtype, normalize_by

CONVENTIONS = ("lipschitz", "seed")


class BatchNormScale(Constraint):
    """gamma -> gamma * bound / sigma, sigma = max|gamma|/sqrt(var+eps) or ||gamma||_2."""

    method = "spectral"
    observes_layer = True
    reuse_within_update = False  # the map reads the running variance, which every forward moves
    full_precision_map = False  # elementwise: no conv or matmul to switch

    def __init__(self, layer: nn.Module, *, convention: str = "lipschitz", bound: float = 1.0,
                 soft: bool = False) -> None:
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"batchnorm={convention!r} is not one of {CONVENTIONS} (or None)")
        if convention == "lipschitz" and getattr(layer, "running_var", None) is None:
            raise ValueError(
                f"batchnorm='lipschitz' needs running statistics, but {layer} has "
                "track_running_stats=False; use batchnorm='seed' or leave this layer out"
            )
        self.convention, self.bound, self.soft = convention, float(bound), soft
        self._running_var: Tensor | None = None
        self._eps = float(layer.eps)
        self.observe(layer, None)

    def observe(self, layer: nn.Module, args: tuple[Any, ...] | None) -> None:
        self._running_var = getattr(layer, "running_var", None)
        self._eps = float(layer.eps)

    def constrained(self, gamma: Tensor) -> Tensor:
        with autocast_off(gamma.device.type):
            g = as_dtype(gamma, compute_dtype(gamma.dtype))
            if self.convention == "lipschitz":
                std = torch.sqrt(as_dtype(self._running_var, g.dtype) + self._eps)
                sigma = (g.abs() / std).amax()
            else:
                sigma = torch.linalg.vector_norm(g)
            return as_dtype(normalize_by(g, sigma, self.bound, self.soft), gamma.dtype)

    def options(self) -> dict:
        return {"batchnorm": self.convention, "bound": self.bound, "soft": self.soft}
