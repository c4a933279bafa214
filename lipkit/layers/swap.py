"""Turn a ReLU network into a gradient-norm-preserving one: every ReLU / LeakyReLU module
replaced by GroupSort, in place. Used by the `lipnet` method (methods/builtin.py) so the
same critic architectures (mlp_critic, conv_critic) serve every method: only the
activations and the weight maps differ.

Only activation MODULES are replaced (a functional F.relu inside a custom forward is not
seen): the count replaced is returned, and zero is an error (nothing would change).
"""
from __future__ import annotations

import torch.nn as nn

from .sort import GroupSort

SWAPPED = (nn.ReLU, nn.LeakyReLU)


def sort_activations_(model: nn.Module, group_size: int = 2) -> int:
    """Replace every nn.ReLU / nn.LeakyReLU in `model` by GroupSort(group_size); returns how many."""
    targets = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
               if isinstance(child, SWAPPED)]
    if not targets:
        raise ValueError(f"{type(model).__name__} has no nn.ReLU / nn.LeakyReLU module to replace by GroupSort")
    for parent, name in targets:
        setattr(parent, name, GroupSort(group_size))
    return len(targets)
