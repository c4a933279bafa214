"""constrain()'s options: defaults per method, validation, and the constraint each layer gets.

Every option is checked when given, and an error names the bad value and what is
allowed (an option of another method is an error too: a typo must not be ignored).
"""
from __future__ import annotations

import math
from typing import Any

import torch.nn as nn

from ..norms.operators import BATCHNORM, CONV, CONV_TRANSPOSE
from .aol import AOLRescaling
from .base import Constraint
from .batchnorm import CONVENTIONS, BatchNormScale
from .bjorck import BjorckOrthonormalization
from .clip import WeightClip
from .conv import ConvSpectralNormalization
from .frobenius import FrobeniusClip
from .spectral import GRAM_ITER, SpectralNormalization

MODES = ("reparam", "project")
OPERATORS = ("reshape", "conv")
WEIGHT_LAYERS = (nn.Linear, *CONV, *CONV_TRANSPOSE)

# Defaults, one per line; every option a method accepts is listed here.
DEFAULTS: dict[str, dict[str, Any]] = {
    "spectral": {
        "n_iter": 1,  # refresh effort per update: Krylov depth n_iter + 1 (reshape, side > 128) / + 2 (conv)
        "bound": 1.0,  # target sigma of every layer
        "operator": "reshape",  # "reshape": sigma of W as a matrix (SN-GAN); "conv": true conv norm
        "soft": False,  # True: only shrink (sigma <= bound) instead of sigma == bound
        "certified": False,  # True: divide by the Gram upper bound (sigma <= bound guaranteed)
        "gram_iter": GRAM_ITER,  # Gram squarings when certified
        "batchnorm": None,  # None: leave BatchNorm alone; "lipschitz" | "seed": constrain gamma
        "input_shape": None,  # operator="conv": (C, H, W) or {layer name: shape}; else first forward
    },
    "clip": {
        "c": 0.01,  # clamp every weight entry to [-c, c] (WGAN)
    },
    "frobenius": {
        "max_norm": 1.0,  # rescale W so ||W||_F <= max_norm
    },
    "bjorck": {  # Linear only: all singular values -> bound (constraints/bjorck.py)
        "iters": 20,  # Bjorck iterations (measured: 20 at order 2 converge up to condition ~4500)
        "order": 2,  # Taylor order of each step: 1 (Anil et al.'s W (3/2 I - 1/2 W^T W)), 2 or 3
        "bound": 1.0,  # the common singular value
    },
    "aol": {  # Linear, Conv, ConvTranspose: certified ||layer|| <= bound (constraints/aol.py)
        "bound": 1.0,
    },
}
BJORCK_ORDERS = (1, 2, 3)


def resolve_options(method: str, mode: str, options: dict[str, Any]) -> dict[str, Any]:
    """Defaults merged with `options`, every value validated."""
    if method not in DEFAULTS:
        raise ValueError(f"unknown method {method!r}; allowed: {tuple(DEFAULTS)}")
    if mode not in MODES:
        raise ValueError(
            f"unknown mode {mode!r}; allowed: {MODES} (reparam: inside the forward, gradients "
            "flow through the map; project: applied to the raw weight by lk.project_)"
        )
    allowed = DEFAULTS[method]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"option(s) {unknown} do not belong to method {method!r}; its options are "
            f"{sorted(allowed)}"
        )
    resolved = {**allowed, **options}
    for key in ("n_iter", "gram_iter", "iters"):
        if key in resolved:
            _positive_int(key, resolved[key])
    for key in ("bound", "c", "max_norm"):
        if key in resolved:
            _positive_number(key, resolved[key])
    if method == "bjorck":
        check_bjorck_order("order", resolved["order"])
    for key in ("soft", "certified"):
        if key in resolved and not isinstance(resolved[key], bool):
            raise ValueError(f"{key} must be True or False, got {resolved[key]!r}")
    if method == "spectral":
        if resolved["operator"] not in OPERATORS:
            raise ValueError(
                f"unknown operator {resolved['operator']!r}; allowed: {OPERATORS} (reshape: "
                "sigma of the weight as a matrix; conv: the layer's true operator norm)"
            )
        if resolved["batchnorm"] not in (None, *CONVENTIONS):
            raise ValueError(
                f"batchnorm={resolved['batchnorm']!r} is not allowed; use None (leave "
                f"BatchNorm alone) or one of {CONVENTIONS}"
            )
        _check_input_shape(resolved["input_shape"])
        if resolved["input_shape"] is not None and resolved["operator"] != "conv":
            raise ValueError("input_shape is only used with operator='conv'")
    return resolved


def check_bjorck_order(key: str, value: Any) -> None:
    """The Taylor order of a Bjorck step (also the lipnet configs' bjorck_order)."""
    if isinstance(value, bool) or value not in BJORCK_ORDERS:
        raise ValueError(f"{key} must be one of {BJORCK_ORDERS} (Taylor order of a Bjorck step), got {value!r}")


def _positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be an int >= 1, got {value!r}")


def _positive_number(key: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{key} must be a finite number > 0, got {value!r}")


def _is_shape(value: Any) -> bool:
    return (
        isinstance(value, (tuple, list)) and len(value) > 0
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in value)
    )


def _check_input_shape(value: Any) -> None:
    if value is None or _is_shape(value):
        return
    if isinstance(value, dict) and all(isinstance(k, str) and _is_shape(v) for k, v in value.items()):
        return
    raise ValueError(
        f"input_shape must be one sample's shape such as (C, H, W) (no batch dim), or a dict "
        f"{{layer name: shape}}, got {value!r}"
    )


def supported_layers(method: str, options: dict[str, Any]) -> tuple[type, ...]:
    """Layer types the method constrains with these options."""
    if method == "spectral" and options.get("batchnorm") is not None:
        return (*WEIGHT_LAYERS, *BATCHNORM)
    return WEIGHT_LAYERS


def build_constraint(method: str, name: str, layer: nn.Module, options: dict[str, Any]) -> Constraint:
    """The constraint module for `layer.weight` (`name`: the layer's qualified name)."""
    if method == "clip":
        return WeightClip(options["c"])
    if method == "frobenius":
        return FrobeniusClip(options["max_norm"])
    if method == "aol":
        return AOLRescaling(layer, bound=options["bound"])
    if method == "bjorck":
        if not isinstance(layer, nn.Linear):
            raise ValueError(
                f"method 'bjorck' orthonormalizes 2-D weights (Linear); layer {name or '<root>'!r} "
                f"({type(layer).__name__}) has a {layer.weight.dim()}-D weight, and an orthonormal reshaped "
                "kernel does not make a conv 1-Lipschitz: use 'aol' for convs (certified), or where=nn.Linear")
        return BjorckOrthonormalization(iters=options["iters"], order=options["order"], bound=options["bound"])
    bound, soft = options["bound"], options["soft"]
    if isinstance(layer, BATCHNORM):
        return BatchNormScale(layer, convention=options["batchnorm"], bound=bound, soft=soft)
    common = dict(n_iter=options["n_iter"], bound=bound, soft=soft,
                  certified=options["certified"], gram_iter=options["gram_iter"])
    if options["operator"] == "conv" and isinstance(layer, (*CONV, *CONV_TRANSPOSE)):
        shape = options["input_shape"]
        if isinstance(shape, dict):
            shape = shape.get(name)
        return ConvSpectralNormalization(layer, input_shape=shape, **common)
    # A Linear layer's true operator IS its matrix: operator="conv" changes nothing there.
    dim = 1 if isinstance(layer, CONV_TRANSPOSE) else 0
    return SpectralNormalization(layer.weight, dim=dim, **common)
