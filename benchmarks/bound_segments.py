"""Certified bounds tighter than the product: lk.lipschitz_bound(method="segments") (the
Combettes-Pesquet segment expansion, lipkit/bounds/segments.py) beside the product of layer
norms (method="gram") and the empirical lower bound, with the seconds each took, on:
- random ReLU MLPs (He init, seed 0, width 256, 64-D input, 1 output) with 2, 4 and 8
  hidden layers;
- lipkit's own networks at random init: the WGAN MLP critic (width 512) and the
  classifier CNN on 1x28x28;
- trained train-gan critics given as run folders (--runs FOLDER ...; MLP critics on 2-D data).
ratio = lower / upper (1 would be a tight certificate).

    OMP_NUM_THREADS=1 python benchmarks/bound_segments.py [--runs RUN ...] [--out results/bound_segments_cpu.md]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

import lipkit as lk
from lipkit.models.networks import cnn_classifier, mlp_critic


def random_mlp(depth: int, width: int = 256, dim: int = 64) -> nn.Module:
    torch.manual_seed(0)
    layers, d = [], dim
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, 1))
    for m in layers:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return nn.Sequential(*layers).eval()


def trained_critic(folder: Path) -> nn.Module:
    from lipkit.experiments.common import load_gan_task
    from lipkit.train.gan import GanConfig

    saved = json.loads((folder / "config.json").read_text())
    fields = {k: tuple(v) if k == "betas" else v for k, v in saved.items() if k in GanConfig.__dataclass_fields__}
    return load_gan_task(GanConfig(**fields)).critic.eval()


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def measure(name: str, model: nn.Module, shape: tuple[int, ...]) -> list:
    product, t_product = timed(lambda: lk.lipschitz_bound(model, shape, "gram").upper)
    segments, t_segments = timed(lambda: lk.lipschitz_bound(model, shape, "segments").upper)
    torch.manual_seed(1)
    lower, t_lower = timed(lambda: float(lk.lipschitz_lower_bound(model, torch.randn(16, *shape))))
    row = [name, "x".join(map(str, shape)), f"{product:.4g} ({t_product:.2f} s)", f"{segments:.4g} ({t_segments:.2f} s)",
           f"{product / segments:.2f}x", f"{lower:.4g} ({t_lower:.1f} s)", f"{lower / product:.3f}",
           f"{lower / segments:.3f}"]
    print(" | ".join(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="*", default=[], help="train-gan run folders (MLP critics on 2-D data)")
    parser.add_argument("--out", default=None, help="markdown table here (default: print only)")
    args = parser.parse_args()
    rows = [measure(f"random ReLU MLP, {d} hidden x 256", random_mlp(d), (64,)) for d in (2, 4, 8)]
    torch.manual_seed(0)
    rows.append(measure("lipkit mlp_critic (random init)", mlp_critic(2, 512, 3).eval(), (2,)))
    torch.manual_seed(0)
    rows.append(measure("lipkit cnn_classifier (random init)", cnn_classifier((1, 28, 28), 10).eval(), (1, 28, 28)))
    for folder in map(Path, args.runs):
        rows.append(measure(f"trained critic {folder.name}", trained_critic(folder), (2,)))
    header = ["model", "input", "product (gram)", "segments", "product / segments", "empirical lower",
              "lower / product", "lower / segments"]
    table = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n" + "\n".join(
        "| " + " | ".join(r) + " |" for r in rows) + "\n"
    if args.out:
        Path(args.out).write_text(
            f"Command: `OMP_NUM_THREADS=1 python {' '.join(sys.argv)}`\n\nMachine: {platform.processor() or 'cpu'}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n\n" + table)
    print(table)


if __name__ == "__main__":
    main()
