"""Gradient penalties for supervised models: the seed's open question (section 7).

input_gradient_penalty  penalizes the slope of the model in its INPUT, per sample: of the
                        loss (double backpropagation, Drucker & LeCun 1992) or of the logits
                        (Jacobian regularization, Hoffman et al. 2019) - a local Lipschitz
                        penalty at the training points.
weight_gradient_penalty penalizes the gradient of the loss in the WEIGHTS (arXiv 2202.03599,
                        the reader's comment on the seed), which favours flat minima.
Both differentiate with create_graph=True, so the penalty itself can be backpropagated.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..autocast import autocast_enabled
from .norms import per_sample_sq_norm, safe_sqrt

KINDS = ("loss", "logits")


def input_gradient_penalty(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor | None = None,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    kind: str = "loss",
    n_proj: int | None = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """mean over the batch of a per-sample squared input-gradient norm.

    kind="loss":   ||d loss_i / d x_i||^2, loss_i the loss of sample i alone. loss_fn(out, y)
                   must return PER-SAMPLE losses, shape (B,) (reduction="none"): the gradient
                   of a batch mean would be 1/B too small, and a batch-size-dependent
                   penalty. Default: cross-entropy for integer y, else squared error
                   averaged over each sample's outputs.
    kind="logits": ||J_i||_F^2, J_i = d model(x)_i / d x_i (labels unused), estimated
                   without bias by n_proj Rademacher projections: E_r ||J^T r||^2 =
                   ||J||_F^2. n_proj=None computes it exactly (one backward per output).
    x is detached (the penalty trains the model, not whatever produced x). The model must
    treat samples independently (no BatchNorm in train mode).
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not allowed; choose one of {KINDS}")
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty floating-point batch (B, ...), got {_describe(x)}")
    if not torch.is_grad_enabled():
        raise RuntimeError("input_gradient_penalty needs autograd; it is disabled here (torch.no_grad())")
    # Under autocast (--precision bf16 / fp16) the penalty is computed in fp32, as the GAN
    # gradient penalty is: its input gradient and the double backward through it would
    # otherwise run in half precision, and the penalty would change with the precision.
    device_type = x.device.type
    if autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            return input_gradient_penalty(model, x.float() if x.dtype in (torch.float16, torch.bfloat16) else x,
                                          y, loss_fn=loss_fn, kind=kind, n_proj=n_proj, generator=generator)
    x = x.detach().clone().requires_grad_(True)
    batch = x.shape[0]
    if kind == "loss":
        if loss_fn is not None and not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable(output, y) -> per-sample losses, got {loss_fn!r}")
        if y is None:
            raise ValueError("kind='loss' needs the targets y (or use kind='logits', which needs none)")
        losses = (loss_fn or _default_loss(y))(model(x), y)
        if not isinstance(losses, Tensor) or tuple(losses.shape) != (batch,):
            raise ValueError(
                f"loss_fn returned {_describe(losses)}; it must return one loss per sample, shape "
                f"({batch},): use reduction='none' and reduce each sample's other dims, e.g. "
                "lambda out, y: F.mse_loss(out, y, reduction='none').flatten(1).mean(1)"
            )
        return per_sample_sq_norm(_grad(losses.sum(), x)).mean()
    if loss_fn is not None:
        raise ValueError("loss_fn is only used with kind='loss'; kind='logits' differentiates the outputs")
    return _jacobian_penalty(model, x, n_proj, generator)


def _jacobian_penalty(model: Callable[[Tensor], Tensor], x: Tensor, n_proj: int | None,
                      generator: torch.Generator | None) -> Tensor:
    """kind="logits": mean over the batch of ||J_i||_F^2 (x: a leaf that requires grad)."""
    if n_proj is not None and (isinstance(n_proj, bool) or not isinstance(n_proj, int) or n_proj < 1):
        raise ValueError(f"n_proj must be None (exact) or an int >= 1, got {n_proj!r}")
    batch = x.shape[0]
    out = model(x)
    if not isinstance(out, Tensor) or out.dim() < 1 or out.shape[0] != batch:
        raise ValueError(f"the model returned {_describe(out)} for a batch of {batch}: expected ({batch}, ...)")
    out = out.reshape(batch, -1)
    total = torch.zeros(batch, dtype=x.dtype, device=x.device)
    if n_proj is None:  # exact: one row of every J_i per backward
        for k in range(out.shape[1]):
            total = total + per_sample_sq_norm(_grad(out[:, k].sum(), x))
        return total.mean()
    for _ in range(n_proj):
        gen_device = generator.device if generator is not None else out.device
        signs = torch.randint(0, 2, out.shape, generator=generator, device=gen_device)
        r = (2 * signs - 1).to(device=out.device, dtype=out.dtype)
        total = total + per_sample_sq_norm(_grad((out * r).sum(), x))
    return (total / n_proj).mean()


def weight_gradient_penalty(
    model: nn.Module | Iterable[Tensor], loss: Tensor, *, squared: bool = True
) -> Tensor:
    """||d loss / d params||^2 (squared=False: ||.||, the form of arXiv 2202.03599).

    model: a module (its parameters that require grad) or an iterable of tensors.
    loss: the scalar loss, still attached to its graph. The gradient is taken with
    create_graph=True, so `(loss + lam * penalty).backward()` works and differentiates the
    penalty exactly (the paper approximates that Hessian-vector product by a finite
    difference; this is the exact double backward). The norm is safe at zero.
    """
    params = [p for p in model.parameters() if p.requires_grad] if isinstance(model, nn.Module) else list(model)
    if not params or not all(isinstance(p, Tensor) and p.requires_grad for p in params):
        raise ValueError("weight_gradient_penalty needs parameters that require grad (none given, or some are frozen)")
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError(f"loss must be a scalar tensor, got {_describe(loss)}")
    if not loss.requires_grad:
        raise ValueError("loss does not require grad: compute it from the model with autograd enabled")
    if not isinstance(squared, bool):
        raise ValueError(f"squared must be True or False, got {squared!r}")
    grads = torch.autograd.grad(loss.reshape(()), params, create_graph=True, allow_unused=True)
    sq = torch.stack([g.pow(2).sum() for g in grads if g is not None]).sum() if any(
        g is not None for g in grads) else loss.new_zeros(())
    return sq if squared else safe_sqrt(sq)


def _grad(scalar: Tensor, x: Tensor) -> Tensor:
    """d scalar / d x with create_graph=True; zero where scalar does not depend on x."""
    if not scalar.requires_grad:
        return torch.zeros_like(x)
    (g,) = torch.autograd.grad(scalar, x, create_graph=True, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


def _default_loss(y: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """Per-sample cross-entropy for class labels, per-sample mean squared error otherwise."""
    if not y.is_floating_point():
        return lambda out, t: F.cross_entropy(out, t, reduction="none")
    return lambda out, t: F.mse_loss(out, t, reduction="none").reshape(out.shape[0], -1).mean(1)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"a {type(value).__name__}"
