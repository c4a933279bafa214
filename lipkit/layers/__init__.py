"""1-Lipschitz building blocks that are modules (activations that keep gradient norms)."""
from .sort import FullSort, GroupSort
from .swap import sort_activations_

__all__ = ["FullSort", "GroupSort", "sort_activations_"]
