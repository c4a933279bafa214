"""Whole-network Lipschitz bounds: the certified upper bound (network.py: an fx walk that
multiplies per-layer rules, after probe.py ran the graph for shapes, dtypes and arguments),
the per-layer rule registry (layer_rules.py: singledispatch, extended with
register_layer_bound; the rules of activations.py, copying.py (padding, nearest upsampling,
shuffles), interpolation.py (weighted upsampling), normalization.py (LayerNorm and kin) and
pooling.py; function_rules.py for functional calls, functional_layers.py for F.max_pool2d,
F.softmax and the other functional forms of modules), the tighter merges (merges.py,
residuals.py, segments.py) and the empirical lower bound (lower.py)."""
from . import normalization  # noqa: F401  (registers the rules of LayerNorm, GroupNorm, InstanceNorm, RMSNorm)
from .layer_rules import LayerRule, UnsupportedLayerError, register_layer_bound
from .lower import lipschitz_lower_bound
from .network import BOUND_METHODS, lipschitz_bound
from .result import LayerRow, LipschitzBound

__all__ = ["BOUND_METHODS", "LayerRow", "LayerRule", "LipschitzBound", "UnsupportedLayerError",
           "lipschitz_bound", "lipschitz_lower_bound", "register_layer_bound"]
