"""How fast lk.lipschitz_bound certifies ResNet-18 at 3x224x224 (issue 15's target: < 30 s on
a 2-core CPU), and where the per-conv time went:
- per distinct conv of ResNet-18 at 224: the conv's frequency symbol, then its certified
  bound two ways side by side: Gram iteration to convergence (gram_iteration_bound, what
  "gram" did before) and its limit reached directly (max_top_singular_value: one Gram per
  frequency, a Cholesky certificate); both values, both times;
- the whole network (torchvision resnet18, random weights, seed 0, eval) with 1 and 2 threads.
Uses the torchvision shim of tests/torchvision_models.py.

    python benchmarks/bound_speed.py [--out benchmarks/results/bound_speed_cpu.md]
    python benchmarks/bound_speed.py --device cuda --network-only   # issue 15's GPU target: < 1 s
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

import lipkit as lk
from lipkit.norms.conv_symbol import build_symbol
from lipkit.norms.linalg import gram_iteration_bound, max_top_singular_value

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from torchvision_models import torchvision_models  # noqa: E402

CONVS = [(nn.Conv2d(3, 64, 7, 2, 3), (3, 224, 224)), (nn.Conv2d(64, 64, 3, 1, 1), (64, 56, 56)),
         (nn.Conv2d(64, 128, 3, 2, 1), (64, 56, 56)), (nn.Conv2d(128, 128, 3, 1, 1), (128, 28, 28)),
         (nn.Conv2d(256, 256, 3, 1, 1), (256, 14, 14)), (nn.Conv2d(256, 512, 3, 2, 1), (256, 14, 14)),
         (nn.Conv2d(512, 512, 3, 1, 1), (512, 7, 7))]


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def per_conv_rows() -> list[str]:
    torch.set_num_threads(1)
    rows = []
    for conv, shape in CONVS:
        torch.manual_seed(0)
        conv.reset_parameters()
        sym, t_sym = timed(lambda: build_symbol(conv, shape))
        old, t_old = timed(lambda: float(gram_iteration_bound(sym.matrices).max()))
        new, t_new = timed(lambda: max_top_singular_value(sym.matrices))
        rows.append(f"| {conv.in_channels}->{conv.out_channels} k{conv.kernel_size[0]} s{conv.stride[0]} | "
                    f"{'x'.join(map(str, shape))} | {tuple(sym.matrices.shape)} | {t_sym:.2f} | {old:.10g} ({t_old:.2f} s) "
                    f"| {new:.10g} ({t_new:.2f} s) | {t_old / t_new:.1f}x |")
        print(rows[-1], flush=True)
    return rows


def network_rows(device: str = "cpu") -> list[str]:
    models = torchvision_models()
    rows = []
    for threads in (1, 2) if device == "cpu" else (torch.get_num_threads(),):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = models.resnet18().eval().to(device)

        def bound() -> float:
            value = lk.lipschitz_bound(model, (3, 224, 224)).upper
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return value
        if device.startswith("cuda"):
            bound()  # the first CUDA call pays the context and kernel loading
        value, seconds = timed(bound)
        rows.append(f"| resnet18 | 3x224x224 | {device} | {threads} | {value:.6g} | {seconds:.2f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="markdown here (default: print only)")
    parser.add_argument("--device", default="cpu", help="where the whole-network bound runs (the per-conv rows: cpu)")
    parser.add_argument("--network-only", action="store_true", help="skip the per-conv rows")
    args = parser.parse_args()
    convs = [] if args.network_only else per_conv_rows()
    network = network_rows(args.device)
    text = (f"Command: `python {' '.join(sys.argv)}` on {platform.machine()}, torch {torch.__version__}\n\n"
            "Per conv (1 thread; seconds to build the symbol, then each certified bound of its max):\n\n"
            "| conv | input | symbol (freqs, rows, cols) | symbol s | Gram iteration | limit + Cholesky | speed-up |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(convs) + "\n\nWhole network, lk.lipschitz_bound (gram):\n\n"
            "| model | input | device | threads | certified upper | seconds |\n|---|---|---|---|---|---|\n"
            + "\n".join(network) + "\n")
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
