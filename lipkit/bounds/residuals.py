"""Residual blocks whose branch is linear, bounded as one map: x + A x has constant
||I + A||, which can be far below the sum rule's 1 + ||A|| (issue 15, item 3). A = -I/2 gives
||I + A|| = 1/2 where the sum rule says 3/2; linear-residual networks (LiResNet, NeurIPS 2023)
are built from exactly such blocks.

A residual is an add / sub node (operator.add, torch.add with alpha, x.add(...), `out +=
identity`) of a value s and the output t of a path of linear layers (bounds/merges.py
MERGEABLE) that starts at s, each read only by the next, with s, t and the result of one
shape. Its map is c_s I + c_t A (c from the operator and alpha). Bounds, each certified:
- one square Linear, or one stride-1 "same" conv with as many output as input channels (after
  folding its BatchNorms): the layer's own rule on the weight with c_s added at the centre tap
  (c_s I + c_t A is that conv: the centre tap reads the output's own position, never padding);
- a composite small enough for a dense matrix: its exact norm;
- otherwise the sum rule |c_s| + |c_t| ||A||, what the plain walk gives.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn

from ..norms.dense_gram import is_small
from ..norms.linalg import certified_top_singular_value, dense_top_singular_value
from ..norms.operators import CONV
from .layer_rules import LayerRule, linear_layer_rule
from .merges import chain_rule, composite_matrix, folded_items, mergeable

ADDS = {operator.add, torch.add, "add", operator.iadd, "add_"}
SUBS = {operator.sub, torch.sub, "sub", operator.isub, "sub_"}
IN_PLACE = {operator.iadd, "add_", operator.isub, "sub_"}
MAX_BRANCH = 64  # linear layers followed back from a sum before giving up


@dataclass(frozen=True)
class Residual:
    source: fx.Node  # s
    branch: tuple[fx.Node, ...]  # the linear layers from s to t, in call order
    coefs: tuple[float, float]  # the result is coefs[0] * s + coefs[1] * A(s)


def linear_residuals(gm: fx.GraphModule) -> dict[fx.Node, Residual]:
    """{sum node: its Residual} for every sum of a value and a linear branch of it."""
    modules = dict(gm.named_modules())
    found: dict[fx.Node, Residual] = {}
    for node in gm.graph.nodes:
        if node.op not in ("call_function", "call_method") or node.target not in ADDS | SUBS:
            continue
        alpha = node.kwargs.get("alpha", 1)
        if len(node.args) != 2 or set(node.kwargs) - {"alpha"} or isinstance(alpha, bool) \
                or not isinstance(alpha, (int, float)):
            continue
        a, b = node.args
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or a is b:
            continue
        coef_b = (-1.0 if node.target in SUBS else 1.0) * float(alpha)
        for s, t, c_s, c_t in ((a, b, 1.0, coef_b), (b, a, coef_b, 1.0)):
            if node.target in IN_PLACE and a is not t:  # writing into s would change s for its other readers
                continue
            branch = _linear_path(t, s, modules)
            shapes = {n.meta.get("lipkit_shape") for n in (s, t, node)}
            if branch and len(shapes) == 1 and None not in shapes:
                found[node] = Residual(s, branch, (c_s, c_t))
                break
    return found


def _linear_path(t: fx.Node, s: fx.Node, modules: dict[str, nn.Module]) -> tuple[fx.Node, ...] | None:
    """The mergeable layers from s to t (each with one argument and one reader), else None."""
    path = []
    node = t
    while node is not s:
        if len(path) == MAX_BRANCH or node.op != "call_module" or not mergeable(modules[node.target]) \
                or len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node) \
                or len(node.users) != 1:
            return None
        path.append(node)
        node = node.args[0]
    return tuple(reversed(path))


def residual_rule(res: Residual, modules: dict[str, nn.Module], shape: tuple[int, ...], method: str) -> LayerRule:
    """Certified bound of c_s I + c_t A (module docs: in order of preference)."""
    c_s, c_t = res.coefs
    layers = [modules[n.target] for n in res.branch]
    shapes = [shape] * (len(layers) + 1)  # only the ends matter to a square map; fill in the inner ones
    shapes[1:-1] = [n.meta["lipkit_shape"][1:] for n in res.branch[:-1]]
    items = folded_items(layers, shapes)
    if len(items) == 1 and _has_identity_tap(items[0], shape):
        item = items[0]
        weight = c_t * item.weight.detach().to(torch.float64)  # (folding sets every Linear / conv's weight)
        rule = linear_layer_rule(item.layer, shape, method, weight=_add_identity(weight, item.layer, c_s))
        return LayerRule(rule.bound, f"||{c_s:g} I + {c_t:g} A||: {rule.how}")
    dim = math.prod(shape)
    if items and (is_small(dim, dim) or method == "exact"):
        matrix = c_t * composite_matrix(items, dim) + c_s * torch.eye(dim, dtype=torch.float64)
        if method == "exact":
            return LayerRule(dense_top_singular_value(matrix), f"||{c_s:g} I + {c_t:g} A||: exact (dense SVD)")
        return LayerRule(certified_top_singular_value(matrix), f"||{c_s:g} I + {c_t:g} A||: exact (dense, certified)")
    rule = chain_rule(layers, shapes, method)
    return LayerRule(abs(c_s) + abs(c_t) * rule.bound, f"|{c_s:g}| + |{c_t:g}| ||A|| ({rule.how})")


def _has_identity_tap(item, shape: tuple[int, ...]) -> bool:
    """A square Linear, or a conv mapping `shape` to itself with stride 1 and an odd kernel
    centred by its padding (so its centre tap reads each output's own position)."""
    layer = item.layer
    if isinstance(layer, nn.Linear):
        return layer.in_features == layer.out_features and item.in_shape == item.out_shape == shape
    if not isinstance(layer, CONV) or item.in_shape != shape or item.out_shape != shape:
        return False
    k, d, p = layer.kernel_size, layer.dilation, layer.padding
    centred = p == "same" or (not isinstance(p, str) and all(pi == di * (ki - 1) // 2 for pi, di, ki in zip(p, d, k)))
    return all(s == 1 for s in layer.stride) and all(ki % 2 == 1 for ki in k) and centred \
        and layer.in_channels == layer.out_channels


def _add_identity(weight: torch.Tensor, layer: nn.Module, c: float) -> torch.Tensor:
    """weight + c * (the identity's weight in the layer's layout)."""
    w = weight.clone()
    if isinstance(layer, nn.Linear):
        return w + c * torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
    per_group = w.shape[1]  # output channel o reads input channel o: local index o % (in / groups)
    centre = tuple(k // 2 for k in w.shape[2:])
    channels = torch.arange(w.shape[0], device=w.device)
    w[(channels, channels % per_group, *centre)] += c
    return w
