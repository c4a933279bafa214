"""GAN-critic hyperparameters of a method: its published values (lipkit/methods/builtin.py),
completed with a value for every key it does not use (so a resolved config is complete),
and the toy-data settings of the WGAN-GP toy code. Plus WGAN's critic warm-up schedule and
the optimizer factory shared by train-gan and `lipkit bench`."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..methods import get_method

OPTIMIZERS = ("adam", "rmsprop")
# Every critic hyperparameter's value when the method does not use it.
UNUSED = {"optimizer": "adam", "lr": 1e-4, "betas": (0.0, 0.9), "n_critic": 5, "warmup_n_critic": 0,
          "clip_c": 0.01, "max_norm": 1.0, "penalty_weight": 10.0, "gp_lambda": 10.0, "sn_iter": 1,
          "group_size": 2, "bjorck_iters": 20, "bjorck_order": 2, "lipnet_conv": "aol"}
PRESET_KEYS = tuple(UNUSED)  # the GanConfig fields a method's critic defaults fill in
TOY_OVERRIDES = {"betas": (0.5, 0.9), "gp_lambda": 0.1}  # WGAN-GP toy code (gan_toy.py)
WARMUP_STEPS = 25  # WGAN reference code: warm-up critic iterations for the first 25 steps...
WARMUP_PERIOD = 500  # ...and every 500th generator step


def preset_defaults(critic: str, toy: bool) -> dict[str, Any]:
    """The complete critic hyperparameter set of method `critic` (toy: 2-D data settings)."""
    method = get_method(critic, "critic")
    unknown = sorted(set(method.critic or {}) - set(UNUSED))
    if unknown:
        raise ValueError(f"method {critic!r} sets critic hyperparameters {unknown} that GanConfig does not have; "
                         f"allowed: {sorted(UNUSED)}")
    values = {**UNUSED, **(method.critic or {})}
    if toy:
        values.update({k: v for k, v in TOY_OVERRIDES.items() if k != "betas" or values["optimizer"] == "adam"})
    return values


def n_critic_at(step: int, n_critic: int, warmup_n_critic: int) -> int:
    """Critic iterations before generator step `step` (1-based): WGAN's warm-up schedule."""
    if warmup_n_critic and (step <= WARMUP_STEPS or step % WARMUP_PERIOD == 0):
        return warmup_n_critic
    return n_critic


def make_optimizer(params: Any, hp: Mapping[str, Any], lr: float) -> torch.optim.Optimizer:
    if hp["optimizer"] == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    if hp["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(hp["betas"]))
    raise ValueError(f"optimizer={hp['optimizer']!r} is not allowed; choose one of {OPTIMIZERS}")
