"""Autocast checks shared by constraints and penalties: parts of lipkit run in fp32 even
inside `torch.autocast` (sigma of a constraint; the input gradient of a gradient penalty,
whose double backward would otherwise run in half precision and change the penalty).

One place for the check, because torch < 2.4 has no device argument to
torch.is_autocast_enabled (it raised TypeError there; lipkit supports torch >= 2.1)."""
from __future__ import annotations

import contextlib

import torch


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for `device_type` ("cpu", "cuda", ...)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: one query per device kind
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast disabled for `device_type`, entered only when it is on (entering costs host time)."""
    if autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()
