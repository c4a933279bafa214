"""Hinge-Kantorovich-Rubinstein loss (Serrurier, Mamalet, Gonzalez-Sanz et al., CVPR 2021).

A 1-Lipschitz f maximizing E[f | class +] - E[f | class -] estimates the Wasserstein-1
distance between the classes (Kantorovich-Rubinstein duality), and its level sets are as far
from the data as the transport plan allows; the hinge term asks for a margin |f| >= margin
with the right sign, which makes f a classifier whose margin is a certified l2 radius
(|f(x)| / L). Loss = -KR + alpha * hinge, minimized.

Binary: output (N,) or (N, 1), target (N,) of +1 / -1 (or 1 / 0):
    KR = mean(f over target +) - mean(f over target -),  hinge = mean(relu(margin - y f)).
Multiclass: output (N, K), target (N,) class indices, one-vs-all per class k (y_k = +1 for
samples of class k, -1 otherwise): KR = mean over k of the binary KR of column k,
hinge = mean over samples of sum over k of relu(margin - y_k f_k).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .margin import _check_number, check_class_targets


def _kr(scores: Tensor, positive: Tensor) -> Tensor:
    """mean(scores[positive]) - mean(scores[~positive]) per column (empty side: 0)."""
    pos = positive.to(scores.dtype)
    neg = 1 - pos
    return (scores * pos).sum(0) / pos.sum(0).clamp_min(1) - (scores * neg).sum(0) / neg.sum(0).clamp_min(1)


def hkr_loss(output: Tensor, target: Tensor, *, alpha: float, margin: float) -> Tensor:
    """-KR + alpha * hinge (see the module docstring for the binary and multiclass forms)."""
    alpha = _check_number("alpha", alpha, positive=False)
    margin = _check_number("margin", margin, positive=False)
    if output.dim() == 2 and output.shape[1] > 1:  # multiclass, one-vs-all
        check_class_targets(output, target)
        signs = 2 * F.one_hot(target, output.shape[1]).to(output.dtype) - 1
        kr = _kr(output, signs > 0).mean()
        hinge = F.relu(margin - signs * output).sum(1).mean()
        return -kr + alpha * hinge
    scores = output.reshape(-1)
    if output.dim() > 2 or target.shape != scores.shape:
        raise ValueError(f"binary hkr_loss needs output (N,) or (N, 1) and target (N,), got "
                         f"{tuple(output.shape)} and {tuple(target.shape)}")
    values = set(torch.unique(target).tolist())
    if not values <= {-1, 1} and not values <= {0, 1}:
        raise ValueError(f"binary targets must be +1 / -1 (or 1 / 0), got values {sorted(values)}")
    signs = torch.where(target > 0, 1.0, -1.0).to(scores.dtype)
    kr = _kr(scores[:, None], (signs > 0)[:, None])[0]
    return -kr + alpha * F.relu(margin - signs * scores).mean()
