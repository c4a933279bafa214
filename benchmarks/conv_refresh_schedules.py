"""Can operator="conv" spectral normalization refresh less than fully at every update? (issue 11)

The library refreshes fully after every update (lipkit/constraints/conv_refresh.py: carried
vectors + the symbol's top modes, Krylov depth n_iter + 2, then a deeper restart); the light
schedules below replace the whole update's refresh. Cheaper schedules are run here on
the contract test's geometries (tests/test_conv_sn_contract.py: the same small critic, Adam lr
1e-3, betas (0, 0.9), WGAN loss) and the TRUE norm of the weight each next forward uses is
measured after every step (dense Jacobian): the worst norm / bound - 1 over steps and seeds
is how far the schedule lets a layer exceed its bound. Below 1e-3 keeps the contract.

    OMP_NUM_THREADS=1 python benchmarks/conv_refresh_schedules.py [--steps 60] [--seeds 0,1,2]

Schedules: "full" (the library); "carried dN / full every K": between full refreshes,
Rayleigh-Ritz over the carried vectors alone with N Krylov blocks (no symbol ranking: ~1/3
of the cost at N = 1); "modes, d1": the full refresh's start block at Krylov depth 1.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from lipkit.constraints.conv import ConvSpectralNormalization
from lipkit.constraints.conv_refresh import ritz_refresh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_conv_sn_contract import DENSE_SPECTRUM, GEOMETRIES, train_and_measure  # noqa: E402  (the contract's own)

GEOMETRIES = {**GEOMETRIES, **DENSE_SPECTRUM}

SCHEDULES = {  # name: (Krylov depth between full refreshes or None, full every K, full depth or None)
    "full": (None, 1, None),
    "carried d1 / full every 4": (1, 4, None),
    "carried d3 / full every 4": (3, 4, None),
    "modes, d1": (None, 1, 1),
}


def light_refresh(c: ConvSpectralNormalization, w: torch.Tensor, depth: int) -> torch.Tensor:
    """Rayleigh-Ritz over the carried vectors (v, runners) and `depth` Krylov blocks."""
    sigma, u, v, runners = ritz_refresh(c.geometry, c._shape, w, torch.cat(c._carried(w)), depth)
    c.runner_vectors = runners.to(c.runner_vectors.dtype)
    c.set_vectors(u, v)
    return sigma


def apply_schedule(c: ConvSpectralNormalization, schedule: str, clock: list[float]) -> None:
    """Replace the constraint's per-update refresh (an instance attribute: the warm-up is over)."""
    light_depth, every, full_depth = SCHEDULES[schedule]
    full, count = c._refresh, [0]

    def refresh(w: torch.Tensor, depth: int, rounds: int = 1) -> torch.Tensor:
        start = time.perf_counter()
        light = light_depth is not None and count[0] % every != 0
        count[0] += 1
        sigma = light_refresh(c, w, light_depth) if light else full(w, full_depth or depth, rounds)
        clock.append(time.perf_counter() - start)
        return sigma

    c._refresh = refresh


def worst_excess(name: str, schedule: str, seed: int, steps: int) -> tuple[float, list[float]]:
    """(worst norm / bound - 1 over the steps, seconds of each refresh): the contract test's
    training with the schedule swapped in after the warm-up."""
    clock: list[float] = []
    _, during, _ = train_and_measure(
        name, "conv", 1.0, seed, steps,
        prepare=lambda layer: apply_schedule(layer.parametrizations.weight[0], schedule, clock))
    return max(during - 1, 0.0), clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--schedules", nargs="*", default=list(SCHEDULES), choices=list(SCHEDULES))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"worst true norm / bound - 1 over {args.steps} Adam steps x seeds {seeds} "
          "(the weight each next forward uses; > 1e-3 breaks the contract)\n")
    print("| geometry | " + " | ".join(args.schedules) + " |\n|---|" + "---|" * len(args.schedules))
    times: dict[str, list[float]] = {s: [] for s in args.schedules}
    for name in GEOMETRIES:
        cells = []
        for schedule in args.schedules:
            worst = 0.0
            for seed in seeds:
                excess, clock = worst_excess(name, schedule, seed, args.steps)
                worst = max(worst, excess)
                times[schedule].extend(clock)
            cells.append(f"**{worst:.1e}**" if worst > 1e-3 else f"{worst:.1e}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    full = sum(times["full"]) / max(1, len(times["full"])) if "full" in times else None
    if full:
        print("| mean refresh time / full's | " + " | ".join(
            f"{sum(t) / max(1, len(t)) / full:.2f}" for t in times.values()) + " |")


if __name__ == "__main__":
    main()
