"""Exact merges of consecutive linear layers in a traced network (issue 15, item 3).

A product of per-layer bounds is loose where two layers are one linear map: an eval-mode
BatchNorm is a per-channel scale s of its input, so conv -> BN is the conv with its output
channels scaled, and its norm is ||conv . diag(s)||, often well below ||conv|| * max|s|
(Conv2d(3, 6, 3, 1, 1) -> BatchNorm2d(6) at 12x12: product 4.51, pair 3.38). ResNets and
VGG-BN have one such pair per conv, so the loss compounds with depth.

A chain is a run of call_module nodes, each a linear layer (Linear, conv, ConvTranspose,
eval BatchNorm, average pooling, Flatten / Identity / Dropout) whose one argument is the
previous one's output and whose output nothing else reads. Its bound, in order of
preference, each certified:
1. every BatchNorm folded into a neighbouring conv / Linear weight (output side when the
   BN follows it, input side when it precedes it): exact rescaling, then the layer's own
   rule (Gram on the folded conv's symbol, exact SVD for a Linear);
2. what is left, if several layers: the exact norm of the composite (dense SVD) when it is
   small (the limits under which a lone conv is also bounded exactly), or the product of
   the Linears as one matrix; otherwise the product of what is left.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn

from ..norms.dense_gram import is_small
from ..norms.linalg import (
    certified_top_singular_value,
    check_dense_size,
    dense_matrix_small_side,
    dense_top_singular_value,
)
from ..norms.operators import AVGPOOL, BATCHNORM, CONV, CONV_TRANSPOSE, IDENTITY_LIKE, batchnorm_scale, build_operator
from ..overrides import known_base, overridden_base
from .layer_rules import LayerRule, layer_bound, linear_layer_rule

DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
WEIGHTED = (nn.Linear, *CONV, *CONV_TRANSPOSE)
MERGEABLE = (*WEIGHTED, *BATCHNORM, *AVGPOOL, *IDENTITY_LIKE, *DROPOUT)


def mergeable(layer: nn.Module) -> bool:
    """A layer whose map is its base class's linear map: a subclass that overrides forward
    (anything may happen there) is not merged, it keeps its own registered rule."""
    return known_base(type(layer), MERGEABLE) is not None and overridden_base(type(layer), MERGEABLE) is None


def linear_chains(gm: fx.GraphModule) -> dict[fx.Node, list[fx.Node]]:
    """{last node: the chain's nodes in call order} for every chain of >= 2 mergeable layers."""
    modules = dict(gm.named_modules())

    def link(node: fx.Node) -> bool:  # a mergeable layer called on one positional argument
        return (node.op == "call_module" and mergeable(modules[node.target]) and len(node.args) == 1
                and not node.kwargs and isinstance(node.args[0], fx.Node))

    chains: dict[fx.Node, list[fx.Node]] = {}
    chain_of: dict[fx.Node, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if not link(node):
            continue
        source = node.args[0]
        if source in chain_of and len(source.users) == 1:
            chain = chain_of.pop(source)
            chains.pop(source, None)
            chain.append(node)
            chains[node] = chain
        else:
            chain = [node]
        chain_of[node] = chain
    return {last: chain for last, chain in chains.items() if len(chain) >= 2}


@dataclass
class _Item:
    layer: nn.Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight: torch.Tensor | None = None  # a folded weight, else layer.weight
    folded: int = 0  # BatchNorms folded into it


def _channel_scale(weight: torch.Tensor, layer: nn.Module, scale: torch.Tensor, side: str) -> torch.Tensor:
    """weight with the layer's output (side="out") or input (side="in") channels scaled."""
    w = weight.detach().to(torch.float64)
    s = scale.to(w)
    if isinstance(layer, nn.Linear):
        return w * (s[:, None] if side == "out" else s[None, :])
    groups = layer.groups
    transposed = isinstance(layer, CONV_TRANSPOSE)
    # conv weight (out, in/g, k..): output channel = dim 0, input channel = g * (in/g) + dim 1.
    # transposed (in, out/g, k..): input channel = dim 0, output channel = g * (out/g) + dim 1.
    whole, per_group = (s, None) if (side == "out") != transposed else (None, s)
    view = (-1, 1) + (1,) * (w.dim() - 2)
    if whole is not None:
        return w * whole.view(view)
    rows, cols = w.shape[0], w.shape[1]
    group_of_row = torch.arange(rows, device=w.device) // (rows // groups)
    index = group_of_row[:, None] * cols + torch.arange(cols, device=w.device)[None, :]
    return w * per_group[index].view(rows, cols, *(1,) * (w.dim() - 2))


def _foldable(item: _Item, bn_shape: tuple[int, ...]) -> bool:
    """Can a BatchNorm on values of bn_shape be folded into item's channels? (A Linear's
    features are BN1d's channels only for 1-D samples.)"""
    if isinstance(item.layer, nn.Linear):
        return len(bn_shape) == 1
    return isinstance(item.layer, (*CONV, *CONV_TRANSPOSE))


def _fold_batchnorms(items: list[_Item]) -> list[_Item]:
    """BatchNorms folded into the conv / Linear before them, or else after them; identity-like
    layers dropped (Flatten only reshapes); any other BatchNorm kept as a layer."""
    kept: list[_Item] = []
    pending: list[_Item] = []  # BatchNorms waiting for a weighted layer after them
    for item in items:
        layer = item.layer
        if isinstance(layer, (*IDENTITY_LIKE, *DROPOUT)):
            if pending and isinstance(layer, IDENTITY_LIKE):  # a reshape between BN and its layer:
                kept += pending  # the channels no longer line up, keep them as layers
                pending = []
            continue
        if isinstance(layer, BATCHNORM):
            prev = kept[-1] if kept else None
            if prev is not None and isinstance(prev.layer, WEIGHTED) and prev.out_shape == item.in_shape \
                    and _foldable(prev, item.in_shape):
                prev.weight = _channel_scale(prev.weight, prev.layer, batchnorm_scale(layer), "out")
                prev.folded += 1
            else:
                pending.append(item)
            continue
        if isinstance(layer, WEIGHTED):
            item.weight = layer.weight
            for bn in reversed(pending):  # innermost first; all scale the same input channels
                if bn.out_shape == item.in_shape and _foldable(item, bn.in_shape):
                    item.weight = _channel_scale(item.weight, layer, batchnorm_scale(bn.layer), "in")
                    item.folded += 1
                else:
                    kept.append(bn)
            pending = []
        else:
            kept += pending
            pending = []
        kept.append(item)
    return kept + pending


def _item_rule(item: _Item, method: str) -> LayerRule:
    if isinstance(item.layer, WEIGHTED):
        return linear_layer_rule(item.layer, item.in_shape, method, weight=item.weight)
    return layer_bound(item.layer, item.in_shape, method)


def folded_items(layers: list[nn.Module], shapes: list[tuple[int, ...]]) -> list[_Item]:
    """The chain's layers with every foldable BatchNorm folded in (shapes as chain_rule's)."""
    return _fold_batchnorms([_Item(layer, shapes[i], shapes[i + 1]) for i, layer in enumerate(layers)])


def composite_matrix(items: list[_Item], out_dim: int) -> torch.Tensor:
    """A dense matrix of the composite of `items` (its transpose when built from the output
    side: the same singular values), float64."""
    ops = [build_operator(item.layer, item.in_shape, torch.float64, item.weight) for item in items]

    def composite(x):
        for op in ops:
            x = op.forward(x.reshape(-1, *op.in_shape))
        return x

    device = next((p.device for item in items for p in item.layer.parameters()), torch.device("cpu"))
    with torch.no_grad():
        return dense_matrix_small_side(composite, items[0].in_shape, out_dim, torch.float64, device)


def chain_rule(layers: list[nn.Module], shapes: list[tuple[int, ...]], method: str) -> LayerRule:
    """Certified bound of the composite of `layers` (in call order); shapes[i] is layers[i]'s
    input shape and shapes[-1] the chain's output shape."""
    items = folded_items(layers, shapes)
    folded = sum(item.folded for item in items)
    note = f"{folded} BatchNorm folded; " if folded else ""
    if not items:
        return LayerRule(1.0, "identity")
    if len(items) == 1:
        rule = _item_rule(items[0], method)
        return LayerRule(rule.bound, note + rule.how)
    if all(isinstance(item.layer, nn.Linear) for item in items):
        matrix = items[0].weight.detach().to(torch.float64)
        for item in items[1:]:
            matrix = item.weight.detach().to(torch.float64) @ matrix
        if method == "exact":
            return LayerRule(dense_top_singular_value(matrix), note + "exact (SVD of the product)")
        return LayerRule(certified_top_singular_value(matrix), note + "exact product (dense, certified)")
    in_dim, out_dim = math.prod(items[0].in_shape), math.prod(items[-1].out_shape)
    small = is_small(in_dim, out_dim)
    if method == "exact" and not small:
        check_dense_size(in_dim, out_dim, "the composite of " + " -> ".join(type(i.layer).__name__ for i in items))
    if method == "exact":
        return LayerRule(dense_top_singular_value(composite_matrix(items, out_dim)), note + "exact composite (dense SVD)")
    if small:  # the exact value, certified from above by Cholesky (a bound, as "gram" promises)
        value = certified_top_singular_value(composite_matrix(items, out_dim))
        return LayerRule(value, note + "exact composite (dense, certified)")
    rules = [_item_rule(item, method) for item in items]
    return LayerRule(math.prod(r.bound for r in rules), note + "product of " + ", ".join(r.how for r in rules))
