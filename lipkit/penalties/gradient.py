"""The WGAN-GP gradient penalty (Gulrajani et al. 2017) and its one-sided form (GP+).

    x_i = eps_i * real_i + (1 - eps_i) * fake_i,     eps_i ~ U[0, 1], ONE per sample
    penalty = mean_i (||grad_x f(x_i)|| - target)^2            (two-sided)
            = mean_i relu(||grad_x f(x_i)|| - target)^2        (one-sided, the seed's GP+)

Each pitfall below is a bug users hit in peers, and each has a test:
- the norm is per SAMPLE, over all of its non-batch dims (channels and pixels together),
  not per pixel and not one norm over the whole batch;
- eps has shape (B, 1, 1, ...): each interpolate lies on the segment real_i -- fake_i;
- the input gradient is taken with create_graph=True, so the penalty trains the critic;
- the norm is safe at a zero gradient (a flat critic gives a finite value and gradient).
The penalty only constrains the critic where it samples: between real and fake points
(at="interpolate"), or on them (at="real" / "fake").
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..autocast import autocast_off
from ..train_mode import BATCH_MIXING, describe, layers_in_train_mode
from .norms import per_sample_norm

AT = ("interpolate", "real", "fake")


def gradient_penalty(
    critic: Callable[..., Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    target: float = 1.0,
    one_sided: bool = False,
    labels: Tensor | None = None,
    at: str = "interpolate",
    generator: torch.Generator | None = None,
    eps: Tensor | None = None,
) -> Tensor:
    """The (one-sided) gradient penalty of `critic`, a scalar to add to the critic loss.

    critic: maps a batch (B, ...) to one score per sample ((B,) or (B, 1)); called as
        critic(x, labels) when labels are given (a conditional critic: real and fake are
        taken to share the labels, as in a conditional WGAN-GP step).
    real, fake: same shape (B, ...). Both are detached: the penalty trains the critic
        only, never the generator that produced `fake`.
    target: the gradient norm aimed at (1 for a 1-Lipschitz critic).
    one_sided: penalize only norms above target (GP+), leaving smaller slopes free.
    at: "interpolate" (WGAN-GP), "real" or "fake": where the gradient is evaluated.
    generator: draws eps (for reproducible interpolates); any device.
    eps: the interpolation weights themselves, shape (B, 1, ...) (a multi-rank job slices
        the global batch's); default: drawn from `generator`.
    The critic must score samples independently (no BatchNorm in train mode): the
    per-sample gradients are read off one backward of the sum of scores.
    """
    _check(real, fake, target, one_sided, at)
    mixing = layers_in_train_mode(critic, BATCH_MIXING)
    if mixing:
        raise ValueError(f"the critic has BatchNorm in train mode ({describe(mixing)}): its scores mix the batch, so "
                         "per-sample input gradients and the gradient penalty are meaningless; remove BatchNorm from "
                         "the critic (WGAN-GP uses LayerNorm or none) or call critic.eval() first")
    real, fake = real.detach(), fake.detach()
    x = real if at == "real" else fake if at == "fake" else _interpolate(real, fake, eps, generator)
    # Under autocast (--precision bf16 / fp16) the penalty is computed in fp32: its input
    # gradient and the double backward through it would otherwise run in half precision
    # (underflow in fp16), and the penalty would change with the precision.
    device_type = x.device.type
    with autocast_off(device_type):
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.clone().requires_grad_(True)
        grad = input_gradient(critic, x, labels)
    excess = per_sample_norm(grad) - target
    if one_sided:
        excess = torch.relu(excess)
    return excess.pow(2).mean()


def _interpolate(real: Tensor, fake: Tensor, eps: Tensor | None, generator: torch.Generator | None) -> Tensor:
    """eps * real + (1 - eps) * fake, one eps ~ U[0, 1] per sample (given, or drawn)."""
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    if eps is None:
        gen_device = generator.device if generator is not None else real.device
        eps = torch.rand(eps_shape, generator=generator, device=gen_device, dtype=real.dtype)
    elif tuple(eps.shape) != eps_shape:
        raise ValueError(f"eps must have shape {eps_shape} (one weight per sample), got {tuple(eps.shape)}")
    eps = eps.to(device=real.device, dtype=real.dtype)
    return eps * real + (1 - eps) * fake


def input_gradient(critic: Callable[..., Tensor], x: Tensor, labels: Tensor | None = None) -> Tensor:
    """d critic(x)_i / d x_i for every sample, with create_graph=True (shape of x).

    x must require grad. A critic that does not depend on x gets a zero gradient (not an
    error): a flat critic has gradient norm 0, which the penalty must see.
    """
    if not torch.is_grad_enabled():
        raise RuntimeError(
            "a gradient penalty needs autograd, but it is disabled here (torch.no_grad() or "
            "inference_mode): compute the penalty inside the training step"
        )
    scores = critic(x) if labels is None else critic(x, labels)
    if not isinstance(scores, Tensor) or scores.numel() != x.shape[0] or (
        scores.dim() > 0 and scores.shape[0] != x.shape[0]
    ):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(
            f"the critic returned {shape} for a batch of {x.shape[0]}: it must return one "
            f"score per sample, shape ({x.shape[0]},) or ({x.shape[0]}, 1)"
        )
    if not scores.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def _check(real: Tensor, fake: Tensor, target: float, one_sided: bool, at: str) -> None:
    """Reject arguments that would silently compute the wrong penalty."""
    for name, t in (("real", real), ("fake", fake)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor (inputs of the critic), got {t.dtype}")
        if t.dim() < 1 or t.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty batch (B, ...), got shape {tuple(t.shape)}")
    if real.shape != fake.shape:
        raise ValueError(
            f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape: "
            "interpolation pairs real_i with fake_i (draw as many fakes as reals)"
        )
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not (
        math.isfinite(target) and target > 0
    ):
        raise ValueError(f"target must be a finite number > 0 (the aimed gradient norm), got {target!r}")
    if not isinstance(one_sided, bool):
        raise ValueError(f"one_sided must be True or False, got {one_sided!r}")
    if at not in AT:
        raise ValueError(f"at={at!r} is not allowed; choose one of {AT}")
