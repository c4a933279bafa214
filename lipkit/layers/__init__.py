"""1-Lipschitz building blocks that are modules (activations that keep gradient norms)."""
from .cayley import CayleyConv2d
from .sort import FullSort, GroupSort
from .swap import sort_activations_

__all__ = ["CayleyConv2d", "FullSort", "GroupSort", "sort_activations_"]
