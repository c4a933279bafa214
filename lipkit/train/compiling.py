"""--compile: torch.compile a run's models in place (issue 12), or say in one line why not.

Each model is compiled in place (compile_in_place), so its state_dict keys, its checkpoints
and `--resume` are those of an eager run (and --compile may change on resume).
What breaks the graph inside a model constrained by lipkit is documented in the README
(tests/test_compile.py counts it): nothing for sn and lipnet's maps, one eager call per layer
for sn-conv and certified SN. The first steps pay the compile; later ones reuse it.

Refused before anything is built:
- a method with a penalty that differentiates a gradient (gp, gp1, sn+gp, torch-sn+gp for
  critics; igp, wgnp for classifiers): compiled graphs have no double backward
  (AOTAutograd), so the penalty's backward would fail at the first step;
- a torch that cannot compile on this device (no C++ compiler for inductor's CPU code, no
  Triton for CUDA): a tiny function is compiled and run once to find out, and the error
  names the cause instead of failing deep in the first training step.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..constraints.spectral_batch import refresh_ahead, refresh_in_graph
from ..methods import AppliedMethod


def check_compilable(method: AppliedMethod, device: torch.device) -> None:
    """ValueError (one line) when --compile cannot work for this method or on this device."""
    if method.double_backward:
        raise ValueError(f"--compile cannot train method {method.name!r}: its penalty "
                         f"{', '.join(method.double_backward)} differentiates a gradient (double backward), which "
                         "torch.compile does not support; run it without --compile")
    probe_compiler(device)


def probe_compiler(device: torch.device) -> None:
    """Compile and run a one-line function on `device`; ValueError naming the failure if it fails.
    (No dynamo reset first: that would throw away every other compiled model of the process.)"""

    def double(x: torch.Tensor) -> torch.Tensor:
        return x * 2 + 1

    try:
        torch.compile(double)(torch.ones(2, device=device))
    except Exception as err:  # noqa: BLE001 - any failure means "cannot compile here"
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"--compile: torch {torch.__version__} cannot compile on {device} "
                         f"({type(err).__name__}: {first}); run without --compile") from None


BACKEND = "inductor"  # torch.compile's default; tests swap in aot_eager (no C++ build)


def compile_in_place(model: nn.Module) -> None:
    """torch.compile `model`'s calls, in place (state_dict, hooks and attributes unchanged).

    Not nn.Module.compile(): that hands dynamo Module._call_impl itself, whose file is on
    dynamo's skip list, so for a model whose class lives in torch.nn (nn.Sequential, every
    lipkit critic) the top frame is skipped and nothing is compiled but the user code inside
    it, frame by frame (torch 2.13; pytorch#150915): lipnet's weight maps compiled one per
    weight shape until dynamo's recompile limit, and the plain critic not at all. A function
    of this file that calls _call_impl is a frame dynamo traces, and it inlines the rest.

    Each model's function gets a code object of its own: dynamo keeps its graphs, and its
    recompile limit (8), per code object, and one shared `call` made every model compiled in a
    process share 8 graphs (a critic's two SN graphs, a generator's, their eval / no_grad
    variants: past 8, dynamo ran the rest eagerly with one warning; the overhead proxy's fifth
    compiled critic ran eagerly)."""

    def call(sn_refresh, /, *args, **kwargs):  # (positional-only: a model keyword of that name passes through)
        refresh_in_graph(sn_refresh)  # the exact SN pairs due (refresh_ahead), before the layers read them
        return model._call_impl(*args, **kwargs)

    call.__code__ = call.__code__.replace()  # a copy: its own dynamo cache
    model._compiled_call_impl = CompiledCall(model, torch.compile(call, backend=BACKEND))


class CompiledCall:
    """What a model compiled in place runs instead of its eager call.

    Around the graph, spectral normalization's pairs are refreshed once per update, not at
    every read: the first call after an update refreshes them at the start of its graph, the
    others read the stored ones (spectral_batch.refresh_ahead tests which are stale, eagerly).
    It is kept where nn.Module.compile keeps its own, `_compiled_call_impl`, which torch's
    Module.__getstate__ drops: a copy or a pickle of the model is an eager model of its own
    (lk.lipschitz_lower_bound deep-copies a model to float64; the copy must not run the
    original's float32 graph)."""

    def __init__(self, model: nn.Module, compiled) -> None:
        self.model, self.compiled = model, compiled

    def __call__(self, *args, **kwargs):
        with refresh_ahead(self.model) as refresh:
            return self.compiled(refresh, *args, **kwargs)


def compile_models(*models: nn.Module) -> None:
    """torch.compile each model in place (forward only; state_dict unchanged)."""
    for model in models:
        compile_in_place(model)
