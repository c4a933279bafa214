"""Lipschitz rules for the functions and tensor methods a traced forward calls
(call_function / call_method nodes of the fx graph).

Soundness is the rule: every rule reads ALL arguments of the operation it bounds, and an
operation or an argument it does not understand is refused (UnsupportedLayerError), never
guessed. In particular:
- an operand that is used twice counts twice (y + y is 2 L_y, cat([y, y]) is sqrt(2) L_y);
- a + alpha * b (torch.add / sub and their methods, in-place included) reads alpha;
- a broadcast operand is replicated: an input-dependent tensor broadcast to m times its
  size contributes sqrt(m) L (a 1x1 context added to every pixel of an 8x8 map: 8 L);
- in-place operations change the tensor they write (network.py's walk updates it, or refuses
  when the tensor is a view or has views taken before the write, whose values would change
  unseen).
`lip(node)` gives a node's certified constant, None for values that do not depend on the
input (constants, shapes).
"""
from __future__ import annotations

import builtins
import math
import operator
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F

from .activations import FUNCTIONS as ACTIVATIONS
from .activations import function_constant
from .copying import FUNCTIONS as COPYING
from .copying import METHODS as COPYING_METHODS
from .copying import call_constant
from .functional_layers import FUNCTIONS as FUNCTIONAL_LAYERS
from .functional_layers import functional_constant
from .layer_rules import UnsupportedLayerError
from .pooling import adaptive_avg_constant, adaptive_max_constant, pooled_extent, reduced_count
from .probe import recorded_call, value_dtype

Lip = Callable[[Any], "float | None"]

ADD = {operator.add, operator.iadd, torch.add, "add", "add_"}
SUB = {operator.sub, operator.isub, torch.sub, "sub", "sub_"}
MUL = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
DIV = {operator.truediv, operator.itruediv, torch.div, "div", "div_"}
IN_PLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv}
# Ops that return the same entries rearranged (norm-preserving); the result may share memory.
VIEWS = {
    torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
    "flatten", "view", "reshape", "permute", "transpose", "contiguous", "squeeze", "unsqueeze",
}
SAME = VIEWS | {operator.neg, torch.neg, "neg", "clone", "float", "double", "to"}
# results that may share the source's memory (expand and narrow: copying maps that are views)
ALIASING = VIEWS | {operator.getitem, "float", "double", "to", "expand", "narrow", torch.narrow}
SHAPE_QUERIES = {"size", "dim", "numel", "ndimension", builtins.len}  # and getattr(x, "shape")
CAT = {torch.cat, torch.stack, torch.concat}
ADAPTIVE_AVG = {F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d}
ADAPTIVE_MAX = {F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d}
MEAN = {torch.mean, "mean"}
SUM = {torch.sum, "sum"}
# Reductions over feature dims that are 1-Lipschitz on each group they reduce (so on disjoint
# groups together): a max or min moves by at most the largest change in its group, logsumexp
# has gradient softmax (norm <= 1).
ONE_LIPSCHITZ_REDUCTIONS = {torch.amax, torch.amin, torch.logsumexp, "amax", "amin", "logsumexp"}
REDUCTIONS = MEAN | SUM | ONE_LIPSCHITZ_REDUCTIONS
# Elementwise max / min of two tensors: each output moves by at most the larger of its two
# operands' changes.
EXTREMES = {torch.maximum, torch.minimum, torch.fmax, torch.fmin, "maximum", "minimum", "fmax", "fmin"}
# Ops returning a tuple of pieces of one tensor (ShuffleNet's channel split): each piece keeps
# some entries of its source, never repeats one, so each has the source's constant.
SPLITS = {torch.chunk, torch.split, torch.unbind, torch.tensor_split, "chunk", "split", "unbind", "tensor_split"}


def operand_nodes(node: fx.Node) -> list[fx.Node]:
    """Every fx.Node among the node's arguments, with repeats (all_input_nodes drops them)."""
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return found


