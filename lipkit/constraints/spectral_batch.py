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

Under torch.compile a read cannot test whether its weight changed (a data pointer is not
traceable), so a compiled training read refreshes its pair in the graph at every read. The
trainers' --compile (train/compiling.py) instead calls refresh_ahead(model) eagerly around
each compiled call: it tests which pairs are stale (eagerly, where data pointers can be read)
and hands the graph the layers to refresh at its start (refresh_in_graph: the first call
after an update) or none (every other call), and the layers read the stored pairs: each
pair is still computed once per update. A model compiled any other way keeps the per-read
refresh.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn

from ..norms.batched_pairs import exact_top_pairs, traced_top_pairs
from ..norms.full_precision import full_precision, reduced_precision
from ..norms.measure import weight_matrix
from .base import as_dtype, autocast_off, compute_dtype, normal_tensors
from .spectral import SpectralNormalization, set_refreshed_ahead

# _spectral's result per model, reused while no module has been registered anywhere since.
# The walk runs at every call of the model (twice per critic step); caching it took issue 12's
# CPU overhead proxy from sn 1.36x plain to 1.35x eager and 1.19x to 1.175x compiled (3
# alternating runs each, medians of 15 rounds, 2026-12-01). A layer swapped in (setattr,
# add_module, a container's append) or a map registered (lk.constrain, parametrize) goes
# through torch's global module-registration hook, which starts a new generation. A layer or
# map deleted leaves a stale entry: a constraint no longer in the model may then be refreshed
# for nothing, or a sole map still be counted as shared (refreshed in the graph, as before),
# but no constraint in the model is missed.
_generation = 0
_walks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _new_generation(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
    global _generation
    _generation += 1


nn.modules.module.register_module_module_registration_hook(_new_generation)


def _spectral(model: nn.Module) -> list[tuple[SpectralNormalization, nn.Module | None]]:
    """Every uncertified reshape-SN constraint of `model` with its ParametrizationList, or None
    where it is not the weight's only map (its input is then not `original`, the tensor a
    refresh ahead of the read reads)."""
    cached = _walks.get(model)
    if cached is not None and cached[0] == _generation:
        return cached[1]
    found = []
    for layer in model.modules():
        plist = layer._modules.get("parametrizations")
        for params in (plist._modules.values() if plist is not None else ()):
            for c in params._modules.values():
                if type(c) is SpectralNormalization and not c.certified:
                    found.append((c, params if len(params._modules) == 1 else None))
    _walks[model] = (_generation, found)
    return found


def _due(found: list[tuple[SpectralNormalization, nn.Module | None]]) -> list[tuple[SpectralNormalization, torch.Tensor]]:
    """(constraint, raw weight) of every sole-map layer in training mode whose pair is stale."""
    return [(c, params.original) for c, params in found
            if params is not None and c.training and c.weight_changed(params.original)]


def _refresh_batched(due: list[tuple[SpectralNormalization, torch.Tensor]]
                     ) -> list[tuple[SpectralNormalization, torch.Tensor]]:
    """The exact pairs of the batchable layers of `due`, one batch per dtype and device;
    returns the members of `due` it left stale (big, alone in their group, or in a batch with
    a NaN / inf weight)."""
    groups: dict[tuple, list] = {}
    left = []
    for c, raw in due:
        if c.exact_refresh:
            groups.setdefault((compute_dtype(raw.dtype), raw.device), []).append((c, raw))
        else:
            left.append((c, raw))
    for (dtype, device), members in groups.items():
        if len(members) < 2:
            left += members  # nothing to batch: left to the layer's own refresh
            continue
        # full precision as the per-layer refresh (a bf16 Gram under autocast gave pairs ~1e-3 off)
        with torch.no_grad(), normal_tensors(), autocast_off(device.type), full_precision(device.type):
            pairs = exact_top_pairs([weight_matrix(as_dtype(raw, dtype), c.dim) for c, raw in members])  # no_grad: no graph
            if pairs is None:
                left += members  # a NaN / inf weight: each layer's own read names it (check_finite)
                continue
            for (c, raw), pair in zip(members, pairs):
                c.set_vectors(*pair)
                c.mark_current(raw)
    return left


def refresh_spectral_pairs(model: nn.Module, args: Any = None) -> None:
    """Forward pre-hook: the stale exact pairs of `model`'s reshape-SN layers, batched."""
    if torch.compiler.is_compiling():
        return
    _refresh_batched(_due(_spectral(model)))


Members = tuple[tuple[SpectralNormalization, torch.Tensor], ...]  # (constraint, raw weight)


@contextmanager
def refresh_ahead(model: nn.Module) -> Iterator[Members]:
    """Run the body (a compiled call of `model`) with every reshape-SN pair of `model` current
    before its layers read it (pairs_refreshed_ahead() True), computed once per update. Yields
    the layers the graph must refresh itself (refresh_in_graph, before the model's forward):
    - nothing stale: (): the graph reads the stored pairs;
    - stale pairs: every exact-pair layer in training mode (one batch in the graph: two graphs
      in a run, one with the refresh; eagerly the batch is ~35 tensor calls of host time,
      in a graph a few fused kernels around one bmm and one eigh: issue 12's CPU proxy
      1.18x -> 1.13-1.15x a compiled plain step); the Krylov layers are refreshed here first, and
      the graph's layers are marked current once the call returned;
    - stale pairs while torch runs float32 matmuls at reduced precision on the device (TF32,
      bf16), which a graph cannot switch off: (), all refreshed here at full precision.
    An SN after another map of its weight: (), and its reads refresh in the graph."""
    found = _spectral(model)
    if any(params is None for _, params in found):
        yield ()
        return
    due = _due(found)
    in_graph: Members = ()
    if due and not reduced_precision(due[0][1].device.type):
        in_graph = tuple((c, params.original) for c, params in found if c.exact_refresh and c.training)
        for c, raw in due:
            if not c.exact_refresh:
                c.refresh(raw)  # at full precision: its _top_pair switches
    else:
        for c, raw in _refresh_batched(due):  # the small matrices in one batch; the rest each its own
            c.refresh(raw)
    saved = set_refreshed_ahead(True)
    try:
        yield in_graph
    finally:
        set_refreshed_ahead(saved)
    for c, raw in in_graph:  # (not reached when the call raised: its pairs were not stored)
        c.mark_current(raw)


def refresh_in_graph(members: Members) -> None:
    """The exact pairs of `members` in one batch, inside a compiled graph (its u, v, sigma_grad
    rebound as dynamo side effects, which the layers' reads later in the graph see)."""
    if not members:
        return
    with torch.no_grad(), autocast_off(members[0][1].device.type):
        matrices = [weight_matrix(as_dtype(raw, compute_dtype(raw.dtype)), c.dim) for c, raw in members]
        for (c, _), pair in zip(members, traced_top_pairs(matrices)):
            c.set_vectors(*pair)


def add_refresh_hook(model: nn.Module) -> None:
    """Once per model, found by identity (a deepcopy keeps it; unconstrain and export drop it)."""
    if not any(h is refresh_spectral_pairs for h in model._forward_pre_hooks.values()):
        model.register_forward_pre_hook(refresh_spectral_pairs)


def remove_refresh_hook(model: nn.Module) -> None:
    for key, hook in list(model._forward_pre_hooks.items()):
        if hook is refresh_spectral_pairs:
            del model._forward_pre_hooks[key]
