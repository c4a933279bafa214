"""Spectral normalization by the TRUE operator norm of a convolution (operator="conv").

The reshaped kernel's sigma (SN-GAN, torch) is not the conv's Lipschitz constant: after
torch's SN a 3x3 conv on 16x16 inputs still has norm 1.82 (ANCHORS.md). Here sigma is the
norm of the linear map the layer computes at the input shape it is fed, found by power
iteration on the conv and its transpose (ConvGeometry): the normalized layer has true
norm bound * sigma_true / sigma_est, i.e. bound up to the power iteration's accuracy (it
converges from below, so slightly above bound, by ~1e-4 relative with one step per update
after a converged warm-up). certified=True divides by the Gram iteration bound on the
conv's frequency symbol instead: true norm <= bound guaranteed, a little below it.

The input shape is only known at the first forward: a forward pre-hook records it (and
re-initializes the vectors, in training mode, if it changes). The vectors' shapes depend
on it, so loading a state_dict resizes them first (a fresh model has not seen a forward).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..norms.conv_symbol import circular_symbol, dense_kernel, symbol_plan
from ..norms.linalg import gram_iteration_bound, start_vector
from ..norms.operators import ConvGeometry
from ..norms.power_state import WARMUP_MAX_ITER, WARMUP_TOL, refresh_vectors
from .base import (
    Constraint,
    as_dtype,
    autocast_off,
    cached_homogeneous,
    compute_dtype,
    normalize_by,
    raw_tensor,
)
from .spectral import GRAM_ITER


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
        self.geometry = ConvGeometry.of(layer)
        raw = layer.weight
        self.weight_shape = tuple(raw.shape)
        empty = torch.zeros(0, dtype=compute_dtype(raw.dtype), device=raw.device)
        self.register_buffer("input_shape", torch.zeros(0, dtype=torch.long, device=raw.device))
        self.register_buffer("u", empty.clone())
        self.register_buffer("v", empty.clone())
        self.register_buffer("sigma_grad", empty.clone(), persistent=False)  # d sigma / dW
        self._shape: tuple[int, ...] | None = None
        self._plan: tuple[list[int], float] | None = None
        if input_shape is not None:
            self.set_input_shape(tuple(int(s) for s in input_shape), raw)

    @property
    def ready(self) -> bool:
        return self._shape is not None

    def observe(self, layer: nn.Module, args: tuple[Any, ...] | None) -> None:
        if not args or not isinstance(args[0], Tensor):
            return
        shape = sample_shape(args[0], self.geometry.nd)
        # Eval never changes state: a model trained at 32x32 keeps its 32x32 vectors when
        # evaluated at another size (the norm then is that of the training shape).
        if shape != self._shape and (self._shape is None or self.training):
            self.set_input_shape(shape, raw_tensor(layer, "weight"))

    def _allocate(self, shape: tuple[int, ...]) -> None:
        """Buffers and plan for inputs of `shape` (validated against the layer)."""
        out_shape = self.geometry.output_shape(shape, self.weight_shape)
        device, dtype = self.input_shape.device, self.u.dtype  # both follow model.to(...)
        self.input_shape = torch.tensor(shape, dtype=torch.long, device=device)
        self._shape = shape
        self._plan = symbol_plan(self.geometry, shape, self.weight_shape[2:])[:2]
        self.watch.reset()  # vectors or cached bound gradient belong to the old shape
        if not self.certified:
            self.u = start_vector(out_shape, dtype, device)
            self.v = start_vector(shape, dtype, device)

    def _forget_shape(self) -> None:
        """Back to 'no input seen' (loading a checkpoint saved before any forward)."""
        self.input_shape = self.input_shape.new_zeros(0)
        self.u, self.v = self.u.new_zeros(0), self.v.new_zeros(0)
        self.sigma_grad = self.sigma_grad.new_zeros(0)
        self._shape = self._plan = None
        self.watch.reset()

    def set_input_shape(self, shape: tuple[int, ...], raw: Tensor) -> None:
        """(Re)initialize for inputs of `shape` and warm up to convergence (host syncs
        are fine here: it happens once per shape, not per step)."""
        self._allocate(shape)
        if self.certified:
            return
        with torch.no_grad(), autocast_off(raw.device.type):
            w = raw.detach().to(compute_dtype(raw.dtype))
            self.set_vectors(*refresh_vectors(*self._maps(w), self.u, self.v, WARMUP_MAX_ITER, WARMUP_TOL, w.dtype))
        self._refresh_sigma_grad()
        self.mark_current(raw)

    def _refresh_sigma_grad(self) -> None:
        """sigma_grad = d<u, conv_W(v)>/dW, which depends on u and v only (the map is linear
        in W). Rebound, never written in place: graphs that saved the old one stay valid."""
        # inference_mode(False): a training-mode forward under torch.inference_mode() must
        # still be able to differentiate here (u, v, w are ordinary tensors).
        with torch.inference_mode(False), torch.enable_grad(), autocast_off(self.u.device.type):
            u, v = self.u.unsqueeze(0), self.v.unsqueeze(0)
            w = torch.zeros(self.weight_shape, dtype=u.dtype, device=u.device, requires_grad=True)
            (grad,) = torch.autograd.grad((u * self.geometry.forward(v, w)).sum(), w)
        self.sigma_grad = grad

    def _maps(self, w: Tensor):
        geometry, shape = self.geometry, self._shape
        return (lambda x: geometry.forward(x[None], w)[0]), (lambda y: geometry.adjoint(y[None], w, shape)[0])

    def forward(self, raw: Tensor) -> Tensor:
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
                if self.training and self.weight_changed(raw):
                    with torch.inference_mode(False), torch.no_grad():  # new vectors: normal tensors
                        self.set_vectors(*refresh_vectors(
                            *self._maps(w), self.u, self.v, self.n_iter, dtype=w.dtype
                        ))
                    self._refresh_sigma_grad()
                    self.mark_current(raw)
                # sigma = <u, conv_W(v)> = <sigma_grad, W>: linear in W, so one dot product
                # with the stored gradient replaces a conv over the whole input per forward.
                sigma = (as_dtype(self.sigma_grad, w.dtype) * w).sum()
            return as_dtype(normalize_by(w, sigma, self.bound, self.soft), raw.dtype)

    def _gram_bound(self, w: Tensor) -> Tensor:
        """Certified, differentiable upper bound on the conv's norm (fixed iterations)."""
        sizes, pad_norm = self._plan
        kernel = dense_kernel(w, self.geometry.groups, self.geometry.dilation)
        matrices = circular_symbol(kernel, self.geometry.stride, sizes)
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
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if self._shape is not None and not self.certified:
            self._refresh_sigma_grad()  # not saved: it is a function of the loaded u, v

    def options(self) -> dict:
        return {
            "operator": "conv", "n_iter": self.n_iter, "bound": self.bound, "soft": self.soft,
            "certified": self.certified, "input_shape": self._shape,
        }
