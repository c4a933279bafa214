"""lipkit: Lipschitz constraints for PyTorch - measure, certify, constrain, regularize."""
from .bounds import LayerRow, LipschitzBound, lipschitz_bound
from .layer_bounds import LayerRule, UnsupportedLayerError, register_layer_bound
from .lower_bound import lipschitz_lower_bound
from .spectral import operator_norm, spectral_norm

__all__ = [
    "LayerRow",
    "LayerRule",
    "LipschitzBound",
    "UnsupportedLayerError",
    "lipschitz_bound",
    "lipschitz_lower_bound",
    "operator_norm",
    "register_layer_bound",
    "spectral_norm",
]
