"""Mixed precision for training steps: --precision fp32 | bf16 | fp16 (issue 12).

bf16 and fp16 run the forward passes under torch.autocast (matmuls and convs in half
precision, reductions and losses in fp32); the weights, optimizer state and lipkit's
constraint arithmetic stay fp32 (constraints disable autocast around sigma). fp16 adds a
GradScaler per optimizer (its small exponent range needs the loss scaled before backward);
bf16 has fp32's range and needs none. The gradient penalty computes its input gradient with
autocast off (penalties/gradient.py), so GP is the same function in every precision and its
double backward never underflows. fp16 under torchrun is refused for now: each rank's
GradScaler would decide alone to skip a step on an overflow, and the ranks would part.
Works on CPU (autocast and GradScaler both support it) and CUDA.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def at_least_fp32(t: Tensor) -> Tensor:
    """Half-precision results (under autocast) as fp32 for losses; fp32 / fp64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def check_precision(name: str) -> None:
    if name not in PRECISIONS:
        raise ValueError(f"precision={name!r} is not allowed; choose one of {PRECISIONS}")


class Precision:
    """autocast for forwards and a (GradScaler-aware) backward + step, one per optimizer."""

    def __init__(self, name: str, device: torch.device | str) -> None:
        check_precision(name)
        self.name = name
        self.device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=name == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=DTYPES[self.name])

    def backward_step(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """loss.backward(); optimizer.step() - with loss scaling under fp16 (a step whose
        gradients overflowed is skipped and the scale lowered, as GradScaler does)."""
        if not self.scaler.is_enabled():
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(state)

