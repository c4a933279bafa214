"""Which layers a weight penalty reads, and which weight of each.

Every weight penalty (l2, frobenius, spectral) selects its Linear / Conv* / ConvTranspose*
layers with lipkit/where.py, the selector lk.constrain uses, so `where` means the same thing
everywhere (None, layer types, a callable(name, module), fnmatch patterns on qualified names).
Biases are never penalized: they shift the function, they do not change its slope.

The weight read is the one the layer USES (`module.weight`): for a layer reparametrized
with torch.nn.utils.parametrize that is the constrained weight, and reading it re-runs the
parametrization in train mode. Wrap the step in `torch.nn.utils.parametrize.cached()` so the
forward pass and the penalty share one evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
from torch import Tensor
from torch.nn.parameter import UninitializedParameter
from torch.nn.utils import parametrize

from ..norms.operators import CONV, CONV_TRANSPOSE
from ..where import Where, select

WEIGHTED = (nn.Linear, *CONV, *CONV_TRANSPOSE)


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
    selected or a pattern matches nothing: almost always a typo in `where`, not an intent.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHTED)]
    chosen = select(candidates, where, "layers that weight penalties read (Linear, Conv1d/2d/3d, "
                    "ConvTranspose1d/2d/3d)")
    layers: list[WeightedLayer] = []
    seen: set[int] = set()
    for name, module in chosen:
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
    return layers
