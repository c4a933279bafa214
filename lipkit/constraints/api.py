"""Attach, apply and remove constraints on a whole model: constrain, project_, export, unconstrain.

A layer's constraint lives in one of two places, and nowhere else:
- mode="reparam": layer.parametrizations.weight[0] (torch.nn.utils.parametrize: the
  weight the layer reads is constraint(raw), recomputed at every read, so gradients flow
  through it);
- mode="project": layer.lipkit_projections["weight"] (a ModuleDict, so its state is in
  the layer's state_dict); project_(model) writes constraint(raw) into raw after a step.
Constraints that need the layer's input (operator="conv") or buffers (BatchNorm) get
them from one forward pre-hook, `_observe_inputs`, a module-level function so that
deepcopy and pickling of the model keep working.
"""
from __future__ import annotations

import copy
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..overrides import overridden_base
from ..where import Where, select
from .base import Constraint, check_finite
from .options import WEIGHT_LAYERS, build_constraint, resolve_options, supported_layers
from .spectral_batch import add_refresh_hook, remove_refresh_hook

PROJECTIONS = "lipkit_projections"  # attribute holding project-mode constraints on a layer
KEEP = ("raw", "constrained")


def constrain(
    model: nn.Module, method: str, *, where: Where = None, mode: str = "reparam", **options: Any
) -> nn.Module:
    """Constrain every supported layer of `model` in place; returns `model`.

    method: "spectral" (n_iter=1, bound=1.0, operator="reshape"|"conv", soft=False,
            certified=False, gram_iter=6, batchnorm=None|"lipschitz"|"seed",
            input_shape=None), "clip" (c=0.01), "frobenius" (max_norm=1.0), "bjorck"
            (Linear only: orthonormal, iters=20, order=2, bound=1.0) or "aol" (Linear /
            Conv / ConvTranspose: certified norm <= bound, bound=1.0); see
            options.DEFAULTS for what each option means.
    where:  which layers, among the Linear/Conv*/ConvTranspose* (and BatchNorm with
            batchnorm=...) ones (lipkit/where.py, the same selector as the weight
            penalties'): None (all), a type or tuple of types, a callable
            (qualified_name, module) -> bool, or fnmatch pattern(s) on qualified names
            ("critic.*", ["0", "2"]). A pattern or a selection matching no layer is an error.
    mode:   "reparam" (the map runs inside every forward: gradients see it) or "project"
            (lk.project_(model) applies it to the raw weight after optimizer.step();
            it is also applied once at registration, except for operator="conv" before
            the input shape is known).
    A layer that is already constrained is an error: call lk.unconstrain first (so that
    two constraints never silently stack). Nothing is attached unless every chosen layer
    can be constrained.

    Cost (method "spectral"): the top singular pair is refreshed once per weight UPDATE
    (when the raw weight's version changes, in training mode): the exact pair of a reshaped
    weight with a side <= 128, else a Krylov space of depth n_iter + 1; for operator="conv"
    the conv symbol's top modes and a Krylov space of depth n_iter + 2 (constraints/conv.py,
    spectral.py: one power step let the bound be exceeded, issue 11). Every forward only
    recomputes sigma from the stored vectors, differentiably. An eval read of a weight
    changed since the last refresh (export right after a step) computes a pair of its own,
    cached per weight value, without touching the stored vectors.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    resolved = resolve_options(method, mode, options)
    kinds = supported_layers(method, resolved)
    candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds) and _has_weight(m)]
    hint = ""
    if method == "spectral" and resolved["batchnorm"] is None:
        hint = " (BatchNorm layers only with batchnorm='lipschitz' or 'seed')"
    chosen = select(candidates, where, f"layers that method {method!r} constrains{hint}")
    _check_input_shape_names(resolved, chosen)
    for name, layer in chosen:  # refuse before changing anything: all or nothing
        _check_unconstrained(name or "<root>", layer)
        _check_real_weight(name or "<root>", layer)
        _check_own_forward(name or "<root>", layer, method, resolved)
    built = [(layer, build_constraint(method, name, layer, resolved)) for name, layer in chosen]
    for layer, constraint in built:
        _attach(layer, constraint, mode)
    if method == "spectral" and mode == "reparam":
        add_refresh_hook(model)  # all reshape-SN pairs of one forward in one batch (spectral_batch.py)
    return model


@torch.no_grad()
def project_(model: nn.Module) -> nn.Module:
    """Apply every projection-mode constraint of `model` to its raw weights, in place.

    Call after each optimizer.step() (the WGAN recipe for clipping; the Keras-style
    constraint otherwise). Reparam-mode constraints are untouched (they need nothing).
    """
    for layer in model.modules():
        projections = layer._modules.get(PROJECTIONS)
        if projections is None:
            continue
        for tensor_name, constraint in projections.items():
            constraint.observe(layer, None)
            raw = getattr(layer, tensor_name)
            raw.copy_(constraint.projected(raw))
    return model


def export(model: nn.Module) -> nn.Module:
    """A plain deep copy of `model` with the constrained weights baked in.

    No parametrizations, hooks or lipkit buffers remain; its outputs equal the constrained
    model's in eval mode (each weight is computed in eval mode: no state changes). The
    original model is untouched.
    """
    plain = copy.deepcopy(model)
    unconstrain(plain, keep="constrained")
    return plain


def unconstrain(model: nn.Module, keep: str = "raw") -> nn.Module:
    """Remove every lipkit constraint from `model` in place; returns `model`.

    keep="raw" (default): each weight becomes a plain nn.Parameter holding the RAW
    (unconstrained) weight, so constrain(...) can be re-applied and training resumes from
    the same parameters. keep="constrained": it holds the constrained weight instead (the
    eval-mode value; what export bakes in). For project-mode constraints the raw weight
    is what the layer uses, so both give the same. The Parameter objects stay the same,
    so an optimizer built on the model keeps working.
    """
    if keep not in KEEP:
        raise ValueError(f"keep={keep!r} is not one of {KEEP}")
    for layer in list(model.modules()):
        for tensor_name, constraint, mode in list(_layer_constraints(layer)):
            if mode == "reparam":
                constraint.observe(layer, None)
                constraint.eval()  # evaluating the map must not change its state
                _remove_parametrization(layer, tensor_name, keep == "constrained")
            else:
                del layer._modules[PROJECTIONS][tensor_name]
        if PROJECTIONS in layer._modules and not len(layer._modules[PROJECTIONS]):
            delattr(layer, PROJECTIONS)
        _remove_hook(layer)
    remove_refresh_hook(model)
    return model


def constraints_of(model: nn.Module) -> Iterator[tuple[str, str, str, Constraint]]:
    """(layer qualified name, tensor name, mode, constraint) for every lipkit constraint."""
    for name, layer in model.named_modules():
        for tensor_name, constraint, mode in _layer_constraints(layer):
            yield name, tensor_name, mode, constraint


# ---------------------------------------------------------------------------- internals


def _layer_constraints(layer: nn.Module) -> Iterator[tuple[str, Constraint, str]]:
    """The lipkit constraints attached directly to `layer`."""
    if parametrize.is_parametrized(layer):
        for tensor_name, plist in layer.parametrizations.items():
            for p in plist:
                if isinstance(p, Constraint):
                    yield tensor_name, p, "reparam"
    projections = layer._modules.get(PROJECTIONS)
    if projections is not None:
        for tensor_name, p in projections.items():
            yield tensor_name, p, "project"


def _observe_inputs(layer: nn.Module, args: tuple) -> None:
    """Forward pre-hook: hand the layer's input to the constraints that need it (the conv
    input shape), before the layer reads its weight."""
    for _, constraint, _ in _layer_constraints(layer):
        if constraint.observes_layer:
            constraint.observe(layer, args)


def _remove_parametrization(layer: nn.Module, tensor_name: str, constrained: bool) -> None:
    """Undo register_parametrization without touching the layer's class object.

    torch's remove_parametrizations deletes the property from the injected
    Parametrized<Layer> class, which a deepcopy SHARES with the original: removing it from
    an exported copy (or from an EMA twin) would break the other model. When lipkit's
    constraint is the layer's only parametrization, the layer is restored here by hand;
    otherwise torch's path is taken (stacked foreign parametrizations: caveat above).
    """
    plists = layer.parametrizations
    plist = plists[tensor_name]
    if len(plists) != 1 or len(plist) != 1 or not plist.is_tensor:
        parametrize.remove_parametrizations(layer, tensor_name, leave_parametrized=constrained)
        return
    original = plist.original
    if constrained:
        with torch.no_grad():
            original.copy_(getattr(layer, tensor_name))  # same Parameter object, new value
    del layer._modules["parametrizations"]
    layer.__class__ = type(layer).__bases__[0]  # Parametrized<Layer> -> <Layer>
    if isinstance(original, nn.Parameter):
        layer.register_parameter(tensor_name, original)
    else:
        layer.register_buffer(tensor_name, original)


def _remove_hook(layer: nn.Module) -> None:
    # Found by identity rather than through a stored handle: a deepcopied model (export)
    # has the same hook under the same key, and no handle of its own.
    for key, hook in list(layer._forward_pre_hooks.items()):
        if hook is _observe_inputs:
            del layer._forward_pre_hooks[key]
            layer._forward_pre_hooks_with_kwargs.pop(key, None)


def _attach(layer: nn.Module, constraint: Constraint, mode: str) -> None:
    if mode == "reparam":
        # unsafe skips parametrize's trial evaluation, impossible before a conv's input
        # shape is known; the map keeps shape and dtype by construction.
        parametrize.register_parametrization(layer, "weight", constraint, unsafe=not constraint.ready)
    else:
        if PROJECTIONS not in layer._modules:
            layer.add_module(PROJECTIONS, nn.ModuleDict())
        layer._modules[PROJECTIONS]["weight"] = constraint
        if constraint.ready:  # constrained from step 0, like the reparametrization
            with torch.no_grad():
                layer.weight.copy_(constraint.projected(layer.weight))
    if constraint.observes_layer and not any(
        h is _observe_inputs for h in layer._forward_pre_hooks.values()
    ):
        layer.register_forward_pre_hook(_observe_inputs)


def _check_real_weight(name: str, layer: nn.Module) -> None:
    # An integer weight would be rounded back by every projection (all zeros after a clip or a
    # normalization); a complex one has no ordering and its norm maps are not these.
    dtype = layer.weight.dtype
    if not dtype.is_floating_point:
        raise ValueError(f"layer {name!r} ({type(layer).__name__}) has a {dtype} weight; lk.constrain needs real "
                         "floating-point weights (float16, bfloat16, float32 or float64)")
    check_finite(layer.weight.detach(), f"layer {name!r} ({type(layer).__name__})'s weight",
                 "constraining it would give NaN outputs: reinitialize or reload the layer first")


def _check_own_forward(name: str, layer: nn.Module, method: str, options: dict[str, Any]) -> None:
    # AOL, Bjorck and operator="conv" promise a bound on the map the layer's forward computes,
    # and compute it as nn.Linear's / nn.ConvNd's map: a subclass that overrides forward computes
    # another (lipkit/overrides.py), which a conv-SN layer was seen to take to 3.99x its bound.
    if not (method in ("aol", "bjorck") or (method == "spectral" and options.get("operator") == "conv")):
        return
    base = overridden_base(type(layer), WEIGHT_LAYERS)
    if base is not None:
        raise ValueError(
            f"layer {name!r} ({type(layer).__name__}) overrides {base.__name__}.forward, so method {method!r} cannot "
            f"bound its map (it bounds {base.__name__}'s): leave it out with where=..., or constrain the plain "
            f"{base.__name__} layers it is built from")


def _check_unconstrained(name: str, layer: nn.Module) -> None:
    for tensor_name, constraint, mode in _layer_constraints(layer):
        raise ValueError(
            f"layer {name!r} ({type(layer).__name__}) already has a lipkit {constraint.method!r} "
            f"constraint on {tensor_name!r} (mode={mode!r}); constraints do not stack: call "
            "lk.unconstrain(model) first (or lk.unconstrain(that_layer)), then constrain again"
        )
    if parametrize.is_parametrized(layer, "weight"):
        raise ValueError(
            f"layer {name!r} already has a parametrization on 'weight' "
            f"({[type(p).__name__ for p in layer.parametrizations.weight]}), e.g. torch's "
            "spectral_norm; remove it (torch.nn.utils.parametrize.remove_parametrizations) "
            "before constraining with lipkit"
        )


def _has_weight(layer: nn.Module) -> bool:
    # BatchNorm(affine=False) has no gamma to constrain.
    return isinstance(getattr(layer, "weight", None), torch.Tensor)


def _check_input_shape_names(options: dict[str, Any], chosen: list[tuple[str, nn.Module]]) -> None:
    shapes = options.get("input_shape")
    if isinstance(shapes, dict):
        unknown = sorted(set(shapes) - {n for n, _ in chosen})
        if unknown:
            raise ValueError(
                f"input_shape names {unknown} are not among the constrained layers "
                f"{[n for n, _ in chosen]}"
            )

