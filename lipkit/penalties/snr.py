"""Spectral norm regularization (Yoshida & Miyato 2017, arXiv 1705.10941; eq. SNR).

    penalty = sum over layers of sigma(W)^2,   sigma = u^T W v

sigma is the top singular value of the weight reshaped to (shape[dim], -1) (dim 1 for
ConvTranspose: the SN-GAN / torch convention; NOT the conv operator's norm). (u, v) come
from power iteration and are held fixed in the graph, so d sigma / dW = u v^T and
d sigma^2 / dW = 2 sigma u v^T, the known gradient.

Where the power-iteration state lives (a design decision):
- On each layer, as two NON-PERSISTENT buffers (`_spectral_penalty_u`, `_spectral_penalty_v`),
  kept up to date by the scheme spectral normalization uses (lipkit/norms/power_state.py:
  an UpdateWatch says when, refresh_vectors says how, the buffers are rebound, never written).
  So there is no module-level state; the vectors follow model.to(device) / .double(); DDP
  broadcasts them like any buffer; and because they are not in model.state_dict(),
  checkpoints of the model stay loadable by a model that never used the penalty (and the
  other way round).
- Exact resume is through the small stateful object SpectralPenalty(model): its
  state_dict() / load_state_dict() save and restore exactly those buffers, plus whether each
  weight had changed since its vectors last moved. Load the MODEL first, then the penalty
  (loading a model's state writes its weights in place, which counts as a change).
- The functional spectral_penalty(model) uses the same buffers, so the two views agree.

Cost: the first call on a layer warms up to convergence (reads sigma on the host to stop);
later calls advance (u, v) by n_iter rounds only when the weight changed since the last
advance (the tensors' in-place version counters and data pointers, so no host sync), i.e.
once per optimizer step however many times the penalty is evaluated.
Writes through `weight.data` bypass the version counter and go unseen: change weights
under torch.no_grad() (as optimizers do) or by assigning a new Parameter.

Measured (one run: the tests' Linear+Conv2d+ConvTranspose2d model, SGD lr=0.01, 50
steps): with lambda=0.01 the 1-round estimate stays within 1e-5 of the exact sigma. A
penalty strong enough to flatten the top of the spectrum makes it lag BELOW sigma (worst
6% at lambda=0.1, 41% at lambda=1; 26% with n_iter=3): the estimate is always a lower
bound, and SNR with a large lambda*lr under-penalizes.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ..norms.linalg import start_vector
from ..norms.measure import weight_matrix
from ..norms.power_state import WARMUP_MAX_ITER, WARMUP_TOL, UpdateWatch, refresh_vectors
from .layers import WeightedLayer, Where, select_layers

U_BUFFER = "_spectral_penalty_u"
V_BUFFER = "_spectral_penalty_v"
WATCH_ATTR = "_spectral_penalty_watch"  # the layer's UpdateWatch: what (u, v) are current for


def spectral_penalty(model: nn.Module, n_iter: int = 1, where: Where = None) -> Tensor:
    """sum of sigma(W)^2 over the selected layers (eq. SNR), differentiable in the weights.

    n_iter: power-iteration rounds per weight change after the warm-up (1 as in SN-GAN:
    the weights move little per step, so warm-started vectors stay converged).
    The vectors are kept on the layers between calls (see the module docs); use
    SpectralPenalty(model) to save and restore them with a checkpoint.
    """
    _check_n_iter(n_iter)
    return torch.stack([_sigma(layer, n_iter).pow(2) for layer in select_layers(model, where)]).sum()


class SpectralPenalty:
    """spectral_penalty(model) as an object whose power-iteration state can be checkpointed.

    penalty = SpectralPenalty(model, n_iter=1); loss = task + lam * penalty()
    checkpoint["spectral_penalty"] = penalty.state_dict()
    ... model.load_state_dict(ckpt["model"]); penalty.load_state_dict(ckpt["spectral_penalty"])
    """

    def __init__(self, model: nn.Module, n_iter: int = 1, where: Where = None) -> None:
        _check_n_iter(n_iter)
        select_layers(model, where)  # validates model and where now, not at the first step
        self.model = model
        self.n_iter = n_iter
        self.where = where

    def __call__(self) -> Tensor:
        return spectral_penalty(self.model, self.n_iter, self.where)

    def sigmas(self) -> dict[str, Tensor]:
        """Current sigma estimate per layer name, detached, WITHOUT advancing anything."""
        out = {}
        for layer in select_layers(self.model, self.where):
            u, v = getattr(layer.module, U_BUFFER, None), getattr(layer.module, V_BUFFER, None)
            if u is not None:
                w = weight_matrix(layer.weight.detach(), layer.dim).to(u.dtype)
                out[layer.name] = u @ w @ v
        return out

    def state_dict(self) -> dict:
        """{"n_iter", "layers": {name: {"u", "v", "stale"}}} for the layers warmed up so far.

        stale: the weight changed after (u, v) last moved, so the next call must advance.
        """
        layers = {}
        for layer in select_layers(self.model, self.where):
            m = layer.module
            if getattr(m, U_BUFFER, None) is None:
                continue
            layers[layer.name] = {
                "u": getattr(m, U_BUFFER).detach().clone(),
                "v": getattr(m, V_BUFFER).detach().clone(),
                "stale": not _watch(m).is_current(),
            }
        return {"n_iter": self.n_iter, "layers": layers}

    def load_state_dict(self, state: dict) -> None:
        """Restore the vectors saved by state_dict() (load the model's weights first)."""
        if not isinstance(state, dict) or "layers" not in state:
            raise ValueError("state must be a dict from SpectralPenalty.state_dict() (no 'layers' key)")
        by_name = {layer.name: layer for layer in select_layers(self.model, self.where)}
        unknown = sorted(set(state["layers"]) - set(by_name))
        if unknown:
            raise ValueError(f"state names layers {unknown} that this penalty does not read; it reads {sorted(by_name)}")
        for name, entry in state["layers"].items():
            layer = by_name[name]
            m, w = layer.module, weight_matrix(layer.weight.detach(), layer.dim)
            u, v = entry["u"], entry["v"]
            if tuple(u.shape) != (w.shape[0],) or tuple(v.shape) != (w.shape[1],):
                raise ValueError(
                    f"state for layer {name!r} has u {tuple(u.shape)}, v {tuple(v.shape)}; its "
                    f"reshaped weight is {tuple(w.shape)}, so expected ({w.shape[0]},), ({w.shape[1]},)"
                )
            _store(m, u.to(w.device), v.to(w.device))
            if entry["stale"]:
                _watch(m).reset()
            else:
                _watch(m).mark(layer.sources())
        self.n_iter = state.get("n_iter", self.n_iter)


def _sigma(layer: WeightedLayer, n_iter: int) -> Tensor:
    """sigma = u^T W v for one layer, after warming up or advancing (u, v) as needed."""
    m = layer.module
    w = weight_matrix(layer.weight, layer.dim)
    # Iterate in at least float32: fp16 power iteration loses the top direction.
    work = torch.promote_types(w.dtype, torch.float32)
    with torch.no_grad():
        wd = w.detach().to(work)
        forward, adjoint = (lambda x: torch.mv(wd, x)), (lambda y: torch.mv(wd.T, y))
        u, v = getattr(m, U_BUFFER, None), getattr(m, V_BUFFER, None)
        if u is None or tuple(u.shape) != (wd.shape[0],) or tuple(v.shape) != (wd.shape[1],):
            u0, v0 = start_vector((wd.shape[0],), work, wd.device), start_vector((wd.shape[1],), work, wd.device)
            _store(m, *refresh_vectors(forward, adjoint, u0, v0, WARMUP_MAX_ITER, WARMUP_TOL, work))
            _watch(m).mark(layer.sources())
        elif _watch(m).changed(layer.sources()):
            _store(m, *refresh_vectors(forward, adjoint, u, v, n_iter, dtype=work))
            _watch(m).mark(layer.sources())
    # The buffers are rebound at each advance, never written in place, so this call's graph
    # never sees a later call's update (two evaluations before one backward, torch #66363).
    u, v = getattr(m, U_BUFFER), getattr(m, V_BUFFER)
    return u.to(w.dtype) @ w @ v.to(w.dtype)


def _store(m: nn.Module, u: Tensor, v: Tensor) -> None:
    """Rebind the layer's non-persistent buffers to (u, v) (registering them on first use)."""
    m.register_buffer(U_BUFFER, u.detach(), persistent=False)
    m.register_buffer(V_BUFFER, v.detach(), persistent=False)


def _watch(m: nn.Module) -> UpdateWatch:
    """The layer's UpdateWatch for its penalty vectors (created on first use)."""
    watch = m.__dict__.get(WATCH_ATTR)
    if watch is None:
        watch = UpdateWatch()
        setattr(m, WATCH_ATTR, watch)
    return watch


def _check_n_iter(n_iter: int) -> None:
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"n_iter must be an int >= 1 (power-iteration rounds per weight change), got {n_iter!r}")
