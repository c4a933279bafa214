"""Bjorck orthonormalization (Bjorck & Bowie 1971; Anil, Lucas & Grosse 2019) of Linear weights.

W -> the nearest matrix with orthonormal rows or columns (the polar factor U V^T of W = U S V^T),
by the iteration W <- W p(I - W^T W), p the order-`order` Taylor polynomial of (1 - Q)^(-1/2)
(order 1: W (3/2 I - 1/2 W^T W)). It starts from W / s with s = sqrt(max abs row sum of
W^T W) >= sigma_max, so every singular value starts in (0, 1], and each step maps sigma to
sigma * p(1 - sigma^2) <= 1 (a truncated series of positive terms): the result never has a
singular value above 1, converged or not, and converges to all ones. Small singular values
grow ~(1 + 1/2 + ...) per step, so ill-conditioned weights need more iterations: measured
(float64, Gaussian weights), order 2 with 20 iterations reaches 1e-15 up to condition 4486
(512 x 512); order 1 needs 25 for condition 2137. Differentiable (autograd through the
iterations); the Gram is taken on the smaller side.

Only 2-D weights (Linear): orthonormalizing a conv's reshaped kernel does not make the conv
operator orthogonal or even 1-Lipschitz; use "aol" (certified for convs) there.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Constraint, as_dtype, autocast_off, compute_dtype


def taylor_coefficients(order: int) -> list[float]:
    """Coefficients of (1 - q)^(-1/2) = 1 + q/2 + 3q^2/8 + ... up to q^order."""
    coef = [1.0]
    for i in range(1, order + 1):
        coef.append(coef[-1] * (2 * i - 1) / (2 * i))
    return coef


def bjorck_orthonormalize(w: Tensor, iters: int, order: int) -> Tensor:
    """w (out, in) with orthonormal rows (out <= in) or columns, singular values <= 1 always."""
    wide = w.shape[0] < w.shape[1]
    if wide:
        w = w.T
    gram = w.T @ w
    w = w / gram.abs().sum(dim=1).max().clamp_min(1e-30).sqrt()
    coef = taylor_coefficients(order)
    eye = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
    for _ in range(iters):
        q = eye - w.T @ w
        poly = coef[-1] * eye
        for c in reversed(coef[:-1]):  # Horner: c0 + q (c1 + q (c2 + ...))
            poly = c * eye + q @ poly
        w = w @ poly
    return w.T if wide else w


class BjorckOrthonormalization(Constraint):
    """W -> bound * (orthonormal W): a Linear whose singular values are all `bound`."""

    method = "bjorck"

    def __init__(self, *, iters: int = 20, order: int = 2, bound: float = 1.0) -> None:
        super().__init__()
        self.iters, self.order, self.bound = iters, order, float(bound)

    def constrained(self, raw: Tensor) -> Tensor:
        with autocast_off(raw.device.type):
            w = bjorck_orthonormalize(as_dtype(raw, compute_dtype(raw.dtype)), self.iters, self.order)
            return as_dtype(w if self.bound == 1.0 else w * self.bound, raw.dtype)

    def options(self) -> dict:
        return {"iters": self.iters, "order": self.order, "bound": self.bound}