def sample_numel(node: fx.Node) -> int:
    return math.prod(node.meta["lipkit_shape"][1:])


def is_shape_query(node: fx.Node) -> bool:
    if node.target in SHAPE_QUERIES:
        return True
    return node.target is builtins.getattr and len(node.args) > 1 and node.args[1] in ("shape", "ndim")


def in_place_target(node: fx.Node) -> fx.Node | None:
    """The tensor a node writes into (x.add_(y), x += y, F.relu(x, inplace=True)), or None."""
    name = node.target if node.op == "call_method" else None
    written = (isinstance(name, str) and name.endswith("_")) or node.target in IN_PLACE_OPERATORS \
        or node.kwargs.get("inplace") is True
    target = node.args[0] if node.args else None
    return target if written and isinstance(target, fx.Node) else None


def function_rule(node: fx.Node, lip: Lip) -> float | None:
    """Certified Lipschitz constant of a call_function / call_method node (module docs)."""
    operands = operand_nodes(node)
    dependent = [n for n in operands if lip(n) is not None]
    if not dependent or is_shape_query(node):
        return None  # constants, sizes and shapes do not depend on the input's values
    dtype = value_dtype(node)
    if dtype is not None and not dtype.is_floating_point:
        raise UnsupportedLayerError(
            f"{node.format_node()} makes {dtype} values from the input (a cast to integers or booleans, an index of "
            "a maximum): a step function, which has no Lipschitz constant")
    fn = node.target
    if fn in SPLITS:
        if len(dependent) != 1 or dependent[0] is not node.args[0]:
            raise UnsupportedLayerError(f"{node.format_node()}: only the split tensor may depend on the input")
        return lip(node.args[0])
    if "lipkit_shape" not in node.meta:  # not a tensor: only an element of a tuple of tensors is understood
        raise UnsupportedLayerError(f"unsupported operation {node.format_node()}")
    if fn in ADD or fn in SUB:
        return _sum(node, lip)
    if fn in MUL or fn in DIV:
        return _scale(node, lip, dependent)
    if fn in SAME or fn is operator.getitem:
        return _rearrange(node, lip, dependent)
    if fn in ACTIVATIONS:
        return _activation(node, lip, dependent)
    if fn in CAT:
        return math.sqrt(sum(lip(n) ** 2 for n in dependent))
    if fn in EXTREMES:
        return _extreme(node, lip)
    if fn in ADAPTIVE_AVG or fn in ADAPTIVE_MAX or fn in REDUCTIONS:
        return _pooling(node, lip, dependent)
    if fn in COPYING or fn in COPYING_METHODS:
        return _copying(node, lip, dependent)
    if fn in FUNCTIONAL_LAYERS:
        return _functional_layer(node, lip, dependent)
    name = getattr(fn, "__name__", fn)
    raise UnsupportedLayerError(
        f"no Lipschitz rule for the operation {name!r} in {node.format_node()}. Use a module "
        "with a registered bound (lipkit.register_layer_bound) for it."
    )


def _sum(node: fx.Node, lip: Lip) -> float:
    """a + alpha * b (a - alpha * b): L_a + |alpha| L_b, each operand times sqrt(its broadcast
    multiplicity)."""
    extra = set(node.kwargs) - {"alpha"}
    if len(node.args) != 2 or extra:
        raise UnsupportedLayerError(f"unsupported arguments {sorted(extra) or node.args[2:]} in {node.format_node()}")
    alpha = node.kwargs.get("alpha", 1)
    if not isinstance(alpha, (int, float)):
        raise UnsupportedLayerError(f"alpha={alpha} is not a number in {node.format_node()}")
    out = sample_numel(node)
    total = 0.0
    for operand, coef in zip(node.args, (1.0, float(alpha))):
        if isinstance(operand, fx.Node) and lip(operand) is not None:
            total += abs(coef) * math.sqrt(out / sample_numel(operand)) * lip(operand)
    return total


