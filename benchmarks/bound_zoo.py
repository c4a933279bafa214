"""Certified upper and empirical lower Lipschitz bounds of torchvision's classifiers (random
weights, torch.manual_seed(0), eval mode, 1000 classes), with the seconds each took.

Per model: lk.lipschitz_bound(model, shape) (method gram: exact per-layer norms where the
dense matrix is small, Gram bounds elsewhere), as the plain product of every layer
(merge=False) and with consecutive linear layers merged (conv + eval BatchNorm folded: the
default), and
lk.lipschitz_lower_bound(model, 8 Gaussian inputs, 10 ascent steps); ratio = lower / upper
(1 would be a tight certificate). Models built from squeeze-and-excitation gating are listed
with the error lipkit gives them. Uses the torchvision shim of tests/torchvision_models.py.

A freshly built model's BatchNorms are identities (gamma 1, running variance 1), so folding
them changes nothing; --calibrate-bn N first runs N train-mode batches of 16 Gaussian
inputs with cumulative averaging (momentum None), so the running statistics are those of
real activations (per-channel variances spread over orders of magnitude, as in a trained
network); weights stay random.

lipkit's own trained models join the table as run folders (--runs, input shape --run-shape), read
the way `lipkit bound RUN` reads them.

    OMP_NUM_THREADS=1 python benchmarks/bound_zoo.py [--shape 3,32,32] [--calibrate-bn 8] [--runs RUN ...] \\
        [--out results/bound_zoo_cpu.md]
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

import lipkit as lk
from lipkit.cli.bound import load_model

MODELS = ("resnet18", "resnet50", "mobilenet_v2", "densenet121", "squeezenet1_0", "shufflenet_v2_x0_5",
          "efficientnet_b0", "mobilenet_v3_small", "regnet_y_400mf")


def calibrate_batchnorm(model: torch.nn.Module, shape: tuple[int, ...], batches: int) -> None:
    """Running statistics of real activations: `batches` train-mode forwards, cumulative mean."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    gen = torch.Generator().manual_seed(2)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(16, *shape, generator=gen))
    model.eval()


def measure(models, name: str, shape: tuple[int, ...], calibrate: int) -> str:
    torch.manual_seed(0)
    model = getattr(models, name)().eval()
    if calibrate:
        calibrate_batchnorm(model, shape, calibrate)
    return measure_model(model, name, shape)


def measure_model(model: torch.nn.Module, name: str, shape: tuple[int, ...]) -> str:
    """One table row: product and merged certified bounds, empirical lower bound, seconds."""
    uppers = []
    for merge in (False, True):
        began = time.perf_counter()
        try:
            uppers.append((lk.lipschitz_bound(model, shape, merge=merge).upper, time.perf_counter() - began))
        except lk.UnsupportedLayerError as err:
            reason = str(err).split("\n")[1].strip().split(":")[1].strip().split(" (")[0]
            return (f"| {name} | {'x'.join(map(str, shape))} | refused in {time.perf_counter() - began:.2f} s: "
                    f"{reason} | | | |")
    (product, product_s), (upper, upper_s) = uppers
    began = time.perf_counter()
    lower = lk.lipschitz_lower_bound(model, torch.randn(8, *shape, generator=torch.Generator().manual_seed(1)),
                                     steps=10)
    lower_s = time.perf_counter() - began
    return (f"| {name} | {'x'.join(map(str, shape))} | {product:.4g} ({product_s:.1f} s) | {upper:.4g} ({upper_s:.1f} s) "
            f"| {lower:.4g} ({lower_s:.1f} s) | {lower / upper:.2g} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="3,32,32")
    parser.add_argument("--models", nargs="*", default=list(MODELS), help="torchvision models (none: --runs only)")
    parser.add_argument("--calibrate-bn", type=int, default=0, metavar="N",
                        help="N train-mode batches to set BatchNorm running statistics first (0: as built)")
    parser.add_argument("--runs", nargs="*", default=[], metavar="RUN",
                        help="also lipkit train-clf / train-gan run folders (their trained models, as `lipkit bound`)")
    parser.add_argument("--run-shape", default="1,28,28", help="input shape of the --runs models (default 1,28,28)")
    parser.add_argument("--out", help="also write the table (markdown) here")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from torchvision_models import torchvision_models

    models = torchvision_models()
    shape = tuple(int(s) for s in args.shape.split(","))
    lines = [f"`{' '.join(['python', *sys.argv])}` on {platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} thread(s), torch {torch.__version__}", "",
             f"BatchNorm statistics: {f'calibrated on {args.calibrate_bn} batches' if args.calibrate_bn else 'as built'}",
             "",
             "| model | input | certified upper, product (time) | certified upper, merged (time) "
             "| empirical lower (time) | lower / merged upper |",
             "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name in args.models:
        lines.append(measure(models, name, shape, args.calibrate_bn))
        print(lines[-1], flush=True)
    run_shape = tuple(int(s) for s in args.run_shape.split(","))
    for run in args.runs:  # trained, so BatchNorm statistics (if any) are the run's own
        torch.manual_seed(0)
        lines.append(measure_model(load_model(run).eval(), f"lipkit run {run}", run_shape))
        print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
