"""The CPU proxy of a GPU critic step's host overhead (issue 12), with and without step reuse.

A width-2 DCGAN critic (7 convs of 2-16 channels + a linear on 32x32x3) at batch 4 and one
thread does almost no arithmetic, so a step is Python + dispatcher + autograd bookkeeping:
what bounds a GPU critic step at batch 64 (benchmarks/results/h200_2026-11-26: GPU busy
3.3 ms of ~14 ms); issue 12 found its ratios in the H200 table's order.

Each mode is timed twice per round on the same critic: with every lipkit constraint sharing
one constrained weight per update between the step's reads (lipkit/constraints/step_reuse.py,
the default) and re-running the map at every read (torch's parametrize behaviour), back to
back, interleaved with the plain step; the table reports medians over the rounds and their
ratio to the plain step's median (torch-sn and gp have no lipkit constraint: their two
columns differ by noise only, which shows how much of a difference means something).

The row "floor" is the plain critic with a one-kernel map (w * 1) registered through
torch.nn.utils.parametrize on every conv and linear, as lk.constrain registers its maps
(DESIGN.md: use parametrize): what any reparametrization costs on this proxy before its map
does any work, i.e. the lowest ratio a parametrized SN can reach here.

Rows marked [compiled] time the same step with the critic compiled in place as train-gan
--compile does (lipkit/train/compiling.py; the optimizer step stays eager); gp and sn+gp have
no compiled row: their penalty differentiates a gradient, which torch.compile cannot do. A
compiled row's ratio is to the compiled plain step. Under compile lipkit keeps no value between
reads (step_reuse.py) and SN's pairs are refreshed once per update, at the start of the first
graph call after it (spectral_batch.refresh_in_graph), so a compiled row's two columns measure
the same thing.

    OMP_NUM_THREADS=1 python benchmarks/overhead_proxy.py --out benchmarks/results/overhead_proxy_cpu.md
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from lipkit.constraints.base import Constraint
from lipkit.experiments.step_timing import COMPILED, batch_pair, build, make_step, time_steps
from lipkit.train.compiling import compile_in_place

FLOOR = "floor"  # the plain critic with a one-kernel parametrization on every weight
EAGER = ["none", FLOOR, "sn", "torch-sn", "sn-conv", "gp", "sn+gp", "lipnet"]
COMPILED_MODES = [m + COMPILED for m in ("none", FLOOR, "sn", "torch-sn", "lipnet")]  # no double backward
WIDTH = 2  # lipnet's GroupSort needs an even channel count


class OneKernelMap(nn.Module):
    """w -> w * 1: a reparametrization whose map is a single kernel (and its backward)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * 1.0


def build_floor(real: torch.Tensor, compiled: bool):
    critic, method = build("none", WIDTH, "cpu", real)
    for layer in critic.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            parametrize.register_parametrization(layer, "weight", OneKernelMap())
    if compiled:
        compile_in_place(critic)  # as train-gan --compile
    return critic, method


def make(mode: str, real: torch.Tensor, fake: torch.Tensor):
    """The step closure of `mode` (floor: the plain step's method on the parametrized critic)."""
    name = mode.removesuffix(COMPILED)
    if name == FLOOR:
        suffix = mode[len(name):]  # "" or COMPILED
        return make_step("none" + suffix, build_floor(real, bool(suffix)), real, fake)
    return make_step(mode, build(mode, WIDTH, "cpu", real), real, fake)


def run(rounds: int, steps: int, modes: list[str]) -> dict[tuple[str, bool], list[float]]:
    """ms per step of every (mode, reuse), modes and settings interleaved in each round."""
    real, fake = batch_pair(4, "cpu")
    built = {m: make(m, real, fake) for m in modes}
    times: dict[tuple[str, bool], list[float]] = {(m, r): [] for m in modes for r in (True, False)}
    try:
        for _ in range(rounds):
            for mode in modes:
                for reuse in (True, False):
                    Constraint.reuse_within_update = reuse
                    times[mode, reuse].append(time_steps(built[mode], steps, 2, "cpu") * 1e3)
    finally:
        Constraint.reuse_within_update = True
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per mode per round (default 10)")
    parser.add_argument("--no-compiled", dest="compiled", action="store_false",
                        help="eager rows only (the compiled rows compile five critics first, ~1 min)")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    modes = EAGER + (COMPILED_MODES if args.compiled else [])
    med = {k: statistics.median(v) for k, v in run(args.rounds, args.steps, modes).items()}
    lines = [f"torch {torch.__version__}, cpu, 1 thread; width-{WIDTH} DCGAN critic, batch 4; medians of "
             f"{args.rounds} interleaved rounds of {args.steps} steps", "",
             "| mode | ms/step, reuse | x plain | ms/step, every read | x plain |", "|---|---|---|---|---|"]
    for m in modes:
        plain = med["none" + m[len(m.removesuffix(COMPILED)):], True]  # compiled rows: to the compiled plain step
        lines.append(f"| {m} | {med[m, True]:.1f} | {med[m, True] / plain:.2f} | {med[m, False]:.1f} | "
                     f"{med[m, False] / plain:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
