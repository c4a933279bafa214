"""A certified upper bound on a whole network's Lipschitz constant (l2 -> l2).

The model is traced with torch.fx into its call graph, so nn.Sequential, nested modules
and custom forward methods (residual blocks) are all walked in call order. Each value in
the graph carries L, a certified Lipschitz constant of that value as a function of the
model's input, and the rules are the textbook ones:
    layer(a)      L = bound(layer) * L_a          (layer_rules.py registry)
    a + b, a - b  L = L_a + L_b                   (so x + f(x) gives 1 + L_f; alpha, broadcasting
                                                  and repeated operands counted: function_rules.py)
    c * a, a / c  L = |c| * L_a                   (c a Python number)
    cat/stack     L = sqrt(sum L_i^2)
    reshape, view, flatten, permute, slicing: L unchanged; sizes and shapes: constants;
    in-place writes update the tensor written (or are refused when it has views taken before).
An operation not covered raises an error that names it: nothing is silently skipped.
Bounds describe the model in eval mode; tracing and shape propagation run in eval mode
under no_grad and restore the training flags after, so no constraint state moves.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn
from tqdm.auto import tqdm

from ..norms.full_precision import at_full_precision
from ..norms.measure import spectral_norm
from ..norms.operators import CONV_TRANSPOSE, as_input_shape
from ..train_mode import MODE_DEPENDENT, describe, layers_in_train_mode
from .function_rules import function_rule, in_place_target, operand_nodes, write_in_place
from .layer_rules import (
    DRY_RUN_RULES,
    LayerRule,
    UnsupportedLayerError,
    has_layer_bound,
    layer_bound,
    rule_class,
    unbounded_kind,
)
from .merges import chain_rule, linear_chains
from .probe import probe_shapes, sample_shape
from .residuals import Residual, linear_residuals, residual_rule
from .result import LayerRow, LipschitzBound
from .sample_independence import check_samples_independent
from .segments import tighten

BOUND_METHODS = ("gram", "exact", "segments")
DRY_RULE = "lipkit_dry_rule"  # node meta: a layer rule the dry walk already computed


class _Tracer(fx.Tracer):
    """Stop at every module that has a registered bound (constrained layers included)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return rule_class(type(m)) is not None or super().is_leaf_module(m, qualname)  # (overrides refused later)


def _trace(model: nn.Module) -> fx.GraphModule:
    if rule_class(type(model)) is not None:  # fx never treats the root as a leaf: a bare nn.Linear would be
        model = nn.Sequential(OrderedDict(model=model))  # traced into F.linear, which has no rule
    try:
        graph = _Tracer().trace(model)
    except Exception as err:  # fx raises many types; say what to do about all of them
        raise ValueError(
            f"could not trace {type(model).__name__} with torch.fx ({type(err).__name__}: "
            f"{err}). lipschitz_bound needs a forward without data-dependent control flow; "
            "wrap the untraceable part in a module and register a bound for it "
            "(lipkit.register_layer_bound)."
        ) from err
    return fx.GraphModule(model, graph)


@at_full_precision
def lipschitz_bound(model: nn.Module, input_shape, method: str = "gram", *, merge: bool = True,
                    progress: bool = False) -> LipschitzBound:
    """Certified upper bound on the Lipschitz constant of `model` (eval mode), l2 to l2.

    input_shape: one sample's shape, no batch dim, e.g. (3, 32, 32).
    method: "gram" (certified Gram-iteration bounds for convs: fast at any size), "exact"
    (exact per-layer operator norms; dense SVD, limited to small shapes) or "segments"
    (feed-forward chains only: gram's product, tightened by the segment expansion of
    bounds/segments.py, never above it).
    merge: bound runs of consecutive linear layers as one map (eval BatchNorm folded into
    its conv / Linear, composites exact where small: bounds/merges.py); False multiplies
    every layer's bound (the plain product, for comparison).
    progress: a bar over the layers on stderr (the CLI turns it on at a terminal): large
    models take minutes on a CPU.
    Returns .upper and .layers (one row per layer, in call order; .table() prints them).
    """
    if method not in BOUND_METHODS:
        raise ValueError(f"method={method!r} is not one of {BOUND_METHODS} (certified methods)")
    shape = as_input_shape(input_shape)
    training = layers_in_train_mode(model, MODE_DEPENDENT)
    if training:
        raise ValueError(f"{type(model).__name__} has BatchNorm / Dropout in train mode ({describe(training)}); the bound "
                         "is of the eval-mode network (running statistics, no dropout): call model.eval() first")
    gm = _trace(model)
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        param = next(model.parameters(), None)
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ValueError(
                f"lipschitz_bound supports models with one tensor input; {type(model).__name__}"
                f".forward takes {len(placeholders)} ({', '.join(n.name for n in placeholders)})"
            )
        with torch.no_grad():
            probe_shapes(gm, shape, param)
            layer_method = "gram" if method == "segments" else method
            _walk(gm, layer_method, problems := [])  # every refusal first, in one error, before any norm
            if problems:
                raise UnsupportedLayerError(_unsupported_message(type(model).__name__, problems))
            check_samples_independent(gm, shape, param)  # what the rules' own checks cannot see
            residuals = linear_residuals(gm) if merge else {}
            in_branches = {n for r in residuals.values() for n in r.branch}
            chains = {last: c for last, c in (linear_chains(gm) if merge else {}).items() if last not in in_branches}
            layers = sum(n.op == "call_module" for n in gm.graph.nodes)
            with tqdm(total=layers, disable=not progress, desc="layers", leave=False, dynamic_ncols=True) as bar:
                result = _walk(gm, layer_method, chains=chains, residuals=residuals, advance=bar.update)
            return tighten(gm, result, sample_shape, shape) if method == "segments" else result
    finally:
        for m, training in modes.items():
            m.train(training)


