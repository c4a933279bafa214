"""1-Lipschitz building blocks that are modules (activations that keep gradient norms)."""
from .sort import FullSort, GroupSort

__all__ = ["FullSort", "GroupSort"]
