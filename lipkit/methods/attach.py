"""Constraint attachers for method entries: each constrains a model in place and returns the
hooks to run after every optimizer.step() (registry.Attach)."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

from ..constraints import constrain, project_
from ..layers import sort_activations_
from ..norms.operators import CONV, CONV_TRANSPOSE
from .registry import Attach, StepHook

Options = Callable[[Mapping[str, Any]], dict[str, Any]]


def lipkit_constraint(method: str, mode: str = "reparam", options: Options = lambda hp: {}) -> Attach:
    """lk.constrain(model, method, mode=mode, **options(hp)); project mode adds lk.project_
    as an after-step hook (constrain also projects once at registration)."""
    def attach(model: nn.Module, hp: Mapping[str, Any]) -> tuple[StepHook, ...]:
        constrain(model, method, mode=mode, **options(hp))
        return (project_,) if mode == "project" else ()
    return attach


@torch.no_grad()
def clamp_biases_(model: nn.Module, c: float) -> None:
    """WGAN clips ALL critic parameters; constrain("clip") covers weights only."""
    for layer in model.modules():
        bias = getattr(layer, "bias", None)
        if isinstance(bias, nn.Parameter):
            bias.clamp_(-c, c)


def wgan_clip(model: nn.Module, hp: Mapping[str, Any]) -> tuple[StepHook, ...]:
    """WGAN (Arjovsky et al. 2017): every weight AND bias clamped to [-c, c] after each step."""
    c = hp["clip_c"]
    constrain(model, "clip", mode="project", c=c)
    clamp_biases_(model, c)
    return project_, lambda m: clamp_biases_(m, c)


def torch_sn(model: nn.Module, hp: Mapping[str, Any]) -> tuple[StepHook, ...]:
    """torch.nn.utils.parametrizations.spectral_norm on every Conv2d / Linear: PyTorch's own SN
    (power iteration at every training forward), kept to measure lipkit's against it."""
    for layer in list(model.modules()):
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            torch_spectral_norm(layer, n_power_iterations=hp.get("sn_iter", 1))
    return ()



# How lipnet constrains a conv (hp["lipnet_conv"]): "aol" is certified 1-Lipschitz with no
# state but can be loose (a trained FM classifier's AOL net: certified 0.73, empirical 0.49);
# "sn-conv" holds each conv's TRUE operator norm at 1 (power iteration, within 1e-3).
LIPNET_CONVS = ("aol", "sn-conv")


def check_lipnet_conv(value: Any) -> None:
    if value not in LIPNET_CONVS:
        raise ValueError(f"lipnet_conv={value!r} is not allowed; choose one of {LIPNET_CONVS}")


def lipnet(model: nn.Module, hp: Mapping[str, Any]) -> tuple[StepHook, ...]:
    """A gradient-norm-preserving network from any ReLU critic (Anil, Lucas & Grosse 2019):
    activations -> GroupSort(group_size), Linear weights -> Bjorck-orthonormal, convs -> AOL
    or true-norm SN (lipnet_conv). All reparametrizations."""
    conv_kind = hp["lipnet_conv"]
    check_lipnet_conv(conv_kind)
    sort_activations_(model, hp["group_size"])
    constrain(model, "bjorck", where=nn.Linear, iters=hp["bjorck_iters"], order=hp["bjorck_order"])
    if any(isinstance(m, (*CONV, *CONV_TRANSPOSE)) for m in model.modules()):
        if conv_kind == "aol":
            constrain(model, "aol", where=(*CONV, *CONV_TRANSPOSE))
        else:
            constrain(model, "spectral", where=(*CONV, *CONV_TRANSPOSE), operator="conv", n_iter=hp["sn_iter"])
    return ()
