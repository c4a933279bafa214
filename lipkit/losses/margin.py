"""Lipschitz-margin cross-entropy (Tsuzuku, Sato & Sugiyama, NeurIPS 2018).

If the logits are L-Lipschitz (l2), an input moved by ||delta|| <= eps changes the gap
between any two logits by at most sqrt(2) L eps, so a prediction whose target logit leads
every other by more than sqrt(2) L eps is certified at radius eps. Training with that
margin added to every non-target logit makes the network earn it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_number(name: str, value, *, positive: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def check_class_targets(logits: Tensor, target: Tensor) -> None:
    """(N, K) logits and (N,) class indices in [0, K)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, K) scores, got shape {tuple(logits.shape)}")
    if target.shape != logits.shape[:1] or target.dtype in (torch.float16, torch.bfloat16, torch.float32,
                                                              torch.float64):
        raise ValueError(f"target must be ({logits.shape[0]},) class indices (an integer tensor), got "
                         f"shape {tuple(target.shape)} dtype {target.dtype}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise ValueError(f"target holds classes outside [0, {logits.shape[1]}): "
                         f"min {int(target.min())}, max {int(target.max())}")


def margin_cross_entropy(logits: Tensor, target: Tensor, *, eps: float, lipschitz: float = 1.0) -> Tensor:
    """Cross-entropy with sqrt(2) * lipschitz * eps added to every non-target logit (mean over
    the batch). eps: the l2 radius to certify; lipschitz: the network's certified constant
    (1 for a 1-Lipschitz network). eps = 0 is the plain cross-entropy."""
    eps = _check_number("eps", eps, positive=False)
    lipschitz = _check_number("lipschitz", lipschitz, positive=True)
    check_class_targets(logits, target)
    margin = math.sqrt(2.0) * lipschitz * eps
    shifted = logits + margin * (1 - F.one_hot(target, logits.shape[1]).to(logits.dtype))
    return F.cross_entropy(shifted, target)
