"""What the traced graph computes at the bound's input shape, found by running it on probe
batches: every tensor value's shape (one sample's, checked to follow the batch size) and dtype, and
the concrete arguments of each call of a copying function or a functional layer (F.pad,
F.interpolate, F.max_pool2d, ...: often computed from x.size(), as a U-Net pads to its skip's
size)."""
from __future__ import annotations

import torch
import torch.fx as fx

from .copying import FUNCTIONS as COPYING
from .copying import METHODS as COPYING_METHODS
from .functional_layers import FUNCTIONS as FUNCTIONAL_LAYERS

# Calls whose concrete arguments the rules read (function_rules._copying / _functional_layer)
RECORDED = frozenset((*COPYING, *COPYING_METHODS, *FUNCTIONAL_LAYERS))

# The graph is probed at two batch sizes: a value whose leading dim does not follow the
# batch size mixes samples (e.g. x - x.mean(0)) and has no per-sample Lipschitz constant.
PROBE_BATCHES = ("lipkit_shape", 2), ("lipkit_shape_alt", 3)


class ShapeRecorder(fx.Interpreter):
    """Runs the graph once on a probe batch and records every tensor value's shape (and dtype,
    under `key` + "_dtype"), and the arguments after the first that each call in RECORDED
    received (under `key` + "_call")."""

    def __init__(self, gm: fx.GraphModule, key: str):
        super().__init__(gm)
        self.key = key
        self.extra_traceback = False  # our message already names the layer

    def run_node(self, n: fx.Node):
        try:
            result = super().run_node(n)
        except RuntimeError as err:
            what = (f"layer {n.target!r} ({self.module.get_submodule(n.target)})"
                    if n.op == "call_module" else n.format_node())
            first_line = str(err).split("\n")[0]  # fx appends its own traceback notes
            raise ValueError(f"does not fit {what}: {first_line}") from None
        if isinstance(result, torch.Tensor):
            n.meta[self.key] = tuple(result.shape)
            n.meta[self.key + "_dtype"] = result.dtype
        if n.op in ("call_function", "call_method") and n.target in RECORDED:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            n.meta[self.key + "_call"] = (tuple(args[1:]), dict(kwargs))
        return result


def probe_shapes(gm: fx.GraphModule, shape: tuple[int, ...], like: torch.Tensor | None) -> None:
    """Run `gm` on zero batches of samples of `shape` (dtype and device of `like`, a parameter)."""
    for key, batch in PROBE_BATCHES:
        probe = torch.zeros((batch, *shape), dtype=like.dtype if like is not None else torch.float32,
                            device=like.device if like is not None else "cpu")
        try:
            ShapeRecorder(gm, key).run(probe)
        except ValueError as err:
            raise ValueError(f"input_shape {shape}: {err}") from None


def sample_shape(node: fx.Node) -> tuple[int, ...] | None:
    """One sample's shape of a tensor node (None for non-tensors); ValueError when the node's
    leading dim does not follow the batch size."""
    (key_a, batch_a), (key_b, batch_b) = PROBE_BATCHES
    a, b = node.meta.get(key_a), node.meta.get(key_b)
    if a is None:
        return None
    if len(a) == 0 or a[0] != batch_a or b is None or len(b) == 0 or b[0] != batch_b or a[1:] != b[1:]:
        raise ValueError(f"operation {node.format_node()} mixes the samples of a batch")
    return a[1:]


def recorded_call(node: fx.Node) -> tuple[tuple, dict]:
    """(arguments after the first, keyword arguments) a RECORDED call's node received, the
    same at both probes (ValueError otherwise: arguments that follow the batch size)."""
    (key_a, _), (key_b, _) = PROBE_BATCHES
    a, b = node.meta.get(key_a + "_call"), node.meta.get(key_b + "_call")
    if a is None or a != b:
        raise ValueError(f"its arguments differ with the batch size ({a} vs {b})")
    return a


def value_dtype(node: fx.Node) -> torch.dtype | None:
    """The dtype of a tensor node's value at the probe run (None for non-tensors)."""
    return node.meta.get(PROBE_BATCHES[0][0] + "_dtype")

