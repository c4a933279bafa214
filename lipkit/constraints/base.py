"""What every lipkit constraint is: a small nn.Module mapping a raw weight to the weight used.

One module serves both attachments (DESIGN.md, "two abstractions"):
- reparam: torch.nn.utils.parametrize calls `constraint(raw)` at every read of the weight,
  so gradients flow through the map (the correct SN);
- project: project_(model) writes `constraint.projected(raw)` into the raw weight after
  optimizer.step() (the Keras-style constraint the seed warns about, kept to measure it).
State (power-iteration vectors) lives in buffers, so state_dict carries it.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..autocast import autocast_off  # noqa: F401  (constraints import it from here)
from ..norms.full_precision import full_precision
from ..norms.linalg import as_dtype  # noqa: F401  (constraints import it from here)
from ..norms.power_state import UpdateWatch, tensors_key
from .step_reuse import StepReuse

# sigma is clamped from below by this before dividing: an all-zero weight stays zero
# (torch's SN returns NaN there, pytorch#20192) instead of 0/0.
SIGMA_EPS = 1e-12
# state_dict entry saying whether the saved vectors were current for the saved weight
CURRENT_KEY = "vectors_current"


class Constraint(nn.Module):
    """Base class: forward(raw weight) -> constrained weight, same shape and dtype.

    Subclasses that need the layer's context (its input shape, its BatchNorm running
    variance) set `observes_layer = True`; lipkit then calls `observe(layer, args)` from a
    forward pre-hook before the layer reads its weight, and `observe(layer, None)` before
    any read outside a forward (registration, project_, export).
    """

    observes_layer: bool = False
    method: str = ""  # the constrain() method name, for messages and introspection
    # True when constrained(raw) depends on raw alone (and on state refreshed only when raw
    # changes): the reads of one update then share one value (step_reuse.py). A map that also
    # reads something else that moves (BatchNorm's running variance) sets False.
    reuse_within_update: bool = True
    # Whether constrained() itself runs the float32 convs / matmuls its guarantee rests on, so
    # each computed read switches the device to full precision (norms/full_precision.py). A
    # map that only rescales by state refreshed elsewhere (uncertified SN) guards that refresh
    # instead and skips the per-read switch (~4 us of host time: issue 12's overhead).
    full_precision_map: bool = True

    def constrained(self, raw: Tensor) -> Tensor:
        """The map itself: raw weight -> constrained weight (subclasses implement it)."""
        raise NotImplementedError

    def forward(self, raw: Tensor) -> Tensor:
        compute = self._constrained_full_precision if self.full_precision_map else self.constrained
        if not self.reuse_within_update:
            return compute(raw)
        return self.reuse.get(raw, self.training, compute)

    def _constrained_full_precision(self, raw: Tensor) -> Tensor:
        """constrained(raw) with the device's float32 convs and matmuls at full precision
        (norms/full_precision.py: TF32 made the conv-SN refresh wrong by factors); reused values
        skip it."""
        with full_precision(raw.device.type):
            return self.constrained(raw)

    def forget_reuse(self) -> None:
        """Drop the value kept for this update (the state it was computed from was replaced)."""
        self.reuse.drop()

    def observe(self, layer: nn.Module, args: tuple[Any, ...] | None) -> None:
        """Record what the map needs from the layer; default: nothing."""

    @property
    def ready(self) -> bool:
        """False while the map cannot be evaluated yet (a conv input shape not seen)."""
        return True

    def projected(self, raw: Tensor) -> Tensor:
        """The constrained value of `raw`, updating state as a training step would.

        Used by project_ (after optimizer.step(): the weight changed, so the state is
        refreshed exactly as a training-mode forward would refresh it).
        """
        was_training = self.training
        self.training = True
        try:
            with torch.no_grad():
                return self(raw)
        finally:
            self.training = was_training

    def __init__(self) -> None:
        super().__init__()
        # Once-per-update tracking for constraints whose state (power-iteration vectors)
        # follows the weight: the scheme of lipkit/norms/power_state.py, shared with SNR.
        # Whether the vectors were current travels in state_dict (CURRENT_KEY), so a run
        # resumed from a checkpoint refreshes exactly when the uninterrupted run would have.
        self.watch = UpdateWatch()
        # An eval read of a weight changed since the last refresh (export right after a step)
        # gets up-to-date vectors of its own, kept here, not in the buffers: eval changes no state.
        self._eval_cache: tuple | None = None  # (weight key, value, weight: its pointer stays taken)
        self.reuse = StepReuse()

    def weight_changed(self, raw: Tensor) -> bool:
        """True when `raw` changed since the state was last brought up to date. Under
        torch.compile always (a data pointer cannot be compared in a graph): a compiled
        training read refreshes, as torch's own spectral_norm does at every forward."""
        if torch.compiler.is_compiling():
            return True
        return self.watch.changed((raw,))

    def mark_current(self, raw: Tensor) -> None:
        if not torch.compiler.is_compiling():
            self.watch.mark((raw,))

    def eval_cached(self, raw: Tensor, compute):
        """compute() for this value of `raw`, evaluated once per value (eval reads)."""
        key = tensors_key((raw,))
        if self._eval_cache is None or self._eval_cache[0] != key:
            self._eval_cache = (key, compute(), raw)
        return self._eval_cache[1]

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + CURRENT_KEY] = torch.tensor(self.watch.is_current())

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        key = prefix + CURRENT_KEY
        if key in unexpected_keys:  # ours, not a buffer: computed at save time
            unexpected_keys.remove(key)
        self._eval_cache = None  # computed from the vectors before the load
        self.forget_reuse()
        self.watch.reset()  # new vectors: refresh at the next training forward...
        self.watch.adopt_next = bool(state_dict.get(key, False))  # ...unless they were current

    def set_vectors(self, u: Tensor, v: Tensor) -> None:
        """Rebind (never write into) the power-iteration buffers u, v, keeping their dtype:
        a graph that saved the old vectors stays valid without per-forward clones."""
        self.rebind(u=as_dtype(u, self.u.dtype), v=as_dtype(v, self.v.dtype))

    def rebind(self, **buffers: Tensor) -> None:
        """Point existing buffers at new tensors. Written into _buffers directly: nn.Module's
        __setattr__ costs ~25 us of type checks per name, and this runs once per weight
        update per constrained layer (a critic step is host-bound on a GPU)."""
        for name, value in buffers.items():
            assert name in self._buffers, name
            self._buffers[name] = value

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options().items())

    def options(self) -> dict[str, Any]:
        """The constrain() options this module was built with (for repr and re-building)."""
        return {}


