"""Functional forms of layers that have a module rule: F.max_pool2d beside nn.MaxPool2d,
F.avg_pool2d, F.softmax / F.log_softmax, F.dropout, F.layer_norm / F.group_norm. Each call is bounded by its module's
rule, the module built from the call's arguments as the probe run passed them (so a kernel
size computed from x.size() is read too). Every argument is read; one the module does not
take (a dtype cast to an integer type, return_indices=True) is refused.

Why: functional forward code calls these rather than modules, PyTorch's own MNIST example
included (F.relu, F.max_pool2d, F.log_softmax), and was refused as a whole.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layer_rules import UnsupportedLayerError, layer_bound
from .normalization import self_normalizing_constant

_MAX_POOL = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG_POOL = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
_SOFTMAX = ("dim", "_stacklevel", "dtype")  # F.softmax's order; torch.softmax and the method: (dim, dtype)
_SOFTMAX_TORCH = ("dim", "dtype")
# Call arguments that do not change the map (a floating dtype is a cast, _stacklevel a warning's frame).
_NOT_MAP = ("_stacklevel", "dtype")

# function or method name -> (module class, the call's parameter names after the input, in order)
FORMS: dict[Any, tuple[type[nn.Module], tuple[str, ...]]] = {
    F.max_pool1d: (nn.MaxPool1d, _MAX_POOL), F.max_pool2d: (nn.MaxPool2d, _MAX_POOL),
    F.max_pool3d: (nn.MaxPool3d, _MAX_POOL),
    F.avg_pool1d: (nn.AvgPool1d, _AVG_POOL[:5]), F.avg_pool2d: (nn.AvgPool2d, _AVG_POOL),
    F.avg_pool3d: (nn.AvgPool3d, _AVG_POOL),
    F.softmax: (nn.Softmax, _SOFTMAX), torch.softmax: (nn.Softmax, _SOFTMAX_TORCH), "softmax": (nn.Softmax, _SOFTMAX_TORCH),
    F.softmin: (nn.Softmin, _SOFTMAX),
    F.log_softmax: (nn.LogSoftmax, _SOFTMAX), torch.log_softmax: (nn.LogSoftmax, _SOFTMAX_TORCH),
    "log_softmax": (nn.LogSoftmax, _SOFTMAX_TORCH),
}
DROPOUT = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d}
_DROPOUT = ("p", "training", "inplace")
# Normalization by the input's own statistics (nanoGPT's LayerNorm calls F.layer_norm with its own
# weight): max|weight| / sqrt(eps), as the modules (normalization.py says why).
SELF_NORMALIZING = {F.layer_norm: ("normalized_shape", "weight", "bias", "eps"),
                    F.group_norm: ("num_groups", "weight", "bias", "eps")}
FUNCTIONS = (*FORMS, *DROPOUT, *SELF_NORMALIZING)


def _named(fn, names: tuple[str, ...], args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments after the input, by name; refused when there are more than known."""
    extra = set(kwargs) - set(names)
    if len(args) > len(names) or extra:
        raise UnsupportedLayerError(f"{getattr(fn, '__name__', fn)}: arguments {sorted(extra) or args[len(names):]} "
                                    f"are not read (read are {list(names)})")
    return {**dict(zip(names, args)), **kwargs}


def functional_constant(fn, args: tuple, kwargs: dict[str, Any], sample_shape: tuple[int, ...]) -> float:
    """The constant of fn(x, *args, **kwargs) on samples of `sample_shape` (fn in FUNCTIONS)."""
    if fn in DROPOUT:
        options = {"p": 0.5, "training": True, **_named(fn, _DROPOUT, args, kwargs)}
        p = float(options["p"])
        # In eval code `training=self.training` is False: the identity. A call left in training
        # mode zeroes entries at random and scales the rest by 1 / (1 - p): whatever the mask,
        # no entry moves more than 1 / (1 - p) times its input's change.
        if not options["training"]:
            return 1.0
        return 0.0 if p >= 1 else 1.0 / (1.0 - p)
    if fn in SELF_NORMALIZING:
        options = {"weight": None, "eps": 1e-5, **_named(fn, SELF_NORMALIZING[fn], args, kwargs)}
        return self_normalizing_constant(options["weight"], float(options["eps"]))
    cls, names = FORMS[fn]
    options = _named(fn, names, args, kwargs)
    dtype = options.get("dtype")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise UnsupportedLayerError(f"{getattr(fn, '__name__', fn)}: dtype={dtype} is not a floating dtype")
    if options.get("return_indices"):
        raise UnsupportedLayerError(f"{getattr(fn, '__name__', fn)}: return_indices=True returns indices, "
                                    "which have no Lipschitz bound")
    try:
        layer = cls(**{k: v for k, v in options.items() if k not in _NOT_MAP})
    except TypeError as err:
        raise UnsupportedLayerError(f"{getattr(fn, '__name__', fn)}: {err}") from None
    return layer_bound(layer, tuple(sample_shape), "gram").bound
