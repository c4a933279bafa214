"""What the bound tests compare against: the dense Jacobian's norm (the exact constant of a
linear or affine model, a lower bound on any model's) and a module wrapping a function, so the
tracer sees a functional call as it would in a model."""
from __future__ import annotations

import torch
import torch.nn as nn


def jacobian_norm_at(model: nn.Module, x: torch.Tensor) -> float:
    """||J||_2 of `model` at one sample x (no batch dim)."""
    jac = torch.autograd.functional.jacobian(lambda t: model(t).reshape(-1), x[None]).reshape(-1, x.numel())
    return float(torch.linalg.matrix_norm(jac, ord=2))


def dense_norm(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> float:
    """||J||_2 of `model` at one random float64 sample of `shape` (seeded)."""
    return jacobian_norm_at(model, torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))


class Applies(nn.Module):
    """forward(x) = fn(x)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)
