"""The WGAN run's config: every field a flag of `lipkit train-gan`, None meaning "the critic
method's / data set's published default", filled in by resolve_config (the saved config)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..constraints.options import check_bjorck_order
from ..data import data_names, get_data
from ..losses.critic import check_critic_loss
from ..methods import get_method
from ..methods.attach import check_lipnet_conv
from .presets import PRESET_KEYS, preset_defaults
from .run_config import MAX_DEPTH, RunConfig


@dataclass
class GanConfig(RunConfig):
    """A WGAN run. None means "the critic method's / data set's published default" (resolve_config)."""

    data: str = "gaussians8"  # a registered data set (lipkit.data: gaussians8, rings, digits, ...) or an idx folder
    classes: int = 10  # number of modes of `rings`
    conditional: bool = False  # projection critic + label-conditioned generator
    critic: str = "gp"  # a critic method of the registry (lipkit.methods): sn, gp, clip, ...
    loss: str = "wgan"  # critic loss: wgan (E f(fake) - E f(real)) or hinge (SN-GAN's); generator: -E f(G(z))
    batch_size: int | None = None  # None: 256 on 2-D data (WGAN-GP toy code), 64 on images
    noise_dim: int | None = None  # None: 2 on 2-D data (toy code), 64 on images
    width: int | None = None  # critic width: None: 512 (MLP), 64 (conv, doubled per stage)
    g_width: int | None = None  # generator width; None: same as width
    depth: int = 3  # hidden layers of the MLPs
    g_batch_norm: bool = True  # BatchNorm in the conv generator (never in the critic)
    optimizer: str | None = None  # adam|rmsprop (both nets); None: preset
    lr: float | None = None  # critic learning rate; None: preset
    g_lr: float | None = None  # generator learning rate; None: same as lr
    betas: tuple[float, float] | None = None  # Adam betas; None: preset ((0.5, 0.9) on 2-D data)
    n_critic: int | None = None  # critic steps per generator step; None: preset (5)
    warmup_n_critic: int | None = None  # WGAN: critic steps for steps <= 25 and every 500th (0: off)
    clip_c: float | None = None  # clip: bound on every critic parameter (0.01)
    max_norm: float | None = None  # frobenius / frobenius-penalty: ||W||_F bound (1.0)
    penalty_weight: float | None = None  # frobenius-penalty weight (10)
    gp_lambda: float | None = None  # gradient-penalty weight (10; 0.1 on 2-D data)
    sn_iter: int | None = None  # SN refresh effort per critic update (n_iter of lk.constrain; 1)
    group_size: int | None = None  # lipnet: GroupSort group size replacing each ReLU (2: MaxMin)
    bjorck_iters: int | None = None  # lipnet: Bjorck iterations per Linear weight read (20)
    bjorck_order: int | None = None  # lipnet: Taylor order of each Bjorck step, 1-3 (2)
    lipnet_conv: str | None = None  # lipnet: aol (certified, stateless) | sn-conv (true norm held at 1) (aol)
    data_subset: int | None = None  # images: train on a seeded subset of this many images
    eval_samples: int | None = None  # None: 2500 on 2-D data (GDPP protocol), 1000 on images
    image_metrics: bool = True  # FID/KID/class accuracy (trains and caches the classifier once)
    lower_bound_steps: int = 20  # ascent steps of the critic's empirical Lipschitz lower bound
    certify: bool = True  # certified upper bound of the final critic (unconditional critics)


def resolve_config(config: GanConfig) -> GanConfig:
    """A copy with every None replaced by its default: the complete, saved config."""
    get_method(config.critic, "critic")  # a clear error naming the critic methods
    spec = get_data(config.data)
    if config.conditional and not spec.conditional:
        with_labels = [n for n in data_names() if get_data(n).conditional]
        raise ValueError(f"{config.data} has no classes: --conditional needs one of {', '.join(with_labels)} "
                         "or an idx folder")
    toy = spec.is_toy
    values = preset_defaults(config.critic, toy)
    filled = {k: values[k] if getattr(config, k) is None else getattr(config, k) for k in PRESET_KEYS}
    filled["betas"] = tuple(filled["betas"])
    # Only None means "default": a 0 given on purpose reaches check_values and is refused there.
    defaults = {"batch_size": 256 if toy else 64, "noise_dim": 2 if toy else 64, "width": 512 if toy else 64,
                "eval_samples": 2500 if toy else 1000}
    filled.update({k: default if getattr(config, k) is None else getattr(config, k) for k, default in defaults.items()})
    filled["g_width"] = filled["width"] if config.g_width is None else config.g_width
    filled["g_lr"] = config.g_lr if config.g_lr is not None else filled["lr"]
    resolved = dataclasses.replace(config, **filled)
    check_values(resolved)
    return resolved


def check_values(config: GanConfig) -> None:
    """Every resolved number in its allowed range; the error names the field and the range."""
    minimum = {"classes": 2, "batch_size": 1, "noise_dim": 1, "width": 1, "g_width": 1, "depth": 1,
               "n_critic": 1, "warmup_n_critic": 0, "sn_iter": 1, "eval_samples": 2, "lower_bound_steps": 0,
               "group_size": 1, "bjorck_iters": 0, "bjorck_order": 1}
    for name, low in minimum.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    check_bjorck_order("bjorck_order", config.bjorck_order)
    check_lipnet_conv(config.lipnet_conv)
    check_critic_loss(config.loss)
    if config.depth > MAX_DEPTH:  # built layer by layer in Python: a typo would hang, not fail
        raise ValueError(f"depth must be an int in [1, {MAX_DEPTH}], got {config.depth}")
    for name, positive in (("lr", True), ("g_lr", True), ("clip_c", True), ("max_norm", True),
                           ("penalty_weight", False), ("gp_lambda", False)):
        value = getattr(config, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (positive and value == 0):
            raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    if len(config.betas) != 2 or not all(0 <= b < 1 for b in config.betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {config.betas!r}")
    if config.data_subset is not None and (isinstance(config.data_subset, bool) or config.data_subset < 1):
        raise ValueError(f"data_subset must be None or an int >= 1, got {config.data_subset!r}")
