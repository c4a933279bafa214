"""WGAN training on lipkit's run skeleton: config, build, critic_step, generator_step, fit.

The critic minimizes E f(fake) - E f(real) + sum_i w_i penalty_i, under the preset's
constraint (presets.py); E f(real) - E f(fake) is its W1 estimate, logged every step.
The generator minimizes -E f(G(z)). A conditional run feeds the SAME labels to the real and
the fake batch of a critic step (what a conditional gradient penalty assumes).

RNG streams, all checkpointed: the data stream (its own generator / epoch seed), `noise`
(z and fake labels), `penalty` (gradient-penalty interpolation), the global torch RNG
(model init only). Evaluation draws from fresh generators seeded by config.seed, so
evaluating never shifts the training streams: a resumed run repeats the same losses.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from .. import data as lkdata
from .. import models
from .presets import CRITICS, CriticMethod, apply_preset, make_optimizer, n_critic_at, preset_defaults
from .run import RunConfig, run, scalars_to_host

TOY_DATA = ("gaussians8", "gaussians25", "swissroll", "rings")
IMAGE_DATA = ("digits", "fashion-mnist")
PRESET_KEYS = ("optimizer", "lr", "betas", "n_critic", "warmup_n_critic", "clip_c", "max_norm",
               "penalty_weight", "gp_lambda", "sn_iter")


@dataclass
class GanConfig(RunConfig):
    """A WGAN run. None means "the preset's / data set's published default" (resolve_config)."""

    data: str = "gaussians8"  # gaussians8|gaussians25|swissroll|rings|digits|fashion-mnist|idx folder
    classes: int = 10  # number of modes of `rings`
    conditional: bool = False  # projection critic + label-conditioned generator
    critic: str = "gp"  # preset: clip|frobenius|frobenius-penalty|gp|gp1|sn|sn-conv|sn+gp|sn-project|none
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
    sn_iter: int | None = None  # power iterations per critic update for sn presets (1)
    data_subset: int | None = None  # images: train on a seeded subset of this many images
    eval_samples: int | None = None  # None: 2500 on 2-D data (GDPP protocol), 1000 on images
    image_metrics: bool = True  # FID/KID/class accuracy (trains and caches the classifier once)
    lower_bound_steps: int = 20  # ascent steps of the critic's empirical Lipschitz lower bound
    certify: bool = True  # certified upper bound of the final critic (unconditional critics)


def is_toy(name: str) -> bool:
    return name in TOY_DATA


def resolve_config(config: GanConfig) -> GanConfig:
    """A copy with every None replaced by its default: the complete, saved config."""
    if config.critic not in CRITICS:
        raise ValueError(f"critic={config.critic!r} is not a preset; allowed: {CRITICS}")
    if not (is_toy(config.data) or config.data in IMAGE_DATA or Path(config.data).is_dir()):
        raise ValueError(f"data={config.data!r}: expected one of {TOY_DATA + IMAGE_DATA} or a folder "
                         "holding the four MNIST-format idx files")
    if config.conditional and config.data == "swissroll":
        raise ValueError("swissroll has no classes: --conditional needs gaussians8, gaussians25, "
                         "rings or an image set")
    toy = is_toy(config.data)
    values = preset_defaults(config.critic, toy)
    filled = {k: values[k] if getattr(config, k) is None else getattr(config, k) for k in PRESET_KEYS}
    filled["betas"] = tuple(filled["betas"])
    filled.update(batch_size=config.batch_size or (256 if toy else 64),
                  noise_dim=config.noise_dim or (2 if toy else 64),
                  width=config.width or (512 if toy else 64),
                  eval_samples=config.eval_samples or (2500 if toy else 1000))
    filled["g_width"] = config.g_width or filled["width"]
    filled["g_lr"] = config.g_lr if config.g_lr is not None else filled["lr"]
    resolved = dataclasses.replace(config, **filled)
    check_values(resolved)
    return resolved


def check_values(config: GanConfig) -> None:
    """Every resolved number in its allowed range; the error names the field and the range."""
    import math

    minimum = {"classes": 2, "batch_size": 1, "noise_dim": 1, "width": 1, "g_width": 1, "depth": 1,
               "n_critic": 1, "warmup_n_critic": 0, "sn_iter": 1, "eval_samples": 2, "lower_bound_steps": 0}
    for name, low in minimum.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
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


def load_data(config: GanConfig) -> tuple[Any, Any, Tensor, Tensor | None]:
    """(train data set, batch stream, held-out real points, their labels); images in [-1, 1]."""
    if is_toy(config.data):
        dataset = lkdata.make_dataset(config.data, **({"num_classes": config.classes} if config.data == "rings" else {}))
        batches = lkdata.SampleBatches(dataset, config.batch_size, seed=config.seed)
        held_out, labels = dataset.sample(config.eval_samples, torch.Generator().manual_seed(config.seed + 7919))
        return dataset, batches, held_out, labels
    subset = {"subset": config.data_subset, "seed": config.seed}
    if config.data == "digits":
        train, test = lkdata.load_digits("train", **subset), lkdata.load_digits("test")
    else:
        root = None if config.data == "fashion-mnist" else config.data
        name = "fashion-mnist" if root is None else "mnist"
        train = lkdata.load_idx_images(root, "train", name=name, **subset)
        test = lkdata.load_idx_images(root, "test", name=name)
    batches = lkdata.TensorBatches((lkdata.to_gan_range(train.images), train.labels), config.batch_size,
                                   seed=config.seed)
    count = min(config.eval_samples, len(test))
    return train, batches, lkdata.to_gan_range(test.images[:count]), test.labels[:count]


def build_models(config: GanConfig, shape: tuple[int, ...], num_classes: int) -> tuple[nn.Module, models.Generator]:
    k = num_classes if config.conditional else 0
    if len(shape) == 1:
        if k:
            critic = models.projection_mlp_critic(k, shape[0], config.width, config.depth)
        else:
            critic = models.mlp_critic(shape[0], config.width, config.depth)
        return critic, models.mlp_generator(config.noise_dim, shape[0], config.g_width, config.depth, k)
    if k:
        critic = models.projection_conv_critic(k, shape, config.width)
    else:
        critic = models.conv_critic(shape, config.width)
    return critic, models.conv_generator(shape, config.noise_dim, config.g_width, config.g_batch_norm, k)


def score(critic: nn.Module, x: Tensor, labels: Tensor | None) -> Tensor:
    """One critic score per sample, shape (B,)."""
    return (critic(x) if labels is None else critic(x, labels)).view(-1)


def critic_step(critic: nn.Module, generator: models.Generator, optimizer: torch.optim.Optimizer,
                method: CriticMethod, real: Tensor, labels: Tensor | None, noise: torch.Generator,
                penalty_rng: torch.Generator) -> dict[str, Tensor]:
    """One critic update on a real batch; fakes share the real batch's labels."""
    z = torch.randn(real.shape[0], generator.noise_dim, generator=noise).to(real.device)
    with torch.no_grad():
        fake = generator(z, labels)
    w1 = score(critic, real, labels).mean() - score(critic, fake, labels).mean()
    penalty = sum((w * p(critic, real, fake, labels, penalty_rng) for w, p in method.penalties),
                  torch.zeros((), device=real.device))
    loss = -w1 + penalty
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    method.after_step(critic)  # projections (clip, frobenius) act AFTER the update
    return {"loss_critic": loss.detach(), "w1_critic": w1.detach(), "penalty": penalty.detach()}


