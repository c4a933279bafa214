"""Spectral normalization of the reshaped weight (the SN-GAN / torch convention).

W -> W * bound / sigma(W), sigma the largest singular value of W reshaped to
(shape[dim], -1). For a Linear layer this IS the layer's Lipschitz constant; for a conv
it is not (see conv.py for the true operator norm).

Why it is cheaper than torch's parametrizations.spectral_norm: the power iteration runs
once per WEIGHT UPDATE, not once per forward call (lipkit/norms/power_state.py, the scheme
SNR shares). The raw weight's `_version` says when
it changed, so D(real), D(fake) and a gradient penalty's D(x_inter) within one step share
one update. Each forward only recomputes sigma = u^T W v (one matrix-vector product),
differentiably; u and v are rebound at each refresh, never updated in place, so a graph
that saved them stays valid (pytorch#66363) without cloning them per forward.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..norms.linalg import gram_iteration_bound, start_vector
from ..norms.measure import weight_matrix
from ..norms.power_state import WARMUP_MAX_ITER, WARMUP_TOL, refresh_vectors
from .base import Constraint, as_dtype, autocast_off, cached_homogeneous, compute_dtype, normalize_by

GRAM_ITER = 6  # Gram squarings for certified=True (fixed: no host sync in training)


class SpectralNormalization(Constraint):
    """W -> W * bound / sigma (soft=True: W / max(1, sigma / bound)), sigma of the reshape.

    certified=True replaces the power-iteration estimate (which is from below) by the Gram
    iteration upper bound (differentiable, GRAM_ITER squarings), so sigma(result) <= bound
    is guaranteed; it is evaluated once per update (base.cached_homogeneous).
    """

    method = "spectral"

    def __init__(
        self,
        weight: Tensor,
        *,
        n_iter: int = 1,
        bound: float = 1.0,
        soft: bool = False,
        dim: int = 0,
        certified: bool = False,
        gram_iter: int = GRAM_ITER,
    ) -> None:
        super().__init__()
        self.n_iter, self.bound, self.soft = n_iter, float(bound), soft
        self.dim, self.certified, self.gram_iter = dim, certified, gram_iter
        dtype = compute_dtype(weight.dtype)
        matrix = weight_matrix(weight.detach(), dim).to(dtype)
        rows, cols = matrix.shape
        self.register_buffer("u", start_vector((rows,), dtype, weight.device))
        self.register_buffer("v", start_vector((cols,), dtype, weight.device))
        empty = torch.zeros(0, dtype=dtype, device=weight.device)
        self.register_buffer("sigma_grad", empty, persistent=False)  # certified only
        if not certified:
            # Warm up to convergence so sigma is accurate from the first step (host syncs
            # here are fine: registration happens once).
            with torch.no_grad():
                self.set_vectors(*refresh_vectors(*self._maps(matrix), self.u, self.v, WARMUP_MAX_ITER,
                                                   WARMUP_TOL, dtype))
            self.mark_current(weight)


    def _gram_bound(self, w: Tensor) -> Tensor:
        return gram_iteration_bound(weight_matrix(w, self.dim), self.gram_iter)

    @staticmethod
    def _maps(matrix: Tensor):
        return (lambda x: torch.mv(matrix, x)), (lambda y: torch.mv(matrix.T, y))

    def forward(self, raw: Tensor) -> Tensor:
        # Runs at every read of the weight (each critic forward): kept to a few kernels,
        # since a GPU critic step is launch-bound (benchmarks/results/h200_2026-11-26).
        dtype = compute_dtype(raw.dtype)
        with autocast_off(raw.device.type):
            w = as_dtype(raw, dtype)
            if self.certified:
                sigma = cached_homogeneous(self, raw, w, self._gram_bound)
            else:
                matrix = weight_matrix(w, self.dim)  # a copy for ConvTranspose (dim 1): only here
                if self.training and self.weight_changed(raw):
                    with torch.inference_mode(False), torch.no_grad():  # new vectors: normal tensors
                        self.set_vectors(*refresh_vectors(*self._maps(matrix), self.u, self.v,
                                                           self.n_iter, dtype=dtype))
                    self.mark_current(raw)
                # u, v are rebound at each refresh, never modified in place: no clone needed.
                sigma = torch.dot(as_dtype(self.u, dtype), torch.mv(matrix, as_dtype(self.v, dtype)))
            return as_dtype(normalize_by(w, sigma, self.bound, self.soft), raw.dtype)

    def options(self) -> dict:
        return {
            "n_iter": self.n_iter, "bound": self.bound, "soft": self.soft, "dim": self.dim,
            "certified": self.certified,
        }
