"""Penalties: functions returning a scalar tensor to add to a loss (DESIGN.md, abstraction 2).

Weight penalties read the model (`where` selects layers, see penalties.layers):
    l2_penalty, frobenius_penalty, spectral_penalty / SpectralPenalty (checkpointable state)
Gradient penalties read a critic or classifier and data:
    gradient_penalty (WGAN-GP, one-sided GP+, at interpolates / real / fake),
    input_gradient_penalty, weight_gradient_penalty
"""
from .gradient import gradient_penalty
from .snr import SpectralPenalty, spectral_penalty
from .supervised import input_gradient_penalty, weight_gradient_penalty
from .weights import frobenius_penalty, l2_penalty

__all__ = [
    "SpectralPenalty",
    "frobenius_penalty",
    "gradient_penalty",
    "input_gradient_penalty",
    "l2_penalty",
    "spectral_penalty",
    "weight_gradient_penalty",
]
