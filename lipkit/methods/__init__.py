"""The registry of Lipschitz methods (registry.py) and lipkit's own entries (builtin.py)."""
from . import builtin  # noqa: F401  (registers lipkit's methods)
from .registry import (
    USES,
    AppliedMethod,
    Batch,
    Method,
    PenaltyTerm,
    apply_method,
    get_method,
    method_names,
    register_method,
    unregister_method,
)

__all__ = ["USES", "AppliedMethod", "Batch", "Method", "PenaltyTerm", "apply_method", "get_method",
           "method_names", "register_method", "unregister_method"]
