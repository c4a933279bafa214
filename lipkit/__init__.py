"""lipkit: Lipschitz constraints for PyTorch - measure, certify, constrain, regularize."""
from .bounds import LayerRow, LipschitzBound, lipschitz_bound
from .constraints import constrain, export, project_, unconstrain
from .layer_bounds import LayerRule, UnsupportedLayerError, register_layer_bound
from .lower_bound import lipschitz_lower_bound
from .penalties import (
    SpectralPenalty,
    frobenius_penalty,
    gradient_penalty,
    input_gradient_penalty,
    l2_penalty,
    spectral_penalty,
    weight_gradient_penalty,
)
from .spectral import operator_norm, spectral_norm

__all__ = [
    "constrain",
    "export",
    "frobenius_penalty",
    "gradient_penalty",
    "input_gradient_penalty",
    "l2_penalty",
    "LayerRow",
    "LayerRule",
    "lipschitz_bound",
    "lipschitz_lower_bound",
    "LipschitzBound",
    "operator_norm",
    "project_",
    "register_layer_bound",
    "spectral_norm",
    "spectral_penalty",
    "SpectralPenalty",
    "unconstrain",
    "UnsupportedLayerError",
    "weight_gradient_penalty",
]