def generator_step(critic: nn.Module, generator: models.Generator, optimizer: torch.optim.Optimizer,
                   batch_size: int, noise: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    """One generator update: minimize -E f(G(z)) (labels uniform for a conditional run)."""
    z = torch.randn(batch_size, generator.noise_dim, generator=noise).to(device)
    labels = None
    if generator.conditional:
        labels = torch.randint(0, generator.num_classes, (batch_size,), generator=noise).to(device)
    critic.requires_grad_(False)  # no critic gradients to compute or to leak into its step
    try:
        loss = -score(critic, generator(z, labels), labels).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    finally:
        critic.requires_grad_(True)
    return {"loss_generator": loss.detach()}


class GanTask:
    """Models, optimizers, data and RNG streams of one WGAN run, built in one place."""

    def __init__(self, config: GanConfig) -> None:
        self.config = config
        self.device = torch.device(config.device)
        torch.manual_seed(config.seed)  # model init only; every training stream has its own generator
        self.dataset, self.batches, self.held_out, self.held_out_labels = load_data(config)
        shape = tuple(self.held_out.shape[1:])
        self.num_classes = int(getattr(self.dataset, "num_classes", 0) or 0)
        critic, generator = build_models(config, shape, self.num_classes)
        self.critic, self.generator = critic.to(self.device), generator.to(self.device)
        self.method = apply_preset(self.critic, config.critic, dataclasses.asdict(config), conv=len(shape) > 1)
        hp = dataclasses.asdict(config)
        self.opt_critic = make_optimizer(self.critic.parameters(), hp, config.lr)
        self.opt_generator = make_optimizer(self.generator.parameters(), hp, config.g_lr)
        self.noise = torch.Generator().manual_seed(config.seed + 1)
        self.penalty_rng = torch.Generator().manual_seed(config.seed + 2)

    def train_step(self, step: int) -> dict[str, float]:
        c = self.config
        stats: dict[str, Tensor] = {}
        for _ in range(n_critic_at(step, c.n_critic, c.warmup_n_critic)):
            real, labels = next(self.batches)
            real = real.to(self.device)
            labels = labels.to(self.device) if c.conditional else None
            stats = critic_step(self.critic, self.generator, self.opt_critic, self.method, real, labels,
                                self.noise, self.penalty_rng)
        stats |= generator_step(self.critic, self.generator, self.opt_generator, c.batch_size, self.noise,
                                self.device)
        return scalars_to_host(stats)  # one host sync per step, for the NaN guard

    def evaluate(self, step: int, folder: Path) -> dict[str, float]:
        from .gan_eval import evaluate

        return evaluate(self, step, folder)

    def finish(self, folder: Path) -> dict[str, Any]:
        from .gan_eval import certified_bound

        return {"critic_certified_bound": certified_bound(self) if self.config.certify else None}

    def state_dict(self) -> dict[str, Any]:
        return {
            "critic": self.critic.state_dict(), "generator": self.generator.state_dict(),
            "opt_critic": self.opt_critic.state_dict(), "opt_generator": self.opt_generator.state_dict(),
            "batches": self.batches.state_dict(), "noise": self.noise.get_state(),
            "penalty_rng": self.penalty_rng.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.generator.load_state_dict(state["generator"])
        self.opt_critic.load_state_dict(state["opt_critic"])
        self.opt_generator.load_state_dict(state["opt_generator"])
        self.batches.load_state_dict(state["batches"])
        self.noise.set_state(state["noise"])
        self.penalty_rng.set_state(state["penalty_rng"])


def fit(config: GanConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train a WGAN as `config` says (None fields resolved first); returns the run summary."""
    return run(resolve_config(config), GanTask, resume=resume)
