"""WGAN training on lipkit's run skeleton: build, critic_step, generator_step, fit (the config is
gan_config.py, evaluation gan_eval.py, the critic method lipkit.methods).

The critic minimizes E f(fake) - E f(real) + sum_i w_i penalty_i (or, with loss="hinge",
SN-GAN's E relu(1 - f(real)) + E relu(1 + f(fake)) + penalties), under the critic method's
constraint (lipkit/methods); E f(real) - E f(fake) is its W1 estimate, logged every step.
The generator minimizes -E f(G(z)) with either loss (lipkit/losses/critic.py). A conditional
run feeds the SAME labels to the real and the fake batch of a critic step (what a
conditional gradient penalty assumes).

RNG streams, all checkpointed: the data stream (its own generator / epoch seed), `noise`
(z and fake labels), `penalty` (gradient-penalty interpolation), the global torch RNG
(model init only). Evaluation draws from fresh generators seeded by config.seed, so
evaluating never shifts the training streams: a resumed run repeats the same losses.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from .. import data as lkdata
from .. import models
from ..data import get_data
from ..losses.critic import critic_loss
from ..methods import AppliedMethod, Batch, apply_method
from . import compiling, distributed
from .distributed import Shard
from .gan_config import GanConfig, resolve_config
from .gan_eval import GanEvaluator
from .precision import Precision, at_least_fp32
from .presets import make_optimizer, n_critic_at
from .run import run, scalars_to_host

__all__ = ["GanConfig", "GanTask", "critic_step", "critic_update", "fit", "generator_step", "resolve_config"]


def load_data(config: GanConfig) -> tuple[Any, Any, Tensor, Tensor | None]:
    """(train data set, batch stream, held-out real points, their labels); images in [-1, 1]."""
    spec = get_data(config.data)
    if spec.is_toy:
        dataset = spec.make(**({"num_classes": config.classes} if spec.uses_classes else {}))
        batches = lkdata.SampleBatches(dataset, config.batch_size, seed=config.seed)
        held_out, labels = dataset.sample(config.eval_samples, torch.Generator().manual_seed(config.seed + 7919))
        return dataset, batches, held_out, labels
    train = spec.split("train", subset=config.data_subset, seed=config.seed)
    test = spec.split("test")
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


def _backward_step(loss: Tensor, optimizer: torch.optim.Optimizer, precision: Precision | None) -> None:
    optimizer.zero_grad(set_to_none=True)
    if precision is None:
        loss.backward()
        optimizer.step()
    else:
        precision.backward_step(loss, optimizer)


def critic_update(critic: nn.Module, optimizer: torch.optim.Optimizer, method: AppliedMethod, real: Tensor,
                  fake: Tensor, labels: Tensor | None, penalty_rng: torch.Generator,
                  shard: Shard | None = None, precision: Precision | None = None,
                  loss_kind: str = "wgan") -> dict[str, Tensor]:
    """One critic update on a real and a generated batch: the step train-gan takes and the one
    `lipkit bench` and claim (c) time. Statistics stay on the device (no host sync). shard:
    in a multi-rank job, these batches are this rank's rows of the global batch; precision:
    autocast and loss scaling (--precision), None for plain fp32. loss_kind: a name of
    losses.critic.CRITIC_LOSSES (wgan, hinge); either logs E f(real) - E f(fake) as w1_critic."""
    with precision.autocast() if precision is not None else contextlib.nullcontext():
        on_real = at_least_fp32(score(critic, real, labels))
        on_fake = at_least_fp32(score(critic, fake, labels))
        penalty = method.penalty(Batch(real, labels, fake=fake, generator=penalty_rng, shard=shard))
    w1 = on_real.mean() - on_fake.mean()
    loss = critic_loss(loss_kind, on_real, on_fake) + penalty
    _backward_step(loss, optimizer, precision)
    method.after_step(critic)  # projections (clip, frobenius) act AFTER the update
    return {"loss_critic": loss.detach(), "w1_critic": w1.detach(), "penalty": penalty.detach()}


def critic_step(critic: nn.Module, generator: models.Generator, optimizer: torch.optim.Optimizer,
                method: AppliedMethod, real: Tensor, labels: Tensor | None, noise: torch.Generator,
                penalty_rng: torch.Generator, shard: Shard | None = None,
                precision: Precision | None = None, loss_kind: str = "wgan") -> dict[str, Tensor]:
    """One critic update on a real batch; fakes share the real batch's labels. With a shard,
    real and labels are the GLOBAL batch: this rank trains on its rows of it (and of z)."""
    z = torch.randn(real.shape[0], generator.noise_dim, generator=noise).to(real.device)
    if shard is not None:
        real, labels, z = shard.take(real), shard.take(labels), shard.take(z)
    with torch.no_grad(), precision.autocast() if precision is not None else contextlib.nullcontext():
        fake = generator(z, labels)
    return critic_update(critic, optimizer, method, real, fake, labels, penalty_rng, shard, precision, loss_kind)


def generator_step(critic: nn.Module, generator: models.Generator, optimizer: torch.optim.Optimizer,
                   batch_size: int, noise: torch.Generator, device: torch.device,
                   shard: Shard | None = None, precision: Precision | None = None) -> dict[str, Tensor]:
    """One generator update: minimize -E f(G(z)) (labels uniform for a conditional run). With
    a shard, batch_size is global and this rank takes its rows of z and labels."""
    z = torch.randn(batch_size, generator.noise_dim, generator=noise).to(device)
    labels = None
    if generator.conditional:
        labels = torch.randint(0, generator.num_classes, (batch_size,), generator=noise).to(device)
    if shard is not None:
        z, labels = shard.take(z), shard.take(labels)
    critic.requires_grad_(False)  # no critic gradients to compute or to leak into its step
    try:
        with precision.autocast() if precision is not None else contextlib.nullcontext():
            loss = -at_least_fp32(score(critic, generator(z, labels), labels)).mean()
        _backward_step(loss, optimizer, precision)
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
        # a torchrun job: this rank's rows of every global batch, gradients averaged per step
        self.shard = distributed.current_shard()
        distributed.check_divisible("batch_size", config.batch_size)
        generator = distributed.sync_batchnorm_or_refuse(generator, config.device, "--no-g-batch-norm")
        self.critic, self.generator = critic.to(self.device), generator.to(self.device)
        hp = dataclasses.asdict(config)
        self.method = apply_method(self.critic, config.critic, hp, "critic")
        if config.compile:
            compiling.check_compilable(self.method, self.device)
            compiling.compile_models(self.critic, self.generator)
        self.opt_critic = make_optimizer(self.critic.parameters(), hp, config.lr)
        self.opt_generator = make_optimizer(self.generator.parameters(), hp, config.g_lr)
        for optimizer in (self.opt_critic, self.opt_generator):
            distributed.average_gradients_before_step(optimizer)
        distributed.refuse_fp16_ranks(config.precision)
        self.precision_critic = Precision(config.precision, self.device)  # one loss scaler per optimizer
        self.precision_generator = Precision(config.precision, self.device)
        self.noise = torch.Generator().manual_seed(config.seed + 1)
        self.penalty_rng = torch.Generator().manual_seed(config.seed + 2)
        self.evaluator = GanEvaluator(config, self.critic, self.generator, self.dataset, self.held_out,
                                      self.held_out_labels, self.num_classes, self.device)

    def train_step(self, step: int) -> dict[str, float]:
        c = self.config
        stats: dict[str, Tensor] = {}
        for _ in range(n_critic_at(step, c.n_critic, c.warmup_n_critic)):
            real, labels = next(self.batches)
            real = real.to(self.device)
            labels = labels.to(self.device) if c.conditional else None
            stats = critic_step(self.critic, self.generator, self.opt_critic, self.method, real, labels,
                                self.noise, self.penalty_rng, self.shard, self.precision_critic, c.loss)
        stats |= generator_step(self.critic, self.generator, self.opt_generator, c.batch_size, self.noise,
                                self.device, self.shard, self.precision_generator)
        return scalars_to_host(stats)  # one host sync per step, for the NaN guard

    def evaluate(self, step: int, folder: Path) -> dict[str, float]:
        return self.evaluator.evaluate(step, folder)

    def finish(self, folder: Path) -> dict[str, Any]:
        return {"critic_certified_bound": self.evaluator.certified_bound() if self.config.certify else None}

    def state_dict(self) -> dict[str, Any]:
        return {
            "critic": self.critic.state_dict(), "generator": self.generator.state_dict(),
            "opt_critic": self.opt_critic.state_dict(), "opt_generator": self.opt_generator.state_dict(),
            "batches": self.batches.state_dict(), "noise": self.noise.get_state(),
            "penalty_rng": self.penalty_rng.get_state(), "method": self.method.state_dict(),
            "scaler_critic": self.precision_critic.state_dict(),
            "scaler_generator": self.precision_generator.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.generator.load_state_dict(state["generator"])
        self.opt_critic.load_state_dict(state["opt_critic"])
        self.opt_generator.load_state_dict(state["opt_generator"])
        self.batches.load_state_dict(state["batches"])
        self.noise.set_state(state["noise"])
        self.penalty_rng.set_state(state["penalty_rng"])
        self.method.load_state_dict(state.get("method", {}))  # after the critic: terms refer to its weights
        self.precision_critic.load_state_dict(state.get("scaler_critic", {}))
        self.precision_generator.load_state_dict(state.get("scaler_generator", {}))


def fit(config: GanConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train a WGAN as `config` says (None fields resolved first); returns the run summary."""
    return run(resolve_config(config), GanTask, resume=resume)
