"""Top-singular-value numerics shared by every norm in lipkit.

Three tools, each with a different guarantee:
- power_iteration: an estimate from BELOW (||A v|| with ||v|| = 1 is never above sigma_max);
- gram_iteration_bound: a certified bound from ABOVE (Delattre et al., arXiv 2305.16173);
- dense_top_singular_value: the exact value, for operators small enough to materialize;
  exact_top_pair: the exact singular VECTORS of a small matrix (spectral normalization).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

# Dense exact SVD is limited so that it never silently eats the machine's memory.
EXACT_MAX_DIM = 4096  # the smaller side of the dense matrix (its Gram is EXACT_MAX_DIM^2)
EXACT_MAX_ELEMENTS = 2**26  # entries of the dense matrix (512 MiB in float64)

Map = Callable[[Tensor], Tensor]


def _batch_norm(x: Tensor) -> Tensor:
    """l2 norm of each sample of a batch, as shape (B,)."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1)


def _normalize(x: Tensor, fallback: Tensor, eps: float = 1e-30) -> Tensor:
    """x / ||x|| per sample; keeps `fallback` where x is zero (no NaN, no host sync)."""
    n = _batch_norm(x).view(-1, *([1] * (x.dim() - 1)))
    return torch.where(n > eps, x / n.clamp_min(eps), fallback)


def as_dtype(t: Tensor, dtype: torch.dtype) -> Tensor:
    """t in dtype; t itself when it already is (a no-op .to still costs a dispatcher call,
    and constraints and power steps run at every weight read or update)."""
    return t if t.dtype is dtype else t.to(dtype)


def start_vector(shape, dtype: torch.dtype, device) -> Tensor:
    """A fixed pseudo-random unit start for power iteration: reproducible across runs and
    processes (every DDP rank starts equal) and almost surely not orthogonal to the top
    singular vector (all-ones can be, e.g. for a zero-mean kernel)."""
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(shape, generator=gen, dtype=torch.float64)
    return (v / v.norm()).to(dtype=dtype, device=device)


