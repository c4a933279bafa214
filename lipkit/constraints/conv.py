"""Spectral normalization by the TRUE operator norm of a convolution (operator="conv").

The reshaped kernel's sigma (SN-GAN, torch) is not the conv's Lipschitz constant: after
torch's SN a 3x3 conv on 16x16 inputs still has norm 1.82 (ANCHORS.md). Here sigma is the
norm of the linear map the layer computes at the input shape it is fed (ConvGeometry).

certified=False (default): sigma = <u, conv_W(v)> for a top singular pair (u, v) found
once per weight update by Rayleigh-Ritz on a block Krylov space (norms/krylov.py) that
holds the previous v, the next Ritz vectors of the previous refresh (runners-up: an update
can swap nearly equal top modes) and the top modes of the conv's frequency symbol
(norms/conv_modes.py; conv_refresh.py).
Plain power iteration (one step per update, SN-GAN's scheme) is NOT enough here: a conv's
top spectrum is dense and a step can move the top to another frequency, and the true norm
then ran 38% above the bound (issue 11; benchmarks/sn_conv_lag.py). The estimate is from
below, so the normalized norm is bound * sigma_true / sigma_est, at or slightly above bound.
certified=True divides by the Gram iteration bound on the conv's symbol instead: true norm
<= bound guaranteed, a little below it.

The input shape is only known at the first forward: a forward pre-hook records it (and
re-initializes the vectors, in training mode, if it changes). The vectors' shapes depend
on it, so loading a state_dict resizes them first (a fresh model has not seen a forward).
An eval read of a weight changed since the last training read (export right after a step)
refreshes into a cache, not into u, v: eval still changes no state.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..norms.conv_modes import mode_grid
from ..norms.conv_symbol import bound_matrices, bound_pieces
from ..norms.full_precision import full_precision
from ..norms.linalg import gram_iteration_bound, start_vector
from ..norms.operators import ConvGeometry
from ..norms.power_state import WARMUP_TOL
from .base import (
    Constraint,
    as_dtype,
    autocast_off,
    cached_homogeneous,
    compute_dtype,
    normal_tensors,
    normalize_by,
    raw_tensor,
)
from .conv_refresh import RESTART_EXTRA_DEPTH, full_refresh, ritz_refresh, update_rounds
from .spectral import GRAM_ITER

# Refresh state beyond u, v, saved with them, and its empty shape (nothing carried yet); a
# checkpoint from before one existed still loads
CARRIED = {"freq_vectors": (0, 0, 0, 2), "runner_vectors": (0,)}
WARMUP_DEPTH = 4  # Krylov depth of each warm-up round
WARMUP_ROUNDS = 50  # at most this many rounds; each keeps the best vector so far


def sample_shape(x: Tensor, nd: int) -> tuple[int, ...]:
    """One sample's shape (C, *spatial) of a conv input, batched or not."""
    return tuple(x.shape[1:]) if x.dim() == nd + 2 else tuple(x.shape)


