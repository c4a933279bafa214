"""Frobenius-norm clipping (SEED_NOTES.md section 5): W -> W * min(1, max_norm / ||W||_F).

||W||_2 <= ||W||_F, so this bounds the layer's sigma (loosely) while leaving the direction
of W free, unlike entrywise clipping. The norm is a plain reduction: no state, no sync.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Constraint, as_dtype, autocast_off, compute_dtype, normalize_by


class FrobeniusClip(Constraint):
    """W -> W / max(1, ||W||_F / max_norm) (zero stays zero: no division by ||W||)."""

    method = "frobenius"
    full_precision_map = False  # a sum of squares: no conv or matmul to switch

    def __init__(self, max_norm: float = 1.0) -> None:
        super().__init__()
        self.max_norm = float(max_norm)

    def constrained(self, raw: Tensor) -> Tensor:
        with autocast_off(raw.device.type):
            w = as_dtype(raw, compute_dtype(raw.dtype))
            # the same shrink-only rescale as soft spectral normalization, with ||W||_F for sigma
            return as_dtype(normalize_by(w, torch.linalg.vector_norm(w), self.max_norm, soft=True), raw.dtype)

    def options(self) -> dict:
        return {"max_norm": self.max_norm}
