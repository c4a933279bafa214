"""The bound is of a per-sample function: a check, by running the graph, that no value mixes
the samples of a batch.

lipschitz_bound bounds x -> f(x) for ONE sample; an operation that mixes the samples of a batch
(a minibatch standard deviation feature, a softmax or a cumulative sum over dim 0, BatchNorm's
batch statistics) has no such constant. The rules refuse the mixing forms they know (reductions
and flips over the batch, arguments that follow the batch size: probe.py, copying.py), but a
rule a user registers for their own layer (lipkit.register_layer_bound) says nothing about
it. So the traced graph is also run twice on a batch of two samples whose first sample is the
same and whose second differs: a value whose first sample moves with the second sample's
input mixes the batch, and the first such operation in the graph is refused, whatever rule
bounds it.

Each value's first sample is kept as a fingerprint (its sum and the sum of its absolute
values, float64) compared to a relative 1e-5: an operation mixing in less than that can slip
through (the rules' own checks stay the first line). Both runs draw the same random numbers
(a layer sampling noise in eval mode would otherwise look like mixing), from a private seed:
the caller's random streams are left as they were.
"""
from __future__ import annotations

import torch
import torch.fx as fx

TOLERANCE = 1e-5  # relative change of a first sample's fingerprint that counts as mixing


class _FirstSampleFingerprints(fx.Interpreter):
    """Runs the graph on a batch of 2 and keeps, for every floating-point tensor value whose
    leading dim is the batch, (sum, sum of |.|) of its first sample."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.extra_traceback = False
        self.prints: dict[fx.Node, torch.Tensor] = {}

    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        if isinstance(result, torch.Tensor) and result.dim() and result.shape[0] == 2 and result.is_floating_point():
            first = result[0].detach().double()
            self.prints[n] = torch.stack((first.sum(), first.abs().sum()))
        return result


def _fingerprints(gm: fx.GraphModule, batch: torch.Tensor) -> dict[fx.Node, torch.Tensor]:
    devices = [batch.device] if batch.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        recorder = _FirstSampleFingerprints(gm)
        recorder.run(batch)
    return recorder.prints


def check_samples_independent(gm: fx.GraphModule, shape: tuple[int, ...], like: torch.Tensor | None) -> None:
    """ValueError naming the first operation of `gm` whose value for one sample changes with
    another sample's input (samples of `shape`, dtype and device of `like`, a parameter)."""
    gen = torch.Generator().manual_seed(0)
    first, second, other = (torch.randn((1, *shape), generator=gen, dtype=torch.float64) for _ in range(3))
    dtype = like.dtype if like is not None and like.is_floating_point() else torch.float32
    device = like.device if like is not None else "cpu"
    base = _fingerprints(gm, torch.cat([first, second]).to(device, dtype))
    moved = _fingerprints(gm, torch.cat([first, 2 * other + 1]).to(device, dtype))
    nodes = [n for n in base if n in moved]  # graph order
    if not nodes:
        return
    a, b = torch.stack([base[n] for n in nodes]), torch.stack([moved[n] for n in nodes])  # (nodes, 2)
    scale = TOLERANCE * (a[:, 1:].abs() + b[:, 1:].abs()) / 2
    differ = ~((a == b) | ((a - b).abs() <= scale) | (a.isnan() & b.isnan())).all(dim=1)  # (isclose's rules)
    if bool(differ.any()):  # one host read for the whole graph
        node = nodes[int(differ.nonzero()[0])]
        what = (f"layer {node.target!r} ({gm.get_submodule(node.target)})" if node.op == "call_module"
                else f"operation {node.format_node()}")
        raise ValueError(f"{what} mixes the samples of a batch: its output for one sample changed when another "
                         "sample's input did, so it has no per-sample Lipschitz constant")
