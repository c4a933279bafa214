"""Critic presets: each is (constraint via lk.constrain, penalties list of (weight, penalty)),
with the published optimizer settings (ANCHORS.md "Published results").

| preset            | constraint                         | penalty                   | optimizer (images)       | n_critic |
| clip              | clip c=0.01, project, + biases    | -                         | RMSProp 5e-5             | 5 (100 warm-up) |
| frobenius         | ||W||_F <= 1, project              | -                         | Adam 1e-4 (0, 0.9)       | 5 |
| frobenius-penalty | -                                  | 10 relu(||W||_F - 1)^2    | Adam 1e-4 (0, 0.9)       | 5 |
| gp / gp1          | -                                  | 10 GP (gp1: one-sided)    | Adam 1e-4 (0, 0.9)       | 5 |
| sn / sn-conv      | spectral reparam (reshape / conv)  | -                         | Adam 2e-4 (0, 0.9)       | 5 |
| sn-project        | spectral, project (Keras-style)    | -                         | Adam 2e-4 (0, 0.9)       | 5 |
| sn+gp             | spectral reparam                   | 10 GP                     | Adam 2e-4 (0, 0.9)       | 5 |
| none              | -                                  | -                         | Adam 1e-4 (0, 0.9)       | 5 |
Toy 2-D data follow the WGAN-GP toy code instead: Adam betas (0.5, 0.9), GP lambda 0.1.
SN-GAN's n_critic 5 with betas (0, 0.9) is the paper's ResNet setting, which pairs with a
Wasserstein loss; its n_critic 1 settings are for the hinge / non-saturating losses.
sn-project is the seed's trap (SEED_NOTES section 6), kept to measure it: the same
normalization as sn, but applied to the raw weight after each step, so the gradients are
those of the unnormalized function at the current weight.
Every value is a config field, so the CLI overrides any of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
from torch import Tensor

from ..constraints import constrain, project_
from ..penalties import frobenius_penalty, gradient_penalty

CRITICS = ("clip", "frobenius", "frobenius-penalty", "gp", "gp1", "sn", "sn-conv", "sn+gp", "sn-project",
           "none")
OPTIMIZERS = ("adam", "rmsprop")
GP_PRESETS = ("gp", "gp1", "sn+gp")

# Published defaults per preset (images); toy data override betas and gp_lambda below.
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "clip": {"optimizer": "rmsprop", "lr": 5e-5, "n_critic": 5, "warmup_n_critic": 100, "clip_c": 0.01},
    "frobenius": {"optimizer": "adam", "lr": 1e-4, "betas": (0.0, 0.9), "n_critic": 5, "max_norm": 1.0},
    "frobenius-penalty": {"optimizer": "adam", "lr": 1e-4, "betas": (0.0, 0.9), "n_critic": 5,
                          "max_norm": 1.0, "penalty_weight": 10.0},
    "gp": {"optimizer": "adam", "lr": 1e-4, "betas": (0.0, 0.9), "n_critic": 5, "gp_lambda": 10.0},
    "gp1": {"optimizer": "adam", "lr": 1e-4, "betas": (0.0, 0.9), "n_critic": 5, "gp_lambda": 10.0},
    "sn": {"optimizer": "adam", "lr": 2e-4, "betas": (0.0, 0.9), "n_critic": 5, "sn_iter": 1},
    "sn-conv": {"optimizer": "adam", "lr": 2e-4, "betas": (0.0, 0.9), "n_critic": 5, "sn_iter": 1},
    "sn+gp": {"optimizer": "adam", "lr": 2e-4, "betas": (0.0, 0.9), "n_critic": 5, "sn_iter": 1,
              "gp_lambda": 10.0},
    "none": {"optimizer": "adam", "lr": 1e-4, "betas": (0.0, 0.9), "n_critic": 5},
}
PRESET_DEFAULTS["sn-project"] = dict(PRESET_DEFAULTS["sn"])  # same recipe; only where SN acts differs
# Every preset key's value when the preset does not use it (so the resolved config is complete).
UNUSED = {"optimizer": "adam", "lr": 1e-4, "betas": (0.0, 0.9), "n_critic": 5, "warmup_n_critic": 0,
          "clip_c": 0.01, "max_norm": 1.0, "penalty_weight": 10.0, "gp_lambda": 10.0, "sn_iter": 1}
TOY_OVERRIDES = {"betas": (0.5, 0.9), "gp_lambda": 0.1}  # WGAN-GP toy code (gan_toy.py)
WARMUP_STEPS = 25  # WGAN reference code: warm-up critic iterations for the first 25 steps...
WARMUP_PERIOD = 500  # ...and every 500th generator step


def preset_defaults(critic: str, toy: bool) -> dict[str, Any]:
    """The complete hyperparameter set of a preset (toy: 2-D data settings)."""
    if critic not in CRITICS:
        raise ValueError(f"unknown critic preset {critic!r}; allowed: {CRITICS}")
    values = {**UNUSED, **PRESET_DEFAULTS[critic]}
    if toy:
        values.update({k: v for k, v in TOY_OVERRIDES.items() if k != "betas" or values["optimizer"] == "adam"})
    return values


def n_critic_at(step: int, n_critic: int, warmup_n_critic: int) -> int:
    """Critic iterations before generator step `step` (1-based): WGAN's warm-up schedule."""
    if warmup_n_critic and (step <= WARMUP_STEPS or step % WARMUP_PERIOD == 0):
        return warmup_n_critic
    return n_critic


