"""One constrained weight per weight update: the reads of a training step share it.

A WGAN critic step reads each constrained weight two or three times (D(real), D(fake), the
gradient penalty's D(x_interp)), and torch.nn.utils.parametrize re-runs the constraint at
every read: the map's kernels forward, and as many copies of its backward. The map is a
function of the raw weight alone (its power-iteration state is refreshed once per update,
norms/power_state.py), so the value computed at the first read of an update is the value
of every later read: reusing it is exact, and the backward then runs through the map once
with the reads' gradients summed (the chain rule's own order; the same numbers up to
rounding). On the CPU overhead proxy of issue 12 this cut lipkit SN's extra step cost by
about half; for Bjorck and AOL (lipnet) the map itself is the expensive part.

When a kept value is reused: training mode, grad mode on, the raw weight requires grad, and
the key matches (the raw tensor's in-place version and data pointer). When it is
dropped: the first backward that reaches it (its graph is freed there, so the next read
builds a fresh one: a second forward after backward, e.g. two generator steps in a row,
never hits a freed graph), a checkpoint load or a new input shape (Constraint.forget_reuse).
Not kept: eval mode, reads under no_grad / inference_mode (no graph to share) and under
torch.compile (the compiled graph does its own common-subexpression work and would
otherwise guard on Python state).

A weight changed through `.data` does not bump its version (PyTorch's rule), so an update
written that way between two training-mode grad reads WITHOUT a backward between them is
not seen (finite-difference checks such as torch.autograd.gradcheck do this: run them in
eval mode, or set the constraint's reuse_within_update = False). Optimizers, lk.project_
and load_state_dict write in place under no_grad and are seen.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..norms.power_state import tensors_key


class StepReuse:
    """The last grad-mode constrained value of one weight, while it is valid."""

    __slots__ = ("key", "value", "raw")

    def __init__(self) -> None:
        self.key = self.value = self.raw = None

    # A kept value is a non-leaf tensor of the current step: copies and pickles (deepcopy of
    # a model, torch.save(model)) start empty instead (deepcopy refuses non-leaf tensors).
    def __deepcopy__(self, memo) -> "StepReuse":
        return StepReuse()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.drop()

    def drop(self, _grad: Tensor | None = None) -> None:
        """Forget the kept value (also the backward hook: its graph is being consumed)."""
        self.key = self.value = self.raw = None

    def get(self, raw: Tensor, training: bool, compute: Callable[[Tensor], Tensor]) -> Tensor:
        """compute(raw), or the value kept for this raw value and mode."""
        if not (training and torch.is_grad_enabled() and raw.requires_grad) or torch.compiler.is_compiling():
            return compute(raw)
        key = tensors_key((raw,))
        if key == self.key:
            return self.value
        value = compute(raw)
        if value.requires_grad:
            # raw is referenced so its memory cannot come back under the same data pointer
            self.key, self.value, self.raw = key, value, raw
            value.register_hook(self.drop)
        return value