def _walk(gm: fx.GraphModule, method: str, problems: list[tuple[str, str]] | None = None,
          chains: dict[fx.Node, list[fx.Node]] | None = None, residuals: dict[fx.Node, Residual] | None = None,
          advance: Callable[[int], object] = lambda layers: None) -> LipschitzBound:
    """The bound, node by node. With `problems` (a list): a dry run that computes no layer norm
    (each layer counts as 1) and collects every refusal as (layer type or "", message).
    chains: {last node: nodes} of linear layers bounded as one map (merges.linear_chains);
    residuals: {sum node: s + A s with A linear} bounded as ||I + A|| (residuals.py);
    advance(n): called as n more layers are bounded (a progress bar)."""
    lip: dict[fx.Node, float | None] = {}  # None: not a tensor that depends on the input
    rows: list[LayerRow] = []
    modules = dict(gm.named_modules())
    chains, residuals = chains or {}, residuals or {}
    inner = {n for chain in chains.values() for n in chain[:-1]}  # read only by the next link
    inner |= {n for r in residuals.values() for n in r.branch}  # read only by the next link or the sum
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            lip[node] = 1.0
        elif node.op == "get_attr":
            lip[node] = None
        elif node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node) or lip.get(out) is None:
                raise ValueError("lipschitz_bound needs a model returning one tensor")
            return LipschitzBound(float(lip[out]), rows, method)
        elif node.op == "call_module" and problems is not None:
            _check_module(node, modules[node.target], lip, problems)
        elif node in inner:
            lip[node] = None  # never read: the chain's last node reads the chain's input
        elif node in chains:
            rows += _chain_rule(chains[node], modules, lip, method)
            advance(len(chains[node]))
        elif node in residuals:
            rows += _residual_rule(node, residuals[node], modules, lip, method)
            advance(len(residuals[node].branch))
        elif node.op == "call_module":
            rows += _module_rule(node, modules[node.target], lip, method)
            advance(1)
        else:
            try:
                if "lipkit_shape" in node.meta:
                    sample_shape(node)  # refuses values that mix the samples of a batch
                lip[node] = function_rule(node, lip.get)
                rows += _function_row(node, lip) if problems is None else []
                target = in_place_target(node)
                if target is not None:
                    write_in_place(node, target, lip)
            except UnsupportedLayerError as err:  # (a batch-mixing ValueError stops at once)
                if problems is None:
                    raise
                problems.append((_operation_problem(node, err), node.name))
                lip[node] = 1.0  # carry on as if it were bounded, to find the next problem
    raise AssertionError("traced graph has no output node")


def _function_row(node: fx.Node, lip: dict) -> list[LayerRow]:
    """A row for a call of one input-dependent operand that changes the constant (F.max_pool2d
    with overlapping windows, F.log_softmax, x.sum(dims), 2 * x, ...): without it the table's
    cumulative column stopped short of the bound."""
    dependent = [n for n in operand_nodes(node) if lip.get(n) is not None]
    value = lip.get(node)
    if len(dependent) != 1 or value is None or not lip[dependent[0]] or dependent[0].meta.get("lipkit_shape") is None:
        return []
    factor = value / lip[dependent[0]]
    if abs(factor - 1.0) <= 1e-12:
        return []
    kind = str(getattr(node.target, "__name__", node.target))
    return [LayerRow(node.name, kind, sample_shape(dependent[0]), factor, "function rule", None, value)]


def _check_module(node: fx.Node, layer: nn.Module, lip: dict, problems: list[tuple[str, str]]) -> None:
    """Dry run of _module_rule: is there a rule for this layer (no norm computed)?"""
    dependent = [n for n in operand_nodes(node) if lip.get(n) is not None]
    lip[node] = 1.0 if dependent else None
    if len(dependent) > 1:
        problems.append((f"{type(layer).__name__} called with several input-dependent arguments", node.target))
    elif dependent and not has_layer_bound(type(layer)):
        problems.append((unbounded_kind(type(layer)), node.target))
    elif dependent and isinstance(layer, DRY_RUN_RULES):
        try:  # kept for the real walk (these rules do not depend on the method): computed once
            node.meta[DRY_RULE] = layer_bound(layer, sample_shape(dependent[0]), "gram")
        except UnsupportedLayerError as err:
            problems.append((str(err), node.target))  # the message starts with the layer's repr


