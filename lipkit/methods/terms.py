"""The penalty terms methods are built from: each turns (model, hyperparameters) into a
function of one step's Batch (registry.py). The penalties themselves live in
lipkit/penalties/; this file only says which part of the batch each one reads."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn
from torch import Tensor

from ..penalties import (
    SpectralPenalty,
    frobenius_penalty,
    gradient_penalty,
    input_gradient_penalty,
    l2_penalty,
    weight_gradient_penalty,
)
from .registry import Batch, PenaltyTerm, TermFn


def _need(batch: Batch, field: str, term: str, what: str) -> Any:
    value = getattr(batch, field)
    if value is None:
        raise ValueError(f"penalty {term!r} needs {what} (Batch.{field}); this task does not provide it")
    return value


def _gradient(one_sided: bool):
    name = "gp1" if one_sided else "gp"

    def make(model: nn.Module, hp: Mapping[str, Any]) -> TermFn:
        def term(b: Batch) -> Tensor:
            fake = _need(b, "fake", name, "a generated batch: it is a GAN critic penalty")
            eps = None
            if b.shard is not None:  # this rank's rows of the global batch's interpolation weights
                rows = b.inputs.shape[0] * b.shard.world
                device = b.generator.device if b.generator is not None else b.inputs.device
                eps = b.shard.take(torch.rand((rows,) + (1,) * (b.inputs.dim() - 1), generator=b.generator,
                                              device=device, dtype=b.inputs.dtype))
            return gradient_penalty(model, b.inputs, fake, one_sided=one_sided, labels=b.labels,
                                    generator=b.generator, eps=eps)
        return term
    return make


def _l2(model: nn.Module, hp: Mapping[str, Any]) -> TermFn:
    return lambda b: l2_penalty(model)


def _frobenius(model: nn.Module, hp: Mapping[str, Any]) -> TermFn:
    max_norm = hp["max_norm"]
    return lambda b: frobenius_penalty(model, max_norm)


class _SpectralTerm:
    """SNR (sum of squared sigmas) with its power-iteration state checkpointed."""

    def __init__(self, model: nn.Module, hp: Mapping[str, Any]) -> None:
        self.penalty = SpectralPenalty(model, n_iter=hp["sn_iter"])

    def __call__(self, batch: Batch) -> Tensor:
        return self.penalty()

    def state_dict(self) -> dict:
        return self.penalty.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.penalty.load_state_dict(state)


def _input_gradient(model: nn.Module, hp: Mapping[str, Any]) -> TermFn:
    kind = hp["igp_kind"]

    def term(b: Batch) -> Tensor:
        labels = _need(b, "labels", "igp", "the batch's labels")
        return input_gradient_penalty(model, b.inputs, labels, kind=kind, generator=b.generator)
    return term


def _weight_gradient(model: nn.Module, hp: Mapping[str, Any]) -> TermFn:
    # The paper's form (arXiv 2202.03599): the norm, not its square.
    return lambda b: weight_gradient_penalty(model, _need(b, "loss", "wgnp", "the task loss"), squared=False)


GP = PenaltyTerm("gp", _gradient(one_sided=False), weight="gp_lambda", double_backward=True)
GP1 = PenaltyTerm("gp1", _gradient(one_sided=True), weight="gp_lambda", double_backward=True)
L2 = PenaltyTerm("l2", _l2)
FROBENIUS = PenaltyTerm("frobenius", _frobenius, weight="penalty_weight")
SNR = PenaltyTerm("snr", _SpectralTerm)
IGP = PenaltyTerm("igp", _input_gradient, double_backward=True)
WGNP = PenaltyTerm("wgnp", _weight_gradient, double_backward=True)
