"""Whole-network Lipschitz bounds: the certified upper bound (network.py: an fx walk that
multiplies per-layer rules), the per-layer rule registry (layer_rules.py: singledispatch,
extended with register_layer_bound) and the empirical lower bound (lower.py)."""
from . import normalization  # noqa: F401  (registers the rules of LayerNorm, GroupNorm, InstanceNorm)
from .layer_rules import LayerRule, UnsupportedLayerError, register_layer_bound
from .lower import lipschitz_lower_bound
from .network import BOUND_METHODS, lipschitz_bound
from .result import LayerRow, LipschitzBound

__all__ = ["BOUND_METHODS", "LayerRow", "LayerRule", "LipschitzBound", "UnsupportedLayerError",
           "lipschitz_bound", "lipschitz_lower_bound", "register_layer_bound"]
