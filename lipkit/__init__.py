"""lipkit: Lipschitz constraints for PyTorch - measure, certify, constrain, regularize."""
from .spectral import operator_norm, spectral_norm

__all__ = ["operator_norm", "spectral_norm"]