def _operation_problem(node: fx.Node, err: Exception) -> str:
    """What is wrong with an operation, without the node's own name (so repeats group)."""
    name = getattr(node.target, "__name__", node.target)
    reason = str(err).replace(node.format_node(), "").replace(" in .", ".").strip(" :.;")
    return f"operation {name}: {reason}"


def _unsupported_message(model: str, problems: list[tuple[str, str]]) -> str:
    """One error: every unsupported layer type or operation once, with where it is used."""
    where: dict[str, list[str]] = {}
    for kind, name in problems:
        where.setdefault(kind, []).append(name)
    lines = [f"{kind} (at {', '.join(map(repr, names[:3]))}{f' and {len(names) - 3} more' if len(names) > 3 else ''})"
             for kind, names in where.items()]
    layers = [re.match(r"\w+", kind).group() for kind in where
              if not kind.startswith("operation ") and " called with " not in kind]
    hint = ""
    if layers:
        hint = (f"\nRegister a bound for each layer type (lipkit.register_layer_bound), e.g.\n"
                f"    @lipkit.register_layer_bound({layers[0]})\n    def _(layer, input_shape, method):\n"
                "        return lipkit.LayerRule(bound=..., how='...')")
    return (f"{model} cannot be bounded; found before computing any norm, {len(lines)} problem"
            f"{'s' if len(lines) > 1 else ''}:\n  " + "\n  ".join(lines) + hint)


def _module_rule(node: fx.Node, layer: nn.Module, lip: dict, method: str) -> list[LayerRow]:
    """A layer call: bound(layer) * L of its one input-dependent argument (a row of the table)."""
    dependent = [n for n in operand_nodes(node) if lip.get(n) is not None]
    if len(dependent) > 1:
        raise UnsupportedLayerError(
            f"layer {node.target!r} ({type(layer).__name__}) takes {len(dependent)} arguments that depend on the "
            "model input; lipschitz_bound bounds layers of one input (wrap the layer and register a bound)")
    if not dependent:  # applied to a constant: the result is a constant too
        lip[node] = None
        return []
    in_shape = sample_shape(dependent[0])
    rule = node.meta.get(DRY_RULE) or layer_bound(layer, in_shape, method)
    lip[node] = rule.bound * lip[dependent[0]]
    if getattr(layer, "inplace", False) and rule.bound > 1:  # nn.Hardswish(inplace=True) writes into its input:
        write_in_place(node, dependent[0], lip)  # later reads get its constant (or refused if the input has views)
    # (an elementwise map with constant <= 1 in place: every bound held for the input stays valid)
    return [LayerRow(node.target, type(layer).__name__, in_shape, rule.bound, rule.how, _reshaped_sigma(layer, rule),
                     lip[node])]


def _chain_rule(chain: list[fx.Node], modules: dict, lip: dict, method: str) -> list[LayerRow]:
    """A run of linear layers bounded as one map (one row of the table)."""
    source, last = chain[0].args[0], chain[-1]
    if lip.get(source) is None:  # applied to a constant: the result is a constant too
        lip[last] = None
        return []
    layers = [modules[n.target] for n in chain]
    shapes = [sample_shape(source)] + [sample_shape(n) for n in chain]
    rule = chain_rule(layers, shapes, method)
    lip[last] = rule.bound * lip[source]
    return [LayerRow("+".join(n.target for n in chain), "+".join(type(m).__name__ for m in layers), shapes[0],
                     rule.bound, rule.how, None, lip[last])]


def _residual_rule(node: fx.Node, res: Residual, modules: dict, lip: dict, method: str) -> list[LayerRow]:
    """s + A s with A a linear branch, bounded as one map (one row of the table)."""
    if lip.get(res.source) is None:  # a constant in, a constant out
        lip[node] = None
        return []
    shape = sample_shape(res.source)
    rule = residual_rule(res, modules, shape, method)
    lip[node] = rule.bound * lip[res.source]
    return [LayerRow(f"{node.name} (residual: {'+'.join(n.target for n in res.branch)})",
                     "I+" + "+".join(type(modules[n.target]).__name__ for n in res.branch), shape, rule.bound,
                     rule.how, None, lip[node])]


def _reshaped_sigma(layer: nn.Module, rule: LayerRule) -> float | None:
    w = getattr(layer, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() < 2:
        return None
    if isinstance(layer, nn.Linear) and rule.how.startswith("exact"):
        return rule.bound  # the same matrix's exact norm: a second SVD of a 4096x25088 weight took minutes
    return float(spectral_norm(w.detach(), dim=1 if isinstance(layer, CONV_TRANSPOSE) else 0))


