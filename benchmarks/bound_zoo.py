"""Certified upper and empirical lower Lipschitz bounds of torchvision's classifiers (random
weights, torch.manual_seed(0), eval mode, 1000 classes), with the seconds each took.

Per model: lk.lipschitz_bound(model, shape) (method gram: exact per-layer norms where the
dense matrix is small, Gram bounds elsewhere, every layer multiplied) and
lk.lipschitz_lower_bound(model, 8 Gaussian inputs, 10 ascent steps); ratio = lower / upper
(1 would be a tight certificate). Models built from squeeze-and-excitation gating are listed
with the error lipkit gives them. Uses the torchvision shim of tests/torchvision_models.py.

    OMP_NUM_THREADS=1 python benchmarks/bound_zoo.py [--shape 3,32,32] [--out results/bound_zoo_cpu.md]
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

import lipkit as lk

MODELS = ("resnet18", "resnet50", "mobilenet_v2", "densenet121", "squeezenet1_0", "shufflenet_v2_x0_5",
          "efficientnet_b0", "mobilenet_v3_small", "regnet_y_400mf")


def measure(models, name: str, shape: tuple[int, ...]) -> str:
    torch.manual_seed(0)
    model = getattr(models, name)().eval()
    began = time.perf_counter()
    try:
        upper = lk.lipschitz_bound(model, shape).upper
    except lk.UnsupportedLayerError as err:
        reason = str(err).split("\n")[1].strip().split(":")[1].strip().split(" (")[0]
        return f"| {name} | {'x'.join(map(str, shape))} | refused in {time.perf_counter() - began:.2f} s: {reason} | | |"
    upper_s = time.perf_counter() - began
    began = time.perf_counter()
    lower = lk.lipschitz_lower_bound(model, torch.randn(8, *shape, generator=torch.Generator().manual_seed(1)),
                                     steps=10)
    lower_s = time.perf_counter() - began
    return (f"| {name} | {'x'.join(map(str, shape))} | {upper:.4g} ({upper_s:.1f} s) | {lower:.4g} ({lower_s:.1f} s) "
            f"| {lower / upper:.2g} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="3,32,32")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--out", help="also write the table (markdown) here")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from torchvision_models import torchvision_models

    models = torchvision_models()
    shape = tuple(int(s) for s in args.shape.split(","))
    lines = [f"`{' '.join(['python', *sys.argv])}` on {platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} thread(s), torch {torch.__version__}", "",
             "| model | input | certified upper (time) | empirical lower (time) | lower / upper |",
             "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name in args.models:
        lines.append(measure(models, name, shape))
        print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
