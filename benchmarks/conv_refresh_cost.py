"""What operator="conv" SN's once-per-update refresh costs, in forwards of the layer it normalizes.

Issue 11 asked for a refresh costing "at most one extra forward-sized operation per update in
the common case", and for a bound that holds at every training step. The refresh that holds
the bound (lipkit/constraints/conv_refresh.py: the symbol's ranked modes, a Krylov space of
depth n_iter + 2 over ~19 start vectors, then a thick restart 3 blocks deeper) is far above
that budget; every cheaper schedule measured broke the bound (conv_refresh_schedules.py). This
script prints how far, per layer of the DCGAN critic of `lipkit bench` (7 convs, 32x32x3
inputs), next to the layer's own forward on a training batch: the refresh is timed as the
layer's constraint runs it at each update (its weight nudged first, so the warm ranking and the
carried vectors are those of a training run), split into the symbol's ranking, the mode
vectors, the first Rayleigh-Ritz round and the restarts, and the time both rounds spend in the
conv and its adjoint (the rest of a round is its orthonormalization and Ritz problem).

    OMP_NUM_THREADS=1 python benchmarks/conv_refresh_cost.py [--width 32] [--batch 64] [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch
import torch.nn as nn

import lipkit as lk
import lipkit.constraints.conv_refresh as conv_refresh
from lipkit.constraints.conv import ConvSpectralNormalization
from lipkit.models.examples import dcgan_critic
from lipkit.norms.operators import ConvGeometry

PARTS = ("ranking", "modes", "round 1", "restarts", "convs")  # convs: the conv / adjoint calls of both rounds
_spent: dict[str, float] = defaultdict(float)
_krylov_calls = [0]  # Krylov calls in the current refresh: the first is round 1, the rest restarts


def _timed(part: str, fn):
    """fn, adding its wall time to _spent[part] (the refresh's own functions, looked up by name)."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _spent[part] += time.perf_counter() - start
    return wrapper


def _instrument() -> None:
    conv_refresh.rank_modes = _timed("ranking", conv_refresh.rank_modes)
    conv_refresh.mode_vectors = _timed("modes", conv_refresh.mode_vectors)
    ConvGeometry.forward = _timed("convs", ConvGeometry.forward)
    ConvGeometry.adjoint = _timed("convs", ConvGeometry.adjoint)
    krylov = conv_refresh.krylov_top_pair

    def krylov_part(*args, **kwargs):
        part = "round 1" if _krylov_calls[0] == 0 else "restarts"
        _krylov_calls[0] += 1
        return _timed(part, krylov)(*args, **kwargs)

    conv_refresh.krylov_top_pair = krylov_part


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    critic = dcgan_critic(width=args.width)
    lk.constrain(critic, "spectral", operator="conv")
    x = torch.randn(args.batch, 3, 32, 32)
    inputs: dict[nn.Module, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs.__setitem__(m, a[0].detach()))
             for m in critic.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        critic(x)  # learns each conv's input shape (and warms its refresh up), records its input
    for h in hooks:
        h.remove()
    _instrument()
    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} thread(s); DCGAN critic width {args.width}, "
          f"batch {args.batch}; medians of {args.repeats}\n")
    print("| layer | input | forward at batch (ms) | refresh (ms) | refresh / forward | "
          + " | ".join(f"{p} (ms)" for p in PARTS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(PARTS))
    totals = defaultdict(float)
    for layer, inp in inputs.items():
        sn = layer.parametrizations.weight[0]
        assert isinstance(sn, ConvSpectralNormalization)
        raw = layer.parametrizations.weight.original
        with torch.no_grad():
            plain = [p.detach() for p in (raw, layer.bias)]
            forward_ms = _median_ms(lambda: torch.nn.functional.conv2d(
                inp, plain[0], plain[1], layer.stride, layer.padding, layer.dilation, layer.groups), args.repeats)
        per_part: dict[str, list[float]] = defaultdict(list)
        refresh: list[float] = []
        for _ in range(args.repeats + 1):
            with torch.no_grad():
                raw.add_(1e-3 * raw.abs().mean() * torch.randn_like(raw))  # an update's worth of change
            _spent.clear()
            _krylov_calls[0] = 0
            start = time.perf_counter()
            sn._refresh(raw.detach(), sn.depth, conv_refresh.update_rounds(sn.geometry))
            refresh.append((time.perf_counter() - start) * 1e3)
            for p in PARTS:
                per_part[p].append(_spent[p] * 1e3)
        refresh_ms = statistics.median(refresh[1:])
        parts = [statistics.median(per_part[p][1:]) for p in PARTS]
        totals["forward"] += forward_ms
        totals["refresh"] += refresh_ms
        name = f"Conv2d({layer.in_channels}, {layer.out_channels}, {layer.kernel_size[0]}, {layer.stride[0]})"
        print(f"| {name} | {'x'.join(map(str, inp.shape[1:]))} | {forward_ms:.1f} | {refresh_ms:.1f} | "
              f"{refresh_ms / forward_ms:.1f} | " + " | ".join(f"{p:.1f}" for p in parts) + " |", flush=True)
    print(f"| all convs | | {totals['forward']:.1f} | {totals['refresh']:.1f} | "
          f"{totals['refresh'] / totals['forward']:.1f} |" + " |" * len(PARTS))


if __name__ == "__main__":
    main()
