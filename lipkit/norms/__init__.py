"""Norms of weights and of layers' linear maps: power / Gram / dense linear algebra (linalg),
a layer's linear operator at an input shape (operators), a conv's per-frequency matrices
(conv_symbol), and the public entry points spectral_norm / operator_norm (measure)."""
from .measure import METHODS, operator_norm, spectral_norm, weight_matrix

__all__ = ["METHODS", "operator_norm", "spectral_norm", "weight_matrix"]