def _extreme(node: fx.Node, lip: Lip) -> float:
    """max(a, b) / min(a, b) elementwise: |max(a, b) - max(a', b')| <= max(|a - a'|, |b - b'|),
    whose square is at most the sum of both squares, so L^2 <= m_a L_a^2 + m_b L_b^2 (m: an
    operand's broadcast multiplicity; an input-independent operand adds nothing)."""
    if len(node.args) != 2 or node.kwargs:
        raise UnsupportedLayerError(f"unsupported arguments in {node.format_node()}: two tensors are read")
    out = sample_numel(node)
    total = sum(out / sample_numel(a) * lip(a) ** 2 for a in node.args if isinstance(a, fx.Node) and lip(a) is not None)
    return math.sqrt(total)


def _scale(node: fx.Node, lip: Lip, dependent: list[fx.Node]) -> float:
    """c * a, a * c, a / c with c a Python number: |c| L_a (L_a / |c|)."""
    if len(node.args) == 2 and not node.kwargs and len(dependent) == 1:
        a, b = node.args
        if node.target in MUL and isinstance(a, (int, float)) != isinstance(b, (int, float)):
            c = a if isinstance(a, (int, float)) else b
            return abs(float(c)) * lip(dependent[0])
        if node.target in DIV and isinstance(a, fx.Node) and isinstance(b, (int, float)) and b != 0:
            return lip(a) / abs(float(b))
    if len(dependent) > 1:
        raise UnsupportedLayerError(
            f"{node.format_node()}: a product of two input-dependent tensors (squeeze-and-excitation, gating) has "
            "no global Lipschitz constant (its slope grows with the input), so no product of layer bounds "
            "certifies it; register a bound for the block (lipkit.register_layer_bound) if your inputs are bounded")
    raise UnsupportedLayerError(
        f"{node.format_node()}: only scaling by a Python number is certified (a scale held in a tensor is not "
        "read by this rule)")


def _rearrange(node: fx.Node, lip: Lip, dependent: list[fx.Node]) -> float:
    """Views, copies, dtype casts, negation and basic slicing: entries kept or dropped, never
    repeated, so L is unchanged. Every other argument must be input-independent (sizes)."""
    source = node.args[0]
    if len(dependent) != 1 or dependent[0] is not source:
        raise UnsupportedLayerError(f"{node.format_node()}: more than one input-dependent argument")
    if node.target is operator.getitem:
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        if not all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in index):
            raise UnsupportedLayerError(f"{node.format_node()}: only basic slicing is certified (advanced "
                                        "indexing may repeat entries)")
    return lip(source)


def _pooling(node: fx.Node, lip: Lip, dependent: list[fx.Node]) -> float:
    """F.adaptive_{avg,max}_pool{1,2,3}d(x, size) and reductions over feature dims (mean, sum,
    amax, amin, logsumexp; function or method): the exact constants of pooling.py (mean 1/sqrt(n),
    sum sqrt(n) for groups of n) or 1, every argument read."""
    x, fn = node.args[0], node.target
    if len(dependent) != 1 or dependent[0] is not x:
        raise UnsupportedLayerError(f"{node.format_node()}: only the pooled tensor may depend on the input")
    shape = x.meta["lipkit_shape"][1:]  # one sample of the pooled tensor
    names = ("dim", "keepdim") if fn in REDUCTIONS else ("output_size", "return_indices")
    options = {**dict(zip(names, node.args[1:])), **node.kwargs}
    if len(node.args) > 1 + len(names) or set(options) - set(names) or options.get("return_indices") \
            or options.get(names[0]) in (None, ()):
        raise UnsupportedLayerError(f"unsupported arguments in {node.format_node()}: read are {list(names)}, "
                                    f"{names[0]} must be given (a reduction over every dim mixes the batch), "
                                    "return_indices=True is refused")
    try:
        if fn in REDUCTIONS:
            n = reduced_count(shape, options["dim"])  # refuses the batch dim
            return (1 / math.sqrt(n) if fn in MEAN else math.sqrt(n) if fn in SUM else 1.0) * lip(x)
        constant = adaptive_avg_constant if fn in ADAPTIVE_AVG else adaptive_max_constant
        return constant(pooled_extent(fn.__name__, shape), options["output_size"]) * lip(x)
    except ValueError as err:
        raise UnsupportedLayerError(f"{node.format_node()}: {err}") from None


