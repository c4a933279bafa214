"""Full float32 precision for lipkit's norm computations, whatever torch allows elsewhere.

torch lets float32 convs and matmuls run at reduced internal precision for speed: TF32 (a
10-bit mantissa) on NVIDIA GPUs, bf16 / TF32 in oneDNN on CPUs that have it. cuDNN convs
are TF32 BY DEFAULT (torch.backends.cudnn.conv.fp32_precision == "tf32"), and
torch.set_float32_matmul_precision("high") turns it on for matmuls. A norm computed that
way is wrong in its first digits, not its last: a conv-SN refresh (Rayleigh-Ritz on Krylov
images, which must be linear in their inputs) with its conv operands truncated to TF32
(emulated on CPU, 2026-12-01) normalized layers to 1.9-79x their bound right after
registration and up to 1e12x after 20 steps, where full precision gives <= 9e-7 over
(benchmarks/tf32_emulation.py). A certified bound must not rest on it either.

So every refresh of a constraint's state, every constraint map (its certified bound, AOL's
rescaling, Bjorck's iteration) and every public norm / bound (lk.spectral_norm,
lk.operator_norm, lk.lipschitz_bound, lk.lipschitz_lower_bound) runs under
`full_precision(device_type)`: the reduced-precision settings of that device are switched
to IEEE float32 inside and restored on exit. The training forward and backward keep the
user's setting (that is a speed choice about the model, not about its certificate). Under
torch.compile nothing is switched (a traced function cannot write torch.backends; lipkit's
refreshes run eagerly anyway, through torch.compiler.disable).
"""
from __future__ import annotations

import functools
from contextlib import nullcontext
from typing import Any, Callable, TypeVar

import torch

IEEE = "ieee"
_NULL = nullcontext()
F = TypeVar("F", bound=Callable[..., Any])


def _leaves(device_type: str) -> list[tuple[Any, tuple[Any, ...]]]:
    """(switch, its parents) per float32 precision switch of torch >= 2.9 for the device; a
    switch set to "none" inherits its first parent that is not "none" (none at all: IEEE)."""
    backends = torch.backends
    if device_type == "cuda":
        return [(backends.cuda.matmul, (backends,)), (backends.cudnn.conv, (backends.cudnn, backends))]
    if device_type == "cpu":
        return [(backends.mkldnn.matmul, (backends.mkldnn, backends)),
                (backends.mkldnn.conv, (backends.mkldnn, backends))]
    return []


NEW_API = hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cudnn.conv, "fp32_precision")


def _lowered(device_type: str) -> list[tuple[Any, str, Any]]:
    """(object, attribute, its full-precision value) of each switch now lowering precision."""
    if not NEW_API:  # torch < 2.9: TF32 on CUDA only, two booleans
        if device_type != "cuda":
            return []
        flags = [(torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")]
        return [(obj, name, False) for obj, name in flags if getattr(obj, name)]
    parent_values: dict[int, str] = {}  # each parent read once (a read is ~0.7 us)
    lowered = []
    for leaf, parents in _leaves(device_type):
        value = leaf.fp32_precision
        for parent in parents:
            if value != "none":
                break
            if id(parent) not in parent_values:
                parent_values[id(parent)] = parent.fp32_precision
            value = parent_values[id(parent)]
        if value not in ("none", IEEE):
            lowered.append((leaf, "fp32_precision", IEEE))
    return lowered


class _FullPrecision:
    """Switches the given settings to full precision inside, restores them on exit."""

    __slots__ = ("lowered", "saved")

    def __init__(self, lowered: list[tuple[Any, str, Any]]) -> None:
        self.lowered, self.saved = lowered, []

    def __enter__(self) -> None:
        self.saved = [(obj, name, getattr(obj, name)) for obj, name, _ in self.lowered]
        for obj, name, full in self.lowered:
            setattr(obj, name, full)

    def __exit__(self, *exc: Any) -> None:
        for obj, name, value in reversed(self.saved):
            setattr(obj, name, value)


def reduced_precision(device_type: str) -> bool:
    """Whether torch now runs float32 convs or matmuls on `device_type` below IEEE precision
    (what full_precision switches off; it cannot inside a graph)."""
    return bool(_lowered(device_type))


def full_precision(device_type: str = "cpu"):
    """A context in which float32 convs and matmuls on `device_type` run at full precision
    (a no-op when they already do, and under torch.compile)."""
    if torch.compiler.is_compiling():
        return _NULL
    lowered = _lowered(device_type)
    return _FullPrecision(lowered) if lowered else _NULL


def at_full_precision(fn: F) -> F:
    """Decorator for the public norm and bound functions: full precision on every device a
    call can touch (they take models and tensors on any device)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with full_precision("cpu"), full_precision("cuda"):
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]
