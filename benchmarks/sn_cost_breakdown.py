"""Where lipkit SN's extra step cost goes on issue 12's CPU overhead proxy (a width-2 DCGAN
critic at batch 4, one thread: a step is host overhead, as a GPU step at batch 64 is).

Four steps side by side, interleaved over rounds, medians, ratios to the plain step:
  none               the plain critic step
  sn                 lipkit's SN as shipped (every stale pair refreshed in one batch before
                     the critic's forward: constraints/spectral_batch.py)
  sn-per-layer       the same without that batch: each layer refreshes at its own read
  sn-no-refresh      SN with the once-per-update refresh of the top singular pair skipped
                     (the map sigma = <u v^T, W>, W / sigma and its backward remain)
  sn-one-kernel-map  SN's constraint modules with the map replaced by w * 1 (what the
                     parametrization and lipkit's per-read bookkeeping cost alone)
The differences split SN's cost into refresh, map and attachment; overhead_proxy.py's "floor"
row is the same attachment cost without lipkit's wrapper. A diagnostic: the last two rows
patch SpectralNormalization's methods while they are timed, so they are not usable SN.

    OMP_NUM_THREADS=1 python benchmarks/sn_cost_breakdown.py
"""
from __future__ import annotations

import argparse
import statistics

import torch

from lipkit.constraints.spectral import SpectralNormalization
from lipkit.constraints.spectral_batch import remove_refresh_hook
from lipkit.experiments.step_timing import batch_pair, build, make_step, time_steps

ROWS = ("none", "sn", "sn-per-layer", "sn-no-refresh", "sn-one-kernel-map")
PATCHES = {"sn-no-refresh": ("weight_changed", lambda self, raw: False),
           "sn-one-kernel-map": ("constrained", lambda self, raw: raw * 1.0)}


def timed(row: str, step, steps: int) -> float:
    name, patch = PATCHES.get(row, (None, None))
    saved = getattr(SpectralNormalization, name) if name else None
    if name:
        setattr(SpectralNormalization, name, patch)
    try:
        return time_steps(step, steps, 2, "cpu") * 1e3
    finally:
        if name:
            setattr(SpectralNormalization, name, saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    real, fake = batch_pair(4, "cpu")
    steps = {}
    for row in ROWS:
        critic, method = build("none" if row == "none" else "sn", 2, "cpu", real)
        if row != "sn":
            remove_refresh_hook(critic)  # the patched rows measure the per-layer path
        steps[row] = make_step("none" if row == "none" else "sn", (critic, method), real, fake)
    times: dict[str, list[float]] = {row: [] for row in ROWS}
    for _ in range(args.rounds):
        for row in ROWS:
            times[row].append(timed(row, steps[row], args.steps))
    plain = statistics.median(times["none"])
    print(f"torch {torch.__version__}, cpu, 1 thread; medians of {args.rounds} rounds of {args.steps} steps\n")
    print("| step | ms | x plain |\n|---|---|---|")
    for row in ROWS:
        print(f"| {row} | {statistics.median(times[row]):.2f} | {statistics.median(times[row]) / plain:.2f} |")


if __name__ == "__main__":
    main()