def power_iteration(
    forward: Map,
    adjoint: Map,
    v: Tensor,
    n_iter: int = 100,
    tol: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Top singular triple of the linear map `forward` (adjoint: `adjoint`).

    v: start vectors, shape (B, *in_shape); each sample is iterated independently, so a
    batch of per-sample maps (a Jacobian over a batch) works too. Returns (sigma, u, v)
    with sigma (B,) = ||A v|| <= sigma_max, u = A v / sigma, v unit. With `tol`, stops
    once sigma changes by less than tol relative (this reads values on the host).
    """
    v = _normalize(v, v)
    sigma = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    Av = forward(v)  # A of the current v, reused: each round costs one forward and one adjoint
    for _ in range(n_iter):
        u = _normalize(Av, Av)
        v = _normalize(adjoint(u), v)
        Av = forward(v)
        if tol is not None:
            new = _batch_norm(Av)
            done = bool(((new - sigma).abs() <= tol * new.clamp_min(1e-30)).all())
            sigma = new
            if done:
                break
    sigma = _batch_norm(Av)
    return sigma, _normalize(Av, Av), v


def _frobenius(m: Tensor) -> Tensor:
    """Frobenius norm of each matrix; complex via its real view (2x faster than matrix_norm)."""
    if m.is_complex():
        return torch.linalg.vector_norm(torch.view_as_real(m.resolve_conj()), dim=(-3, -2, -1))
    return torch.linalg.vector_norm(m, dim=(-2, -1))


def gram_iteration_bound(
    mats: Tensor, n_iter: int | None = None, tol: float = 1e-5, max_iter: int = 30
) -> Tensor:
    """Certified upper bound on the largest singular value of each matrix in `mats`.

    mats: (..., m, n), real or complex. Gram iteration: G <- G^H G squares every singular
    value, and sigma_max <= ||G_t||_F ** (1 / 2^t) for every t, tightening as t grows
    (the excess is at most rank ** (1 / 2^(t+1))). Each iterate is rescaled by its
    Frobenius norm and the scale kept in log space, so nothing overflows.
    n_iter: fixed number of squarings (no host sync: fit for training loops). None: iterate
    until the bound moves by less than `tol` relative, at most `max_iter` times.
    """
    if mats.shape[-2] < mats.shape[-1]:
        mats = mats.mH  # same singular values; the Gram is then the smaller side
    real_dtype = mats.real.dtype if mats.is_complex() else mats.dtype
    tiny = torch.finfo(real_dtype).tiny
    g = mats
    log_scale = torch.zeros(mats.shape[:-2], dtype=real_dtype, device=mats.device)
    log_bound = torch.log(_frobenius(g).clamp_min(tiny))
    steps = n_iter if n_iter is not None else max_iter
    for t in range(1, steps + 1):
        r = _frobenius(g).clamp_min(tiny)
        g = g / r[..., None, None]
        log_scale = 2 * (log_scale + torch.log(r))
        # From the second squaring on, g is Hermitian (g = A^H A, scaled): g^H g = g g,
        # which skips materializing a conjugate transpose (about 2x faster for complex).
        g = g.mH @ g if t == 1 else g @ g
        new = (log_scale + torch.log(_frobenius(g).clamp_min(tiny))) / 2**t
        # Every iterate is a valid bound; keep the smallest seen (guards float round-off).
        new = torch.minimum(new, log_bound)
        if n_iter is None and bool(((log_bound - new).abs() <= tol).all()):
            log_bound = new
            break
        log_bound = new
    return torch.exp(log_bound)


def _unit_rows(start: int, stop: int, dim: int, dtype: torch.dtype, device) -> Tensor:
    """Rows start..stop-1 of the dim x dim identity: a chunk of the unit basis."""
    rows = torch.zeros(stop - start, dim, dtype=dtype, device=device)
    rows[torch.arange(stop - start), torch.arange(start, stop)] = 1
    return rows


def dense_matrix(forward: Map, in_shape: tuple[int, ...], dtype: torch.dtype, device) -> Tensor:
    """The matrix of a linear map, as (in_dim, out_dim) rows = images of the unit basis."""
    in_dim = math.prod(in_shape)
    rows = []
    for start in range(0, in_dim, 512):
        stop = min(start + 512, in_dim)
        rows.append(forward(_unit_rows(start, stop, in_dim, dtype, device).view(-1, *in_shape)).flatten(1))
    return torch.cat(rows)


def dense_matrix_small_side(forward: Map, in_shape: tuple[int, ...], out_dim: int, dtype: torch.dtype,
                            device) -> Tensor:
    """A matrix with the same singular values as the linear map `forward`, built from its
    smaller side: images of the input basis (dense_matrix) when in_dim <= out_dim, else the
    adjoint's images of the output basis by backpropagation (out_dim passes instead of in_dim:
    a conv stack into a 128-unit Linear is 128 backward passes, not 25,088 forward ones)."""
    in_dim = math.prod(in_shape)
    if in_dim <= out_dim:
        return dense_matrix(forward, in_shape, dtype, device)
    rows = []
    for start in range(0, out_dim, 512):
        stop = min(start + 512, out_dim)
        x = torch.zeros(stop - start, *in_shape, dtype=dtype, device=device, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(forward(x).flatten(1), x,
                                          grad_outputs=_unit_rows(start, stop, out_dim, dtype, device))
        rows.append(grad.flatten(1))  # row i = A^T e_i: the adjoint's matrix, same singular values
    return torch.cat(rows)


def check_dense_size(in_dim: int, out_dim: int, what: str) -> None:
    """Refuse a dense SVD that would not fit, naming the limit and the alternatives."""
    if min(in_dim, out_dim) > EXACT_MAX_DIM or in_dim * out_dim > EXACT_MAX_ELEMENTS:
        raise ValueError(
            f"method='exact' for {what} needs a dense {out_dim}x{in_dim} matrix, above the "
            f"limit (smaller side <= {EXACT_MAX_DIM}, entries <= {EXACT_MAX_ELEMENTS}). "
            "Use method='gram' (certified upper bound) or method='power' (estimate from "
            "below) for this size, or a smaller input_shape."
        )


def dense_top_singular_value(matrix: Tensor) -> float:
    """Exact sigma_max of a dense matrix, via the eigenvalues of its smaller Gram."""
    m = matrix.to(torch.float64)
    gram = m.mH @ m if m.shape[0] >= m.shape[1] else m @ m.mH
    return math.sqrt(max(float(torch.linalg.eigvalsh(gram)[-1]), 0.0))


UNIT_ROUNDOFF = 2.0**-53  # float64: every certification below runs in float64 / complex128


def certify_margin(n: int, inner: int) -> float:
    """Relative margin over a computed top eigenvalue that a float64 Cholesky test certifies:
    the rounding of forming an n x n Gram from inner-long sums (<= inner * u * ||A||_F^2, and
    ||A||_F^2 <= n sigma^2) plus that of the Cholesky itself (Rump, "Verification of positive
    definiteness", BIT 2006: about (n + 1) u tr(M), and tr(M) <= n lambda_max(M)), with a
    factor 4 to spare. 16 x 16: 1.3e-13; 512 x 512 symbols: 1.2e-10; 4096 x 4096 from 6144-long
    sums: 1.9e-8 (bounds are reported to 4-6 digits)."""
    return 4 * UNIT_ROUNDOFF * (n + 1) * (n + inner)


def max_top_singular_value(mats: Tensor) -> float:
    """max over a batch (..., m, n), real or complex, of each matrix's sigma_max: the limit the
    Gram iteration converges to (times 1 + certify_margin), at a fraction of its cost: each
    smaller Gram is formed once, in float64, and certified_top_eigenvalue bounds them all.
    ResNet-18's conv symbols at 224 (40 frequencies of 512x512): ~3 s instead of 21 s of
    Gram iteration on one core."""
    mats = mats.to(torch.complex128 if mats.is_complex() else torch.float64)
    g = mats.mH @ mats if mats.shape[-2] >= mats.shape[-1] else mats @ mats.mH
    return math.sqrt(certified_top_eigenvalue(g.reshape(-1, *g.shape[-2:]), max(mats.shape[-2:])))


def certified_top_singular_value(matrix: Tensor) -> float:
    """sigma_max of one dense matrix, certified from above within 1 + certify_margin: what a
    certified bound uses where the exact value is cheap (eigvalsh alone can round below it)."""
    return max_top_singular_value(matrix[None])


def certified_top_eigenvalue(grams: Tensor, inner: int) -> float:
    """A certified upper bound on max over a batch (B, n, n) of float64 positive semidefinite
    Hermitian matrices of their largest eigenvalue, within certify_margin(n, inner) of it
    (inner: the length of the sums that formed each Gram). The exact top eigenvalues of the
    few Grams with the largest Frobenius norms give a candidate L; one batched Cholesky of
    (L (1 + margin) I - G) certifies every Gram it succeeds on (that matrix is then positive
    definite, so lambda_max(G) < L (1 + margin)); the ones it fails on get their exact top
    eigenvalue."""
    margin = certify_margin(grams.shape[-1], inner)
    candidates = _frobenius(grams).topk(min(4, grams.shape[0])).indices
    top = float(torch.linalg.eigvalsh(grams[candidates])[:, -1].max().clamp_min(0))
    ceiling = top * (1 + margin)
    eye = torch.eye(grams.shape[-1], dtype=grams.dtype, device=grams.device)
    _, info = torch.linalg.cholesky_ex(ceiling * eye - grams)
    failed = (info != 0).nonzero().flatten()
    if len(failed):  # not certified below the ceiling: their exact values
        exact = float(torch.linalg.eigvalsh(grams[failed])[:, -1].max().clamp_min(0))
        ceiling = max(ceiling, exact * (1 + margin))
    return ceiling


def exact_top_pair(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """(u, v) top singular pair of a matrix, from the top eigenvector of its smaller Gram.
    Run once per weight update by spectral normalization, so kept to a few kernels:
    - in the matrix's own precision (float32 for float32 weights: half the time of a float64
      eigh, 1.5 vs 2.7 ms at 128 x 128 on one core); the vectors' error then enters the
      value u^T W v squared (second order), ~1e-7 relative even for top singular values
      1e-3 apart (tests/test_spectral.py checks against svdvals);
    - scaled by its largest entry first, so the Gram can neither overflow nor underflow;
    - the other side's vector gets sqrt(tiny) added to every entry before it is normalized,
      nothing beside a nonzero product, and it makes a zero one (zero matrix) the constant
      unit vector instead of 0/0 (sqrt(tiny): its square does not underflow)."""
    m = matrix if matrix.dtype in (torch.float32, torch.float64) else matrix.float()
    m = m / m.abs().amax().clamp_min(torch.finfo(m.dtype).tiny)
    shift = torch.finfo(m.dtype).tiny ** 0.5
    rows, cols = m.shape
    if min(rows, cols) == 1:  # a row (a critic's last Linear) or a column: its 1x1 Gram's vector is [1]
        one = torch.ones(1, dtype=m.dtype, device=m.device)
        other = m.reshape(-1) + shift
        other = other / torch.linalg.vector_norm(other)
        u, v = (one, other) if rows == 1 else (other, one)
    elif rows <= cols:
        u = torch.linalg.eigh(m @ m.T)[1][:, -1]
        v = (m.T @ u).add_(shift)
        v = v / torch.linalg.vector_norm(v)
    else:
        v = torch.linalg.eigh(m.T @ m)[1][:, -1]
        u = (m @ v).add_(shift)
        u = u / torch.linalg.vector_norm(u)
    return as_dtype(u, matrix.dtype), as_dtype(v, matrix.dtype)