def _copying(node: fx.Node, lip: Lip, dependent: list[fx.Node]) -> float:
    """F.pad, F.interpolate, F.pixel_(un)shuffle: the exact constant of copying.py (weighted
    interpolation: interpolation.py), at the arguments the probe run passed (so amounts
    computed from x.size() are read too)."""
    x = node.args[0]
    if len(dependent) != 1 or dependent[0] is not x:
        raise UnsupportedLayerError(f"{node.format_node()}: only its first argument may depend on the input")
    try:
        args, kwargs = recorded_call(node)
        return call_constant(node.target, args, kwargs, x.meta["lipkit_shape"][1:]) * lip(x)
    except (ValueError, TypeError, RuntimeError) as err:
        raise UnsupportedLayerError(f"{node.format_node()}: {err}") from None


def _functional_layer(node: fx.Node, lip: Lip, dependent: list[fx.Node]) -> float:
    """F.max_pool2d, F.avg_pool2d, F.softmax, F.log_softmax, F.dropout, ...: their module's rule
    (functional_layers.py) at the arguments the probe run passed."""
    x = node.args[0]
    if len(dependent) != 1 or dependent[0] is not x:
        raise UnsupportedLayerError(f"{node.format_node()}: only its first argument may depend on the input")
    try:
        args, kwargs = recorded_call(node)
    except ValueError as err:
        raise UnsupportedLayerError(f"{node.format_node()}: {err}") from None
    return functional_constant(node.target, args, kwargs, x.meta["lipkit_shape"][1:]) * lip(x)


def _activation(node: fx.Node, lip: Lip, dependent: list[fx.Node]) -> float:
    fn = node.target
    if len(dependent) != 1 or dependent[0] is not node.args[0]:
        raise UnsupportedLayerError(f"{node.format_node()}: an activation's parameters must not depend on the input")
    return function_constant(fn, tuple(node.args[1:]), node.kwargs) * lip(node.args[0])


def write_in_place(node: fx.Node, target: fx.Node, lip: dict) -> None:
    """`node` wrote its result into `target`: later reads of `target` see the new values.

    An elementwise activation with constant <= 1 (relu_, inplace=True) only contracts the
    entries it rewrites, so every bound already held for the target and for any view of it
    stays valid. Any other write (add_, mul_, +=) gives the target the node's constant; a
    target that is a view, or has views taken before the write, is refused: those would change
    without a rule (a view taken after it, as in `y += x; return y.flatten(1)`, reads the new
    values, and its constant is computed from the new one).
    """
    new, old = lip.get(node), lip.get(target)
    if new is None:  # an input-independent value written: no constant changes
        return
    if old is not None and node.target in ACTIVATIONS and new <= old:
        return
    views = [u for u in target.users if u is not node and u.target in ALIASING and _between(target, u, node)]
    if (target.op in ("call_function", "call_method") and target.target in ALIASING) or views:
        raise UnsupportedLayerError(
            f"in-place operation {node.format_node()} writes into {target.name}, which is a view of another "
            f"tensor or has views ({', '.join(v.name for v in views) or 'its source'}): the bound cannot follow "
            "values changed through an alias. Write it out of place (y = y + ...).")
    lip[target] = new


def _between(first: fx.Node, node: fx.Node, last: fx.Node) -> bool:
    """Whether `node` comes after `first` and before `last` in the graph (first precedes last)."""
    cursor = last.prev
    while cursor is not first and cursor.op != "root":
        if cursor is node:
            return True
        cursor = cursor.prev
    return False