class ConvSpectralNormalization(Constraint):
    """W -> W * bound / ||conv_W|| at the layer's input shape (soft: / max(1, norm/bound))."""

    method = "spectral"
    observes_layer = True

    def __init__(
        self,
        layer: nn.Module,
        *,
        n_iter: int = 1,
        bound: float = 1.0,
        soft: bool = False,
        certified: bool = False,
        gram_iter: int = GRAM_ITER,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.n_iter, self.bound, self.soft = n_iter, float(bound), soft
        self.certified, self.gram_iter = certified, gram_iter
        self.full_precision_map = certified  # else _top_pair and _sigma_grad guard themselves
        self.geometry = ConvGeometry.of(layer)
        raw = layer.weight
        self.weight_shape = tuple(raw.shape)
        empty = torch.zeros(0, dtype=compute_dtype(raw.dtype), device=raw.device)
        self.register_buffer("input_shape", torch.zeros(0, dtype=torch.long, device=raw.device))
        self.register_buffer("u", empty.clone())
        self.register_buffer("v", empty.clone())
        self.register_buffer("sigma_grad", empty.clone(), persistent=False)  # d sigma / dW
        # Carried from update to update like u and v, and saved with them: freq_vectors, every
        # symbol frequency's block of top right singular vectors (rank_modes; a complex
        # tensor's real view; a checkpoint's older one-vector shape restarts the ranking), and
        # runner_vectors, the next RUNNERS_UP Ritz vectors (BORDER_RUNNERS_UP for reflect and
        # replicate padding; input-shaped: conv_refresh.py).
        for name, shape in CARRIED.items():
            self.register_buffer(name, empty.new_zeros(shape))
        self._grid = None
        self._shape: tuple[int, ...] | None = None
        self._plan: tuple[list[list[int]], float, tuple[int, ...]] | None = None  # bound_pieces
        # An input_shape given by the user is a promise about the inputs: training on another
        # size is refused (it used to re-register silently, and the norm at the promised shape
        # then exceeded the bound: 1.051 at 16x16 after training on 8x8).
        self.declared_shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
        if self.declared_shape is not None:
            self.set_input_shape(self.declared_shape, raw)

    @property
    def depth(self) -> int:
        """Krylov depth of each update's refresh (measured: n_iter + 1 left dilation 2 at 2.2e-3
        over its bound, n_iter + 2 at 7e-6)."""
        return self.n_iter + 2

    @property
    def ready(self) -> bool:
        return self._shape is not None

    def observe(self, layer: nn.Module, args: tuple[Any, ...] | None) -> None:
        if not args or not isinstance(args[0], Tensor):
            return
        shape = sample_shape(args[0], self.geometry.nd)
        if self.training and self.declared_shape is not None and shape != self.declared_shape:
            raise ValueError(f"operator='conv' was given input_shape={self.declared_shape} but this "
                             f"{type(layer).__name__} is trained on inputs of shape {shape}: the norm is only "
                             "normalized at the declared shape; pass input_shape=" + str(shape) + " or leave it unset")
        # Eval never changes state: a model trained at 32x32 keeps its 32x32 vectors when
        # evaluated at another size (the norm then is that of the training shape).
        if shape != self._shape and (self._shape is None or self.training):
            self.set_input_shape(shape, raw_tensor(layer, "weight"))

    def _allocate(self, shape: tuple[int, ...]) -> None:
        """Buffers and plan for inputs of `shape` (validated against the layer)."""
        out_shape = self.geometry.output_shape(shape, self.weight_shape)
        if 0 in out_shape:  # padding crops everything: no operator to normalize
            raise ValueError(f"the layer's output is empty ({out_shape}) on inputs of shape {shape}: "
                             "operator='conv' needs a non-empty output (check its padding)")
        device, dtype = self.input_shape.device, self.u.dtype  # both follow model.to(...)
        self.input_shape = torch.tensor(shape, dtype=torch.long, device=device)
        self._shape = shape
        self._plan = bound_pieces(self.geometry, shape, self.weight_shape[2:])
        self._grid = mode_grid(self.geometry, shape, self.weight_shape)
        self._drop_carried()
        self.watch.reset()  # vectors or cached bound gradient belong to the old shape
        self._eval_cache = None
        self.forget_reuse()
        if not self.certified:
            self.u = start_vector(out_shape, dtype, device)
            self.v = start_vector(shape, dtype, device)

    def _drop_carried(self) -> None:
        """Empty the carried refresh state (it belongs to an input shape)."""
        for name, shape in CARRIED.items():
            setattr(self, name, getattr(self, name).new_zeros(shape))

    def _forget_shape(self) -> None:
        """Back to 'no input seen' (loading a checkpoint saved before any forward)."""
        self.input_shape = self.input_shape.new_zeros(0)
        self._eval_cache = None
        self.forget_reuse()
        self.u, self.v = self.u.new_zeros(0), self.v.new_zeros(0)
        self.sigma_grad = self.sigma_grad.new_zeros(0)
        self._shape = self._plan = self._grid = None
        self._drop_carried()
        self.watch.reset()

    @torch.compiler.disable  # once per input shape, eagerly: tracing the warm-up would only slow compiling
    def set_input_shape(self, shape: tuple[int, ...], raw: Tensor) -> None:
        """(Re)initialize for inputs of `shape` and warm up to convergence (host syncs
        are fine here: it happens once per shape, not per step)."""
        self._allocate(shape)
        if self.certified:
            return
        with torch.no_grad(), autocast_off(raw.device.type):
            w = raw.detach().to(compute_dtype(raw.dtype))
            # Rounds until sigma stops moving: every round re-injects the symbol's modes and
            # keeps the best vector so far (sigma never decreases), so a plateau at a lower
            # singular value (the stride-2 case of issue 11) is left as soon as a round sees
            # the top, and stopping needs two quiet rounds in a row.
            sigma, quiet = 0.0, 0
            for _ in range(WARMUP_ROUNDS):
                new = float(self._refresh(w, WARMUP_DEPTH))
                quiet = quiet + 1 if abs(new - sigma) <= WARMUP_TOL * max(new, 1e-30) else 0
                sigma = new
                if quiet >= 2:
                    break
        self.sigma_grad = self._sigma_grad(self.u, self.v)
        self.mark_current(raw)

    def _sigma_grad(self, u: Tensor, v: Tensor) -> Tensor:
        """d<u, conv_W(v)>/dW, which depends on u and v only (the map is linear in W). The
        caller rebinds sigma_grad to it, never writes in place: graphs that saved the old
        one stay valid."""
        # inference_mode(False): a training-mode forward under torch.inference_mode() must
        # still be able to differentiate here (u, v, w are ordinary tensors).
        with normal_tensors(), torch.enable_grad(), autocast_off(u.device.type), full_precision(u.device.type):
            w = torch.zeros(self.weight_shape, dtype=u.dtype, device=u.device, requires_grad=True)
            (grad,) = torch.autograd.grad((u[None] * self.geometry.forward(v[None], w)).sum(), w)
        return grad

    def _carried(self, w: Tensor) -> list[Tensor]:
        """The stored v and runner vectors, as start blocks for a refresh of weight w."""
        carried = [as_dtype(self.v, w.dtype)[None]]
        if self.runner_vectors.numel():
            carried.append(as_dtype(self.runner_vectors, w.dtype))
        return carried

    def _top_pair(self, w: Tensor, depth: int, rounds: int = 1) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(sigma, u, v, freq_vectors, runner_vectors) for weight w by a full refresh and
        rounds - 1 thick restarts from its vectors (conv_refresh.py). No state change:
        the caller keeps or drops the results."""
        freq_vectors = torch.view_as_complex(self.freq_vectors.contiguous()) if self.freq_vectors.numel() else None
        with full_precision(w.device.type):  # norms/full_precision.py: TF32 made it wrong by factors
            sigma, u, v, runners, freq_vectors = full_refresh(
                self.geometry, self._shape, self._grid, w, self._carried(w), freq_vectors, depth)
            for _ in range(rounds - 1):
                sigma, u, v, runners = ritz_refresh(
                    self.geometry, self._shape, w, torch.cat([v[None], runners]), depth + RESTART_EXTRA_DEPTH)
        freq_vectors = torch.view_as_real(freq_vectors).to(self.freq_vectors.dtype)
        return sigma, u, v, freq_vectors, as_dtype(runners, self.runner_vectors.dtype)

    def _refresh(self, w: Tensor, depth: int, rounds: int = 1) -> Tensor:
        """Bring u, v and freq_vectors up to date for weight w (rebinding them); returns sigma."""
        sigma, u, v, self.freq_vectors, self.runner_vectors = self._top_pair(w, depth, rounds)
        self.set_vectors(u, v)
        return sigma

    @torch.compiler.disable  # eager inside a compiled model: one graph break per conv layer
    def _current_sigma_grad(self, raw: Tensor, w: Tensor) -> Tensor:
        """sigma_grad for the weight being read: refreshed once per update in training; in
        eval, a weight changed since the last refresh gets a cached pair of its own. Under
        torch.compile it runs eagerly (the refresh's Krylov / FFT / autograd.grad work and
        its data-pointer test are not traceable) and still once per update."""
        if not self.weight_changed(raw):
            return self.sigma_grad
        rounds = update_rounds(self.geometry)
        if self.training:
            self._refresh(w.detach(), self.depth, rounds)
            self.sigma_grad = self._sigma_grad(self.u, self.v)
            self.mark_current(raw)
            return self.sigma_grad
        return self.eval_cached(raw, lambda: self._sigma_grad(*self._top_pair(w.detach(), self.depth, rounds)[1:3]))

    def constrained(self, raw: Tensor) -> Tensor:
        if self._shape is None:
            raise RuntimeError(
                "operator='conv' normalizes by the conv's norm at its input shape, which is "
                "not known yet: run one forward pass through the model before reading the "
                "weight (or pass input_shape=(C, H, W) to lk.constrain)."
            )
        with autocast_off(raw.device.type):
            w = as_dtype(raw, compute_dtype(raw.dtype))
            if self.certified:
                sigma = cached_homogeneous(self, raw, w, self._gram_bound)
            else:
                # sigma = <u, conv_W(v)> = <sigma_grad, W>: linear in W, so one dot product
                # with the stored gradient replaces a conv over the whole input per forward.
                sigma = (as_dtype(self._current_sigma_grad(raw, w), w.dtype) * w).sum()
            return as_dtype(normalize_by(w, sigma, self.bound, self.soft), raw.dtype)

    def _gram_bound(self, w: Tensor) -> Tensor:
        """Certified, differentiable upper bound on the conv's norm (fixed iterations)."""
        pieces, pad_norm, dilation = self._plan
        matrices = bound_matrices(w, self.geometry, pieces, dilation)
        return pad_norm * gram_iteration_bound(matrices, self.gram_iter).max()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # A fresh model has not seen an input yet: size the buffers from the checkpoint.
        saved = state_dict.get(prefix + "input_shape")
        if saved is not None:
            shape = tuple(int(s) for s in saved.tolist())
            if shape != (self._shape or ()):
                self._allocate(shape) if shape else self._forget_shape()
        for name in CARRIED:  # sized by the checkpoint too
            if prefix + name in state_dict:
                setattr(self, name, getattr(self, name).new_empty(state_dict[prefix + name].shape))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        for name in CARRIED:
            if prefix + name in missing_keys:  # a checkpoint from before they existed:
                missing_keys.remove(prefix + name)  # start without them at the next refresh
                setattr(self, name, getattr(self, name).new_zeros(CARRIED[name]))
        if self._shape is not None and not self.certified:
            self.sigma_grad = self._sigma_grad(self.u, self.v)  # not saved: a function of the loaded u, v

    def options(self) -> dict:
        return {
            "operator": "conv", "n_iter": self.n_iter, "bound": self.bound, "soft": self.soft,
            "certified": self.certified, "input_shape": self._shape,
        }
