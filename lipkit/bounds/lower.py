"""An empirical LOWER bound on a network's Lipschitz constant: a constant the network
provably attains somewhere, found by search.

Two stages, on eval-mode copies of the model (so no constraint state, BN statistic or
training flag of the caller's model is touched):
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

from ..norms.full_precision import at_full_precision
from ..norms.linalg import power_iteration, start_vector

JACOBIAN_ITERS = 200  # at most this many power steps on each input's Jacobian...
JACOBIAN_TOL = 1e-9  # ...stopping once every sample's estimate moved less than this
EXACT_OUT_DIM = 16  # up to this many outputs, Jacobians are formed row by row (exact)
ASCENT_STARTS = 4  # inputs (largest Jacobian norms) refined by gradient ascent


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

    v0 = start_vector(x.shape, x.dtype, x.device)
    tol = max(tol, 100 * torch.finfo(x.dtype).eps)  # float32 cannot settle below this
    sigma, _, v = power_iteration(forward, adjoint, v0, n_iter, tol)
    return sigma, v


def _eval_copy(model: nn.Module, dtype: torch.dtype):
    """The model in eval mode at `dtype`, frozen, as a function that hands it a copy of its
    input: a forward writing into its input (x.sub_(mean)) failed on the leaf tensors the
    search differentiates, and would have written into the caller's inputs."""
    net = copy.deepcopy(model).eval().to(dtype)
    for p in net.parameters():
        p.requires_grad_(False)
    return lambda x: net(x.clone())


def _ratio(f, a: Tensor, d: Tensor) -> Tensor:
    return _flat_norm(f(a + d) - f(a)) / _flat_norm(d).clamp_min(torch.finfo(d.dtype).tiny)


@at_full_precision
def lipschitz_lower_bound(
    model: nn.Module, inputs: Tensor, steps: int = 100, lr: float = 0.01
) -> float:
    """Largest Lipschitz ratio of `model` found near `inputs` (a batch): a lower bound.

    steps: gradient-ascent steps on pairs (0: Jacobian norms only).
    lr: ascent step size, relative to the inputs' typical scale.
    The search runs in float32 (float64 convolutions are slow on CPUs); every number
    returned is re-evaluated in float64 at the points the search found.
    """
    if not isinstance(inputs, Tensor) or inputs.dim() < 2 or inputs.shape[0] == 0:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a batch tensor (B, *input_shape) with B >= 1, got {shape}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs are {inputs.dtype}: the model's gradient needs floating-point inputs (.float())")
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("inputs contain NaN or inf values: no Lipschitz ratio can be measured there")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < float("inf"):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    net32, net64 = _eval_copy(model, torch.float32), _eval_copy(model, torch.float64)
    device = next(model.parameters(), inputs).device
    x = inputs.detach().to(dtype=torch.float32, device=device)

    sigma, v = jacobian_norms(net32, x)
    top = sigma.argsort(descending=True)[:ASCENT_STARTS]
    sigma64, _ = jacobian_norms(net64, x[top].double())
    best = float(sigma64.max())
    if steps == 0:
        return best
    scale = float(x.std().clamp_min(1e-6))
    a = x[top].clone().requires_grad_(True)
    d = (1e-2 * scale * v[top]).clone().requires_grad_(True)
    best_a, best_d = a.detach().clone(), d.detach().clone()
    best_ratio = torch.full((len(top),), -1.0, device=device)
    opt = torch.optim.Adam([a, d], lr=lr * scale)
    for _ in range(steps + 1):
        ratio = _ratio(net32, a, d)
        better = ratio.detach() > best_ratio  # keep each start's best pair so far
        best_ratio = torch.where(better, ratio.detach(), best_ratio)
        mask = better.view(-1, *([1] * (a.dim() - 1)))
        best_a = torch.where(mask, a.detach(), best_a)
        best_d = torch.where(mask, d.detach(), best_d)
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    with torch.no_grad():
        ratio64 = _ratio(net64, best_a.double(), best_d.double())
    return max(best, float(ratio64.max()))
