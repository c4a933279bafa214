"""lipkit: Lipschitz constraints for PyTorch - measure, certify, constrain, regularize."""
from .bounds import (
    LayerRow,
    LayerRule,
    LipschitzBound,
    UnsupportedLayerError,
    lipschitz_bound,
    lipschitz_lower_bound,
    register_layer_bound,
)
from .constraints import constrain, export, project_, unconstrain
from .layers import CayleyConv2d, FullSort, GroupSort
from .losses import hkr_loss, margin_cross_entropy
from .norms import operator_norm, spectral_norm
from .penalties import (
    SpectralPenalty,
    frobenius_penalty,
    gradient_penalty,
    input_gradient_penalty,
    l2_penalty,
    spectral_penalty,
    weight_gradient_penalty,
)

__all__ = [
    "CayleyConv2d",
    "constrain",
    "export",
    "frobenius_penalty",
    "FullSort",
    "gradient_penalty",
    "hkr_loss",
    "GroupSort",
    "input_gradient_penalty",
    "l2_penalty",
    "LayerRow",
    "LayerRule",
    "lipschitz_bound",
    "lipschitz_lower_bound",
    "LipschitzBound",
    "margin_cross_entropy",
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
