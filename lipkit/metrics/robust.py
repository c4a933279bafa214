"""Robustness of a classifier to L2 input perturbations: empirical (an attack) and certified.

pgd_l2              projected gradient ascent on the logit margin inside the L2 ball of
                    radius eps around each input, also kept in the box [0, 1] (the valid
                    images). A point counts as broken if ANY iterate is misclassified, so the
                    attack can only report less robustness than it found. Starts at the
                    clean point: deterministic, and it draws from no RNG stream, so evaluating
                    mid-training never shifts a run's training randomness.
certified_robust    a prediction is certified at radius eps when it is correct and its logit
                    margin f_y(x) - max_{j != y} f_j(x) exceeds sqrt(2) * L * eps, L a
                    certified L2 Lipschitz bound of the logit map (Tsuzuku, Sato & Sugiyama
                    2018, "Lipschitz-Margin Training", Prop. 1): f_y - f_j = (e_y - e_j)^T f
                    and ||e_y - e_j|| = sqrt(2), so each margin is sqrt(2) L-Lipschitz and
                    cannot reach 0 within the ball. Hence certified <= empirical robust
                    accuracy always (for any attack that stays in the ball).
Inputs are batches (B, ...) whose every coordinate is in [0, 1]; norms are over all
non-batch dimensions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

SQRT2 = math.sqrt(2.0)
DEFAULT_STEPS = 30  # "a few dozen" projected steps
STEP_FACTOR = 2.5  # step size = STEP_FACTOR * eps / steps (Madry et al. 2018's rule of thumb)


def logit_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """f_y - max_{j != y} f_j per sample: > 0 exactly when the prediction is correct (no ties)."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1] or logits.shape[1] < 2:
        raise ValueError(f"logits must be (B, K >= 2) and labels (B,), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    true = logits.gather(1, labels[:, None].long()).squeeze(1)
    others = logits.scatter(1, labels[:, None].long(), float("-inf"))
    return true - others.max(dim=1).values


def _flat_norm(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x.flatten(1), dim=1).view(-1, *([1] * (x.dim() - 1)))


def project_l2_box(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Project onto the L2 ball of radius eps around x, then clamp to [0, 1].

    The clamp never leaves the ball: x is in [0, 1], so clamping moves every coordinate of
    x_adv towards x's and |delta_i| can only shrink.
    """
    delta = x_adv - x
    scale = (eps / _flat_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta * scale).clamp(0.0, 1.0)


def _check(model: nn.Module, x: Tensor, labels: Tensor, eps: float, steps: int) -> None:
    if not callable(model):
        raise ValueError(f"model must be callable on a batch, got {type(model).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty floating-point batch (B, ...)")
    if labels.shape != x.shape[:1]:
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError(f"inputs must lie in [0, 1] (got [{float(x.min()):.3g}, {float(x.max()):.3g}]): "
                         "the attack keeps images valid by clamping to that box")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")


def pgd_l2(model: nn.Module, x: Tensor, labels: Tensor, eps: float, steps: int = DEFAULT_STEPS,
           step_size: float | None = None) -> tuple[Tensor, Tensor]:
    """L2 PGD on the logit margin: (adversarial points, broken mask (B,) bool).

    Each step moves along the normalized gradient of -margin (for a linear model this is
    exactly the direction of the closest decision boundary), then projects onto the ball
    and the box. `broken` is True where the clean point or any iterate is misclassified;
    the returned point is the first misclassified iterate (else the last one); broken points
    leave the batch (fewer forwards, same result: each sample's iterates are independent of
    the others' in a model without batch statistics, which eval mode guarantees). The model's
    training flag and parameter gradients are left untouched.
    """
    _check(model, x, labels, eps, steps)
    step = STEP_FACTOR * eps / steps if step_size is None else float(step_size)
    x = x.detach()
    was_training = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    try:
        with torch.no_grad():
            broken = logit_margin(model(x), labels) <= 0
        best = x.clone()
        x_adv = x.clone()
        if eps == 0:
            return best, broken
        for _ in range(steps):
            active = (~broken).nonzero().squeeze(1)  # broken points are done: attack the rest only
            if active.numel() == 0:
                break
            xa, xc, ya = x_adv[active].requires_grad_(True), x[active], labels[active]
            with torch.enable_grad():
                loss = -logit_margin(model(xa), ya).sum()
                (grad,) = torch.autograd.grad(loss, xa)
            with torch.no_grad():
                direction = grad / _flat_norm(grad).clamp_min(1e-12)
                stepped = project_l2_box(xa.detach() + step * direction, xc, eps)
                x_adv[active] = stepped
                now = logit_margin(model(stepped), ya) <= 0
                best[active[now]] = stepped[now]
                broken[active[now]] = True
        best[~broken] = x_adv[~broken]
        return best, broken
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)


@dataclass(frozen=True)
class RobustReport:
    """Accuracies at each radius on one batch: clean, under PGD (empirical, an upper
    estimate of the true robust accuracy) and certified (a guaranteed lower bound)."""

    clean: float
    eps: tuple[float, ...]
    empirical: tuple[float, ...]
    certified: tuple[float, ...]
    certified_radius_mean: float  # mean over samples of max(margin, 0) / (sqrt(2) L); 0 if wrong

    def as_metrics(self) -> dict[str, float]:
        out = {"robust_clean_acc": self.clean, "certified_radius_mean": self.certified_radius_mean}
        for e, emp, cert in zip(self.eps, self.empirical, self.certified):
            out[f"pgd_acc@{e:g}"] = emp
            out[f"cert_acc@{e:g}"] = cert
        return out


def certified_radius(margins: Tensor, lipschitz: float) -> Tensor:
    """max(margin, 0) / (sqrt(2) L): no point that close can change the prediction."""
    if not (math.isfinite(lipschitz) and lipschitz > 0):
        raise ValueError(f"lipschitz must be a finite number > 0 (a certified bound), got {lipschitz!r}")
    return margins.clamp_min(0) / (SQRT2 * lipschitz)


@torch.no_grad()
def certified_robust(model: nn.Module, x: Tensor, labels: Tensor, eps: float, lipschitz: float) -> Tensor:
    """Mask (B,) of predictions certified at radius eps: correct and margin > sqrt(2) L eps."""
    margins = logit_margin(model(x), labels)
    return (margins > 0) & (margins > SQRT2 * lipschitz * eps)


def robust_report(model: nn.Module, x: Tensor, labels: Tensor, eps: tuple[float, ...], lipschitz: float | None,
                  steps: int = DEFAULT_STEPS) -> RobustReport:
    """Clean, PGD and certified accuracy of `model` on (x, labels) at every radius in eps.

    lipschitz: a certified bound of the logit map (lk.lipschitz_bound(model, shape).upper);
    None gives NaN certified numbers (for models lipkit cannot certify).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            margins = logit_margin(model(x), labels)
        clean = float((margins > 0).float().mean())
        empirical = tuple(float((~pgd_l2(model, x, labels, e, steps)[1]).float().mean()) for e in eps)
        if lipschitz is None:
            certified, radius = tuple(math.nan for _ in eps), math.nan
        else:
            certified = tuple(float(((margins > 0) & (margins > SQRT2 * lipschitz * e)).float().mean()) for e in eps)
            radius = float(certified_radius(margins, lipschitz).mean())
        return RobustReport(clean, tuple(eps), empirical, certified, radius)
    finally:
        model.train(was_training)
