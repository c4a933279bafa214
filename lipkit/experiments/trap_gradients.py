"""The trap's gradient measurement: the gradient a projected (sn-project) critic trains with,
against the gradient of the same normalized function as a reparametrization (sn), on the
same weights and batches. Used by trap.py at every kept checkpoint of an sn-project run."""
from __future__ import annotations

import copy
import math
import statistics
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..constraints import constrain, constraints_of, unconstrain
from ..constraints.base import raw_tensor
from ..norms.measure import weight_matrix
from ..train.gan import score

NORMALIZED_TOL = 1e-2  # gradient_gap needs sigma = 1 within this in every layer


def gradient_pair(critic: nn.Module, real: Tensor, fake: Tensor,
                  labels: Tensor | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """{layer name: (G, G_reparam)} for the critic loss L = mean f(fake) - mean f(real).

    G is dL/dW at the critic's current (normalized) weights: what a projection method
    trains with. G_reparam is dL/dW_raw of the reparametrized copy W_raw / sigma(W_raw) at
    W_raw = W, with u, v set to the EXACT top singular vectors (SVD), so it is the true
    gradient of the normalized function, not one blurred by power-iteration lag.
    """
    plain = copy.deepcopy(critic)
    unconstrain(plain, keep="constrained")  # project mode: the raw weight is what it uses
    reparam = copy.deepcopy(plain)
    constrain(reparam, "spectral")
    plain_layers, reparam_layers = dict(plain.named_modules()), dict(reparam.named_modules())
    names, raws = [], []
    for name, tensor_name, _, constraint in constraints_of(reparam):
        raw = raw_tensor(reparam_layers[name], tensor_name)
        sigma = _set_exact_vectors_(constraint, raw)
        if abs(sigma - 1.0) > NORMALIZED_TOL:
            raise ValueError(f"layer {name!r} has spectral norm {sigma:.4g}; gradient_gap needs a critic "
                             f"normalized to 1 (within {NORMALIZED_TOL}), e.g. sn-project right after "
                             "lk.project_, or an sn critic")
        names.append(name)
        raws.append(raw)
    g_plain = _weight_grads(plain, [plain_layers[n].weight for n in names], real, fake, labels)
    g_reparam = _weight_grads(reparam, raws, real, fake, labels)
    return {n: (g, r) for n, g, r in zip(names, g_plain, g_reparam)}


@torch.no_grad()
def _set_exact_vectors_(constraint: nn.Module, raw: Tensor) -> float:
    """Write the exact top singular pair of `raw` into the constraint; mark it current so a
    training-mode forward does not replace it by a power-iteration step. Returns sigma."""
    matrix = weight_matrix(raw.detach(), constraint.dim).to(constraint.u.dtype)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    constraint.u.copy_(u[:, 0])
    constraint.v.copy_(vh[0])
    constraint.mark_current(raw)
    return float(s[0])


def _weight_grads(model: nn.Module, weights: list[Tensor], real: Tensor, fake: Tensor,
                  labels: Tensor | None) -> tuple[Tensor, ...]:
    loss = score(model, fake, labels).mean() - score(model, real, labels).mean()
    return torch.autograd.grad(loss, weights)


def gradient_gap(critic: nn.Module, real: Tensor, fake: Tensor, labels: Tensor | None = None) -> dict[str, Any]:
    """Per layer and overall: cosine(G, G_reparam) and ||G - G_reparam|| / ||G|| (see gradient_pair)."""
    pairs = gradient_pair(critic, real, fake, labels)
    rows = [{"layer": name, "shape": list(g.shape), **_compare(g, r)} for name, (g, r) in pairs.items()]
    flat_g = torch.cat([g.flatten() for g, _ in pairs.values()])
    flat_r = torch.cat([r.flatten() for _, r in pairs.values()])
    return {"layers": rows, **_compare(flat_g, flat_r),
            "median_rel_diff": statistics.median(row["rel_diff"] for row in rows)}


def _compare(g: Tensor, r: Tensor) -> dict[str, float]:
    norm = float(g.norm())
    cosine = float(torch.nn.functional.cosine_similarity(g.flatten(), r.flatten(), dim=0))
    return {"cosine": cosine, "rel_diff": float((g - r).norm()) / norm if norm > 0 else math.nan}
