"""Which layers a weight penalty reads, and which weight of each.

Every weight penalty (l2, frobenius, spectral) walks the same selection, so `where`
means the same thing everywhere:
    None                      every Linear / Conv* / ConvTranspose* layer of the model;
    a layer type or tuple     only layers of those types (e.g. nn.Conv2d);
    a callable(name, module)  only layers for which it returns True;
    a name or names           exactly those layers (qualified names, as named_modules()).
Biases are never penalized: they shift the function, they do not change its slope.

The weight read is the one the layer USES (`module.weight`): for a layer reparametrized
with torch.nn.utils.parametrize that is the constrained weight, and reading it re-runs the
parametrization in train mode. Wrap the step in `torch.nn.utils.parametrize.cached()` so the
forward pass and the penalty share one evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Union

import torch.nn as nn
from torch import Tensor
from torch.nn.parameter import UninitializedParameter
from torch.nn.utils import parametrize

from ..norms.operators import CONV, CONV_TRANSPOSE

WEIGHTED = (nn.Linear, *CONV, *CONV_TRANSPOSE)

Where = Union[None, type, tuple, Callable[[str, nn.Module], bool], str, Iterable[str]]


@dataclass(frozen=True)
class WeightedLayer:
    """One penalized layer: its qualified name, the module, and its output dim.

    dim: the weight dim that indexes outputs in torch's reshape convention
    (weight.movedim(dim, 0).flatten(1)): 0, except 1 for ConvTranspose.
    """

    name: str
    module: nn.Module
    dim: int

    @property
    def weight(self) -> Tensor:
        """The weight the layer computes with (re-runs a parametrization if any)."""
        return self.module.weight

    def sources(self) -> tuple[Tensor, ...]:
        """The stored tensors the weight is computed from, without computing it.

        A plain layer: its weight parameter. A parametrized one: the raw weight(s) and
        the parametrization's own parameters and buffers (e.g. a constraint's power-
        iteration vectors, which change the effective weight when they move).
        """
        if parametrize.is_parametrized(self.module, "weight"):
            plist = self.module.parametrizations.weight
            return (*plist.parameters(), *plist.buffers())
        return (self.module.weight,)


def select_layers(model: nn.Module, where: Where = None) -> list[WeightedLayer]:
    """The Linear / Conv / ConvTranspose layers of `model` chosen by `where` (module docs).

    A weight shared by several layers is listed once. Raises ValueError when nothing is
    selected: an empty penalty is almost always a typo in `where`, not an intent.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    keep = _predicate(model, where)
    layers: list[WeightedLayer] = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        if not isinstance(module, WEIGHTED) or not keep(name, module):
            continue
        if parametrize.is_parametrized(module, "weight"):
            raw = module.parametrizations.weight.original
        else:
            raw = module.weight
        if isinstance(raw, UninitializedParameter):
            raise ValueError(
                f"layer {name!r} ({type(module).__name__}) has an uninitialized lazy weight: "
                "run one forward pass before computing a weight penalty"
            )
        if id(raw) in seen:
            continue
        seen.add(id(raw))
        layers.append(WeightedLayer(name, module, 1 if isinstance(module, CONV_TRANSPOSE) else 0))
    if not layers:
        raise ValueError(
            f"no layer selected in {type(model).__name__} with where={where!r}: weight "
            "penalties read Linear, Conv1d/2d/3d and ConvTranspose1d/2d/3d layers"
        )
    return layers


def _predicate(model: nn.Module, where: Where) -> Callable[[str, nn.Module], bool]:
    """Turn any accepted form of `where` into a (name, module) -> bool filter."""
    if where is None:
        return lambda name, module: True
    if isinstance(where, type) or (
        isinstance(where, tuple) and where and all(isinstance(t, type) for t in where)
    ):
        return lambda name, module: isinstance(module, where)
    if callable(where):
        return lambda name, module: bool(where(name, module))
    if isinstance(where, str):
        where = [where]
    try:
        names = set(where)
    except TypeError:
        raise ValueError(
            f"where={where!r} is not allowed: use None, a layer type (or tuple of types), "
            "a callable(name, module) -> bool, or layer names"
        ) from None
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"where={where!r}: a collection given as `where` must hold layer names (str)")
    modules = dict(model.named_modules())
    unknown = sorted(n for n in names if not isinstance(modules.get(n), WEIGHTED))
    if unknown:
        weighted = [n for n, m in modules.items() if isinstance(m, WEIGHTED)]
        raise ValueError(
            f"where names {unknown} that are not Linear/Conv/ConvTranspose layers of "
            f"{type(model).__name__}; its weighted layers are {weighted}"
        )
    return lambda name, module: name in names
