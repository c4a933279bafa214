"""Weight clipping (original WGAN, arXiv 1701.07875): every entry clamped to [-c, c].

Crude but cheap: it bounds the Frobenius norm (hence the Lipschitz constant) of every
layer. WGAN applies it as a projection after each update (mode="project"); as a
reparametrization the gradient of a clamped entry is zero.
"""
from __future__ import annotations

from torch import Tensor

from .base import Constraint


class WeightClip(Constraint):
    """W -> clamp(W, -c, c)."""

    method = "clip"
    full_precision_map = False  # elementwise: no conv or matmul to switch

    def __init__(self, c: float = 0.01) -> None:
        super().__init__()
        self.c = float(c)

    def constrained(self, raw: Tensor) -> Tensor:
        return raw.clamp(-self.c, self.c)

    def options(self) -> dict:
        return {"c": self.c}
