"""Spectral normalization of the reshaped weight (the SN-GAN / torch convention).

W -> W * bound / sigma(W), sigma the largest singular value of W reshaped to
(shape[dim], -1). For a Linear layer this IS the layer's Lipschitz constant; for a conv
it is not (see conv.py for the true operator norm).

Why it is cheaper than torch's parametrizations.spectral_norm: the power iteration runs
once per WEIGHT UPDATE, not once per forward call. The raw weight's `_version` says when
it changed, so D(real), D(fake) and a gradient penalty's D(x_inter) within one step share
one update. Each forward only recomputes sigma = u^T W v (one matrix-vector product),
differentiably, with u and v cloned so a later in-place update of the buffers never
invalidates a graph that saved them (pytorch#66363).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..linalg import gram_iteration_bound, power_iteration, start_vector
from ..spectral import weight_matrix
from .base import Constraint, autocast_off, cached_homogeneous, compute_dtype, scale_for

WARMUP_MAX_ITER = 500  # power steps at registration: run to convergence, at most this many
WARMUP_TOL = 1e-6  # relative change of sigma that counts as converged
GRAM_ITER = 6  # Gram squarings for certified=True (fixed: no host sync in training)


def refresh_vectors(
    forward, adjoint, u: Tensor, v: Tensor, n_iter: int, tol: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> None:
    """Run power iteration from v (in `dtype`, the weight's compute dtype, whatever the
    buffers' dtype after a model.half()) and write the new (u, v) into the buffers in place.

    Keeps the old u where the weight is all zero (the new one would be zero, and a zero u
    could never recover); v already falls back to its old value inside power_iteration.
    """
    sigma, new_u, new_v = power_iteration(forward, adjoint, v.unsqueeze(0).to(dtype), n_iter, tol)
    keep = (sigma > 0).view(-1, *([1] * (new_u.dim() - 1)))
    u.copy_(torch.where(keep, new_u, u.unsqueeze(0))[0])
    v.copy_(new_v[0])


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
                maps = self._maps(matrix)
                refresh_vectors(*maps, self.u, self.v, WARMUP_MAX_ITER, WARMUP_TOL, dtype)
            self.mark_current(weight)

    def _gram_bound(self, w: Tensor) -> Tensor:
        return gram_iteration_bound(weight_matrix(w, self.dim), self.gram_iter)

    @staticmethod
    def _maps(matrix: Tensor):
        return (lambda x: x @ matrix.T), (lambda y: y @ matrix)

    def forward(self, raw: Tensor) -> Tensor:
        with autocast_off(raw.device.type):
            w = raw.to(compute_dtype(raw.dtype))
            matrix = weight_matrix(w, self.dim)
            if self.certified:
                sigma = cached_homogeneous(self, raw, w, self._gram_bound)
            else:
                if self.training and self.weight_changed(raw):
                    with torch.no_grad():
                        detached = matrix.detach()
                        refresh_vectors(
                            *self._maps(detached), self.u, self.v, self.n_iter, dtype=detached.dtype
                        )
                    self.mark_current(raw)
                u = self.u.to(w.dtype).clone()
                v = self.v.to(w.dtype).clone()
                sigma = torch.dot(u, torch.mv(matrix, v))
            return (w * scale_for(sigma, self.bound, self.soft)).to(raw.dtype)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._weight_key = None  # new vectors: refresh at the next training forward

    def options(self) -> dict:
        return {
            "n_iter": self.n_iter, "bound": self.bound, "soft": self.soft, "dim": self.dim,
            "certified": self.certified,
        }