@torch.no_grad()
def clamp_biases_(model: nn.Module, c: float) -> None:
    """WGAN clips ALL critic parameters; constrain("clip") covers weights only."""
    for layer in model.modules():
        bias = getattr(layer, "bias", None)
        if isinstance(bias, nn.Parameter):
            bias.clamp_(-c, c)


Penalty = Callable[[nn.Module, Tensor, Tensor, Tensor | None, torch.Generator], Tensor]


@dataclass
class CriticMethod:
    """A preset applied to one critic: penalties as (weight, penalty(critic, real, fake, labels, gen))
    and `after_step`, run after every critic optimizer.step() (projections, bias clamps)."""

    name: str
    penalties: list[tuple[float, Penalty]]
    after_step: Callable[[nn.Module], None]


def apply_preset(critic: nn.Module, name: str, hp: dict[str, Any], *, conv: bool) -> CriticMethod:
    """Constrain `critic` in place as preset `name` with hyperparameters `hp` (resolved)."""
    if name not in CRITICS:
        raise ValueError(f"unknown critic preset {name!r}; allowed: {CRITICS}")
    penalties: list[tuple[float, Penalty]] = []
    after: list[Callable[[nn.Module], None]] = []
    if name == "clip":
        constrain(critic, "clip", mode="project", c=hp["clip_c"])
        clamp_biases_(critic, hp["clip_c"])
        after += [project_, lambda m: clamp_biases_(m, hp["clip_c"])]
    elif name == "frobenius":
        constrain(critic, "frobenius", mode="project", max_norm=hp["max_norm"])
        after.append(project_)
    elif name == "frobenius-penalty":
        max_norm = hp["max_norm"]
        penalties.append((hp["penalty_weight"], lambda m, r, f, y, g: frobenius_penalty(m, max_norm)))
    elif name in ("sn", "sn-conv", "sn+gp"):
        operator = "conv" if name == "sn-conv" and conv else "reshape"
        constrain(critic, "spectral", n_iter=hp["sn_iter"], operator=operator)
    elif name == "sn-project":
        # constrain(mode="project") already normalizes once at registration (the power
        # iteration warmed up to convergence), so the critic starts at sigma = 1 like sn.
        constrain(critic, "spectral", n_iter=hp["sn_iter"], mode="project")
        after.append(project_)
    if name in GP_PRESETS:
        one_sided = name == "gp1"
        penalties.append((hp["gp_lambda"], lambda m, r, f, y, g: gradient_penalty(
            m, r, f, one_sided=one_sided, labels=y, generator=g)))

    def after_step(model: nn.Module) -> None:
        for fn in after:
            fn(model)

    return CriticMethod(name, penalties, after_step)


def make_optimizer(params: Any, hp: dict[str, Any], lr: float) -> torch.optim.Optimizer:
    if hp["optimizer"] == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    if hp["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(hp["betas"]))
    raise ValueError(f"optimizer={hp['optimizer']!r} is not allowed; choose one of {OPTIMIZERS}")