def normal_tensors() -> contextlib.AbstractContextManager:
    """inference_mode(False) when inference mode is on, so state computed in a training read
    under torch.inference_mode() is made of normal tensors that later training reads can save
    for backward; nothing otherwise, and nothing under torch.compile (which cannot trace the
    inference-mode query, and whose graphs hold no inference tensors)."""
    if torch.compiler.is_compiling() or not torch.is_inference_mode_enabled():
        return contextlib.nullcontext()
    return torch.inference_mode(False)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32: sigma from bf16/fp16 arithmetic is too coarse (and overflows in
    fp16, pytorch#61954); float64 weights stay float64 (gradcheck)."""
    if dtype is torch.float32 or dtype is torch.float64:  # the usual case, without a dispatcher call
        return dtype
    return torch.promote_types(dtype, torch.float32)


def normalize_by(w: Tensor, sigma: Tensor, bound: float, soft: bool) -> Tensor:
    """w * bound / sigma (SN-GAN: sigma becomes exactly bound), or w / max(1, sigma / bound)
    with soft=True (only shrink: sigma <= bound). Written as a division by a clamped scalar
    so the common case (bound 1) costs two kernels forward: every kernel is host time on a
    GPU, where a critic step is launch-bound (benchmarks/results/h200_2026-11-26)."""
    if soft:
        return w / (sigma / bound).clamp_min(1.0)
    scaled = w / sigma.clamp_min(SIGMA_EPS)
    return scaled if bound == 1.0 else scaled * bound


def raw_tensor(layer: nn.Module, name: str) -> Tensor:
    """The layer's unconstrained tensor `name`, whether it is parametrized or not."""
    parametrizations = getattr(layer, "parametrizations", None)
    if parametrizations is not None and name in parametrizations:
        return parametrizations[name].original
    return getattr(layer, name)


class NonFiniteWeightError(ValueError):
    """A constrained weight holds NaN or inf: its norm, and so the constrained weight, is
    meaningless. Raised where the norm is recomputed (once per weight update), not per forward."""


def check_finite(w: Tensor, what: str = "", fix: str = "") -> None:
    """NonFiniteWeightError if w holds NaN / inf. One host sync, paid once per weight update
    beside the refresh's own linear algebra (and once at lk.constrain); without it a NaN weight
    gave NaN outputs in silence (operator='conv') or an eigh 'failed to converge' error (reshape)."""
    if torch.compiler.is_compiling():  # no host read inside a graph: the trainers' loss guard
        return                         # catches a NaN weight there (its output is NaN)
    if math.isfinite(float(w.sum())):  # NaN and inf survive a sum: two kernels in the usual case
        return
    bad = int((~torch.isfinite(w)).sum())
    if bad:
        raise NonFiniteWeightError(
            f"{what or f'a constrained {tuple(w.shape)} weight'} has {bad} non-finite (NaN/inf) "
            f"entr{'y' if bad == 1 else 'ies'}: " + (fix or "training diverged (learning rate too high?) or the "
                                                    "weights were loaded broken; reload a good checkpoint"))


def cached_homogeneous(module: nn.Module, raw: Tensor, w: Tensor, bound_fn) -> Tensor:
    """bound_fn(w) (a certified norm bound), evaluated once per weight update.

    bound_fn is positively homogeneous of degree 1 (f(aW) = a f(W), as every norm bound
    is), so by Euler's theorem f(W0) = <grad f(W0), W0>: the linear map W -> <g, W> has
    f's value AND gradient at W0. Storing g (one weight-sized buffer, rebound, never
    written in place) lets every forward of one update use that linear map - exact value,
    exact first derivatives (all a loss or a gradient penalty needs) for one dot product;
    the same trick as SN-GAN's sigma = u^T W v. The expensive bound (Gram iteration on a
    conv symbol: hundreds of ms on CPU) then runs once per step, not once per forward.
    Eval mode with a weight changed since the last training forward evaluates f itself
    (differentiably, no state change) so the certificate never rests on a stale g.
    module needs a `watch` (UpdateWatch) and a `sigma_grad` buffer.
    """
    grad = refreshed_sigma_grad(module, raw, w.detach(), bound_fn)
    if grad is None:
        return bound_fn(w)
    return (as_dtype(grad, w.dtype) * w).sum()


@torch.compiler.disable  # eager inside a compiled model too: one graph break per layer (see below)
def refreshed_sigma_grad(module: nn.Module, raw: Tensor, w: Tensor, bound_fn) -> Tensor | None:
    """module.sigma_grad, recomputed first if raw changed since (training); None for an eval
    read of a changed weight (the caller evaluates bound_fn itself). Kept out of torch.compile's
    graphs: the once-per-update test compares data pointers and the gradient is an
    autograd.grad call, neither traceable; run eagerly, it still happens once per update."""
    if module.watch.key != tensors_key((raw,)):  # the loaded-vectors adoption does not apply:
        if not module.training:                  # sigma_grad is never saved
            return None
        check_finite(w)
        with normal_tensors(), torch.enable_grad():  # also under inference_mode
            w0 = w.clone().requires_grad_()
            (grad,) = torch.autograd.grad(bound_fn(w0), w0)
        module.sigma_grad = grad
        module.watch.mark((raw,))
    return module.sigma_grad
