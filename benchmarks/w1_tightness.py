"""How close each critic gets to the exact Wasserstein-1 distance (issue 13): fixed pairs of 2-D
samples, each critic trained ALONE (no generator) on them, full batch, and its estimate
E f(real) - E f(fake) divided by the exact W1 of the two samples (lipkit.metrics.wasserstein1,
an optimal assignment).

A 1-Lipschitz critic can reach at most the exact W1 (Kantorovich-Rubinstein duality on the
empirical measures), so est / W1 measures how much of the dual the critic class can express:
SN + ReLU loses gradient norm wherever units switch off (Anil, Lucas & Grosse 2019); a
GroupSort + orthonormal critic (lipnet) should not. GP constrains the gradient only softly,
so its critic may exceed 1-Lipschitz: every row also gives est / (certified bound * W1),
a certified lower estimate (f / L is 1-Lipschitz).

Pairs: 8 and 25 Gaussians (lipkit's toy sets) vs the output of a fixed untrained generator
(lipkit's toy generator, seed 0, N(0, I) noise), and the swiss roll vs N(0, I). Every critic
is lipkit's toy MLP (--depth hidden layers, default 3, --width) with the method's toy preset (lipkit.train.presets:
its penalty weights), trained with one optimizer for all: Adam lr --lr, betas (0.5, 0.9),
--steps full-batch steps.

    OMP_NUM_THREADS=1 python benchmarks/w1_tightness.py [--width 128] [--steps 2000] [--out results/w1_tightness_cpu.md]
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

import lipkit as lk
from lipkit.data import make_dataset
from lipkit.methods import apply_method
from lipkit.metrics.points import wasserstein1
from lipkit.models import mlp_critic, mlp_generator
from lipkit.train.gan import critic_update
from lipkit.train.presets import preset_defaults

METHODS = ("lipnet", "sn", "gp", "gp:gp_lambda=10", "clip")
PAIRS = ("gaussians8 vs generator", "gaussians25 vs generator", "swissroll vs N(0, I)")


def samples(pair: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    name = pair.split()[0]
    real = make_dataset(name).sample(n, gen)[0]
    if pair.endswith("generator"):
        torch.manual_seed(0)
        g = mlp_generator(2, 2, 512, 3).eval()
        with torch.no_grad():
            fake = g(torch.randn(n, 2, generator=gen), None)
    else:
        fake = torch.randn(n, 2, generator=gen)
    return real, fake


def train_critic(method: str, real: torch.Tensor, fake: torch.Tensor, width: int, steps: int,
                 lr: float, depth: int = 3) -> tuple[float, float, float]:
    """(estimate, certified bound, seconds) of a critic trained alone on (real, fake).
    method: a critic method name, optionally with preset overrides: "gp:gp_lambda=10"."""
    name, *overrides = method.split(":")
    hp = preset_defaults(name, toy=True)
    for item in overrides:
        key, value = item.split("=")
        hp[key] = type(hp[key])(value)
    torch.manual_seed(1)
    critic = mlp_critic(2, width, depth)
    applied = apply_method(critic, name, hp, "critic")
    optimizer = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.9))
    rng = torch.Generator().manual_seed(2)
    began = time.perf_counter()
    critic.train()
    for _ in range(steps):
        critic_update(critic, optimizer, applied, real, fake, None, rng)
    seconds = time.perf_counter() - began
    critic.eval()
    with torch.no_grad():
        estimate = float(critic(real).mean() - critic(fake).mean())
    return estimate, lk.lipschitz_bound(critic, (2,)).upper, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=3, help="hidden layers of the toy MLP critic")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n", type=int, default=512, help="points per side")
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help="critic methods, each optionally with preset overrides, e.g. gp:gp_lambda=10")
    parser.add_argument("--pairs", nargs="+", type=int, default=list(range(len(PAIRS))),
                        help=f"which pairs (indices into {PAIRS})")
    parser.add_argument("--out", help="also write the table (markdown) here")
    args = parser.parse_args()
    lines = [f"`{' '.join(['python', *sys.argv])}` on {platform.machine()}, {torch.get_num_threads()} thread(s), "
             f"torch {torch.__version__}", "",
             "| pair | exact W1 | critic | est / W1 | certified bound L | est / (L W1) | train s |",
             "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for pair in [PAIRS[i] for i in args.pairs]:
        real, fake = samples(pair, args.n)
        exact = wasserstein1(real, fake)
        for method in args.methods:
            estimate, bound, seconds = train_critic(method, real, fake, args.width, args.steps, args.lr, args.depth)
            lines.append(f"| {pair} | {exact:.4f} | {method} | {estimate / exact:.3f} | {bound:.4g} "
                         f"| {estimate / (bound * exact):.3f} | {seconds:.0f} |")
            print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
