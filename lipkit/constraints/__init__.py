"""Lipschitz constraints on a model's weights: constrain, project_, export, unconstrain.

One small module per method (spectral.py, conv.py, clip.py, frobenius.py, batchnorm.py),
each mapping a raw weight to the weight the layer uses; api.py attaches them to a model
as reparametrizations or projections; options.py holds the defaults and validation.
"""
from .api import constrain, constraints_of, export, project_, unconstrain
from .base import Constraint
from .batchnorm import BatchNormScale
from .clip import WeightClip
from .conv import ConvSpectralNormalization
from .frobenius import FrobeniusClip
from .options import DEFAULTS, MODES, OPERATORS
from .spectral import SpectralNormalization

__all__ = [
    "BatchNormScale",
    "Constraint",
    "ConvSpectralNormalization",
    "DEFAULTS",
    "FrobeniusClip",
    "MODES",
    "OPERATORS",
    "SpectralNormalization",
    "WeightClip",
    "constrain",
    "constraints_of",
    "export",
    "project_",
    "unconstrain",
]
