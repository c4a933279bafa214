"""A certified bound tighter than the product of layer norms for feed-forward networks: the
segment expansion of Combettes & Pesquet (2020, "Lipschitz certificates for layered network
structures driven by averaged activation operators", SIAM J. Math. Data Sci.).

Why it holds. The network is f = W_m . s_{m-1} . W_{m-1} ... s_1 . W_1 with W_i affine (runs
of linear layers) and s_i the nonlinearities between them. f is Lipschitz, so its constant is
the supremum of ||J|| over the elements J of its Clarke Jacobians, and by Clarke's chain rule
each J is in the convex hull of products W_m D_{m-1} ... D_1 W_1 where D_i is in s_i's Clarke
Jacobian (norms are convex, so bounding the products bounds the hull):
- s_i elementwise with slopes in [a, b] (ReLU: [0, 1]): D_i = mid I + half S, mid = (a+b)/2,
  half = (b-a)/2, S diagonal with entries in [-1, 1], so ||S|| <= 1;
- any other c-Lipschitz s_i (max pooling, GroupSort, a layer with its own bound): D_i = c S,
  ||S|| <= 1 (no identity part).
Expanding the product: every elementwise s_i either merges its neighbours (the term mid I:
the segment W_k ... W_j is ONE linear map, bounded by the norm of the composite) or cuts
(half S). The triangle inequality over the 2^(#elementwise) terms gives
    ||J|| <= sum over cut sets of (prod of cut factors) (prod of mids) prod ||segment||,
summed in O(m^2) segment norms by a recursion over the last cut. Every term is at most the
corresponding share of the product of layer norms, so the bound never exceeds the product
(for ReLU, a one-hidden-layer net gets ||W2 W1|| / 2 + ||W2|| ||W1|| / 2); lipschitz_bound
returns the smaller of the two anyway.

Scope: a model whose traced graph is one chain (each node reads only the previous one) of
linear layers (bounds/merges.py MERGEABLE), elementwise activations of activations.SLOPE_RANGES, and any other
layer with a registered bound (a forced cut). Anything else (residual sums, several inputs,
functional reshapes) is refused with a one-line error that names it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch.fx as fx
import torch.nn as nn

from .activations import FUNCTION_SLOPE_RANGES, SLOPE_RANGES
from .layer_rules import UnsupportedLayerError, has_layer_bound, layer_bound
from .merges import chain_rule, mergeable
from .result import LayerRow, LipschitzBound


@dataclass
class _Block:
    """A run of linear layers (possibly none: the identity) and their input shapes + output shape."""

    layers: list[nn.Module]
    shapes: list[tuple[int, ...]]


@dataclass
class _Joint:
    """The nonlinearity after a block: elementwise (mid, half) or generic (cut factor only)."""

    mid: float  # identity part: 0 for a generic map
    half: float  # cut factor: (b - a) / 2, or the generic map's Lipschitz constant


def segment_bound(gm: fx.GraphModule, shape_of: Callable[[fx.Node], tuple[int, ...]],
                  method: str) -> tuple[float, int]:
    """(certified bound, number of segment norms computed) of the traced chain `gm`."""
    blocks, joints = _split(gm, shape_of, method)
    # norm[j][k]: the composite of blocks j..k with the joints between them merged
    cache: dict[tuple[int, int], float] = {}

    def norm(j: int, k: int) -> float:
        if (j, k) not in cache:
            layers = [layer for b in blocks[j:k + 1] for layer in b.layers]
            shapes = [s for b in blocks[j:k + 1] for s in b.shapes[:-1]] + [blocks[k].shapes[-1]]
            cache[j, k] = chain_rule(layers, shapes, method).bound if layers else 1.0
        return cache[j, k]

    # total[k]: the bound for the network up to block k (inclusive); a cut after block j-1 then
    # one segment j..k, every joint inside it merged (only elementwise joints can merge).
    total: list[float] = []
    for k in range(len(blocks)):
        value, merged = 0.0, 1.0
        for j in range(k, -1, -1):
            before = 1.0 if j == 0 else total[j - 1] * joints[j - 1].half
            value += before * merged * norm(j, k)
            if j == 0 or joints[j - 1].mid == 0.0:
                break  # a generic joint cannot be merged: no segment reaches across it
            merged *= abs(joints[j - 1].mid)
        total.append(value)
    return total[-1], len(cache)


def _split(gm: fx.GraphModule, shape_of: Callable[[fx.Node], tuple[int, ...]],
           method: str) -> tuple[list[_Block], list[_Joint]]:
    """The chain as blocks of linear layers separated by joints (len(joints) = len(blocks) - 1)."""
    modules = dict(gm.named_modules())
    blocks, joints = [_Block([], [])], []
    previous: fx.Node | None = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            previous = node
            blocks[-1].shapes.append(shape_of(node))
            continue
        if node.op == "output":
            if node.args[0] is not previous:
                raise UnsupportedLayerError("method='segments': the model must return its last layer's output")
            return blocks, joints
        _check_link(node, previous)
        layer = modules.get(node.target) if node.op == "call_module" else None
        joint = _joint(node, layer, shape_of(previous), method)
        if joint is None:  # a linear layer: part of the current block
            blocks[-1].layers.append(layer)
            blocks[-1].shapes.append(shape_of(node))
        else:
            joints.append(joint)
            blocks.append(_Block([], [shape_of(node)]))
        previous = node
    raise AssertionError("traced graph has no output node")


def _check_link(node: fx.Node, previous: fx.Node | None) -> None:
    inputs = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]
    if inputs != [previous] or len(previous.users) != 1:
        raise UnsupportedLayerError(
            f"method='segments' bounds feed-forward chains (each layer reads only the previous one); "
            f"{node.format_node()} does not (a residual sum or a shared value): use method='gram'")


def _joint(node: fx.Node, layer: nn.Module | None, in_shape: tuple[int, ...], method: str) -> _Joint | None:
    """None for a linear layer; else the nonlinearity's (mid, half)."""
    if layer is not None and mergeable(layer):
        return None
    if layer is not None and type(layer) in SLOPE_RANGES:
        return _elementwise(*SLOPE_RANGES[type(layer)](layer))
    if layer is not None and has_layer_bound(type(layer)):
        return _Joint(0.0, layer_bound(layer, in_shape, method).bound)
    key = node.target if node.op in ("call_function", "call_method") else None
    if key in FUNCTION_SLOPE_RANGES and len(node.args) == 1 and not node.kwargs:
        return _elementwise(*FUNCTION_SLOPE_RANGES[key])
    what = type(layer).__name__ if layer is not None else getattr(node.target, "__name__", node.target)
    raise UnsupportedLayerError(f"method='segments' has no rule for {what}: linear layers, the activations "
                                f"{', '.join(c.__name__ for c in SLOPE_RANGES)} and layers with a registered bound; "
                                "use method='gram'")


def _elementwise(a: float, b: float) -> _Joint:
    if not (math.isfinite(a) and math.isfinite(b) and a <= b):
        raise ValueError(f"slope range [{a}, {b}] is not an interval")
    return _Joint((a + b) / 2, (b - a) / 2)


def tighten(gm: fx.GraphModule, product: LipschitzBound, shape_of: Callable[[fx.Node], tuple[int, ...]],
            input_shape: tuple[int, ...]) -> LipschitzBound:
    """The product walk's result with the segment bound added as a last row; upper = the smaller."""
    value, segments = segment_bound(gm, shape_of, "gram")
    upper = min(value, product.upper)
    row = LayerRow("(whole network)", "segment expansion", input_shape, value,
                   f"Combettes-Pesquet, {segments} segment norms (product {product.upper:.4g})", None, upper)
    return LipschitzBound(upper, [*product.layers, row], "segments")
