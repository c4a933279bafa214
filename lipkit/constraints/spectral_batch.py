"""Refresh every reshape-SN pair of a model at once, before its forward.

Spectral normalization refreshes a layer's top singular pair at the first training read
after its weight changed (spectral.py): an eigh of the weight's smaller Gram, ~10 kernels
and ~130 us of host time per layer inside a step on issue 12's CPU overhead proxy, a third
of SN's extra step cost there (benchmarks/sn_cost_breakdown.py). lk.constrain(model,
"spectral") therefore puts this forward pre-hook on `model` itself: when the model is
called, every one of its reshape-SN layers (operator "reshape", not certified, smaller side
<= EXACT_SIDE) in training mode whose weight changed since its pair was computed gets its
pair from ONE zero-padded batch (norms/batched_pairs.py: one bmm, one batched eigh).

The pair is the exact top pair of the weight alone, so computing it ahead of the layer's
read gives the same pair the read would have computed (to rounding): the layer's read then
finds its vectors current. Everything else stays as it was: a layer called on its own, a
weight changed between the hook and the read, a compiled forward, eval mode and certified
or conv-operator SN refresh at their own read, as before. Fewer than two layers due: left
to their reads (nothing to batch).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from ..norms.batched_pairs import exact_top_pairs
from ..norms.measure import weight_matrix
from .base import as_dtype, autocast_off, compute_dtype, normal_tensors
from .spectral import EXACT_SIDE, SpectralNormalization


def _layers(model: nn.Module) -> list[tuple[SpectralNormalization, nn.Module]]:
    """model's batchable reshape-SN constraints with their ParametrizationLists."""
    found = []
    for layer in model.modules():
        plist = layer._modules.get("parametrizations")
        params = plist._modules.get("weight") if plist is not None else None
        # SN alone on the weight: its input is then `original`, the tensor the batch reads
        c = params._modules["0"] if params is not None and len(params._modules) == 1 else None
        if type(c) is SpectralNormalization and not c.certified:
            rows = c.weight_shape[c.dim]
            if min(rows, math.prod(c.weight_shape) // rows) <= EXACT_SIDE:
                found.append((c, params))
    return found


def _due(model: nn.Module) -> list[tuple[SpectralNormalization, torch.Tensor]]:
    """(constraint, raw weight) of every batchable layer in training mode whose pair is stale."""
    return [(c, params.original) for c, params in _layers(model)
            if c.training and c.weight_changed(params.original)]


def refresh_spectral_pairs(model: nn.Module, args: Any = None) -> None:
    """Forward pre-hook: the stale exact pairs of `model`'s reshape-SN layers, batched."""
    if torch.compiler.is_compiling():
        return
    due = _due(model)
    if len(due) < 2:
        return
    groups: dict[tuple, list] = {}
    for c, raw in due:
        groups.setdefault((compute_dtype(raw.dtype), raw.device), []).append((c, raw))
    for (dtype, device), members in groups.items():
        if len(members) < 2:
            continue
        # full precision as the per-layer refresh (a bf16 Gram under autocast gave pairs ~1e-3 off)
        with torch.no_grad(), normal_tensors(), autocast_off(device.type):
            pairs = exact_top_pairs([weight_matrix(as_dtype(raw.detach(), dtype), c.dim) for c, raw in members])
            if pairs is None:
                continue  # a NaN / inf weight: each layer's own read names it (check_finite)
            for (c, raw), (u, v) in zip(members, pairs):
                c.set_vectors(u, v)
                c.mark_current(raw)


def add_refresh_hook(model: nn.Module) -> None:
    """Once per model, found by identity (a deepcopy keeps it; unconstrain and export drop it)."""
    if not any(h is refresh_spectral_pairs for h in model._forward_pre_hooks.values()):
        model.register_forward_pre_hook(refresh_spectral_pairs)


def remove_refresh_hook(model: nn.Module) -> None:
    for key, hook in list(model._forward_pre_hooks.items()):
        if hook is refresh_spectral_pairs:
            del model._forward_pre_hooks[key]
