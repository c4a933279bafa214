"""An empirical LOWER bound on a network's Lipschitz constant: a constant the network
provably attains somewhere, found by search.

Two stages, both on a float64 eval-mode copy of the model (so no constraint state, BN
statistic or RNG of the caller's model is read for writing or advanced):
1. the spectral norm of the Jacobian at each given input (power iteration with
   forward- and reverse-mode products; the Jacobian over a batch is block-diagonal, so
   all samples iterate at once);
2. gradient ascent on the ratio ||f(x) - f(y)|| / ||x - y||, started at the inputs with
   the largest Jacobian norms, y a small step along the top singular vector. For a
   piecewise-linear network the Jacobian is constant on each linear region, so ascent on
   the Jacobian norm alone would stall; pairs of points can cross regions.
Every number returned was attained (a ratio of two evaluations, or the Jacobian norm at a
point), so it is <= the true constant up to float64 round-off.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch import Tensor

from .linalg import power_iteration

JACOBIAN_ITERS = 200  # at most this many power steps on each input's Jacobian...
JACOBIAN_TOL = 1e-9  # ...stopping once every sample's estimate moved less than this
EXACT_OUT_DIM = 16  # up to this many outputs, Jacobians are formed row by row (exact)
ASCENT_STARTS = 8  # inputs (largest Jacobian norms) refined by gradient ascent


def _flat_norm(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x.flatten(1), dim=1)


def jacobian_norms(f, x: Tensor, n_iter: int = JACOBIAN_ITERS, tol: float = JACOBIAN_TOL) -> tuple[Tensor, Tensor]:
    """Per-sample spectral norm of the Jacobian of f at x, and the top right singular vectors.

    Few outputs (a critic, a classifier's logits): the Jacobian's rows by reverse mode, then
    an exact eigen-decomposition of J J^T. Many outputs: power iteration (jvp / vjp).
    """
    x = x.detach()
    out, vjp_fn = torch.func.vjp(f, x)
    out_dim = out[0].numel()
    if out_dim <= EXACT_OUT_DIM:
        rows = []
        for k in range(out_dim):
            e = torch.zeros_like(out).flatten(1)
            e[:, k] = 1
            rows.append(vjp_fn(e.view_as(out))[0].flatten(1))
        jac = torch.stack(rows, 1)  # (B, out, in)
        evals, evecs = torch.linalg.eigh(jac @ jac.mT)
        sigma = evals[:, -1].clamp_min(0).sqrt()
        v = (jac.mT @ evecs[:, :, -1:]).squeeze(-1) / sigma.clamp_min(1e-300)[:, None]
        return sigma, v.view_as(x)

    def forward(v: Tensor) -> Tensor:
        return torch.func.jvp(f, (x,), (v,))[1]

    def adjoint(u: Tensor) -> Tensor:
        return vjp_fn(u)[0]

    gen = torch.Generator().manual_seed(0)
    v0 = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x)
    sigma, _, v = power_iteration(forward, adjoint, v0, n_iter, tol)
    return sigma, v


def lipschitz_lower_bound(
    model: nn.Module, inputs: Tensor, steps: int = 100, lr: float = 0.01
) -> float:
    """Largest Lipschitz ratio of `model` found near `inputs` (a batch): a lower bound.

    steps: gradient-ascent steps on pairs (0: Jacobian norms only).
    lr: ascent step size, relative to the inputs' typical scale.
    """
    if not isinstance(inputs, Tensor) or inputs.dim() < 2:
        raise ValueError("inputs must be a batch tensor (B, *input_shape) with B >= 1")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    net = copy.deepcopy(model).eval().double()
    for p in net.parameters():
        p.requires_grad_(False)
    x = inputs.detach().to(dtype=torch.float64, device=next(net.parameters(), inputs).device)

    def f(z: Tensor) -> Tensor:
        return net(z)

    sigma, v = jacobian_norms(f, x)
    best = float(sigma.max())
    if steps == 0:
        return best
    top = sigma.argsort(descending=True)[:ASCENT_STARTS]
    scale = float(x.std().clamp_min(1e-6))
    a = x[top].clone().requires_grad_(True)
    d = (1e-3 * scale * v[top]).clone().requires_grad_(True)
    opt = torch.optim.Adam([a, d], lr=lr * scale)
    for _ in range(steps):
        ratio = _flat_norm(f(a + d) - f(a)) / _flat_norm(d).clamp_min(1e-300)
        best = max(best, float(ratio.detach().max()))
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    with torch.no_grad():
        ratio = _flat_norm(f(a + d) - f(a)) / _flat_norm(d).clamp_min(1e-300)
    return max(best, float(ratio.max()))
