"""What the third refresh round of reflect / replicate padding costs per training step (issue 11).

operator="conv" spectral normalization runs conv_refresh.update_rounds() refresh rounds per
weight update: 2 for zero and circular padding, BORDER_UPDATE_ROUNDS = 3 for reflect and
replicate (with 2, a replicate layer went over its bound: see conv_refresh.py). This times a
critic step (one conv + LeakyReLU + Linear, batch 64, Adam) of such a layer with 2 and with 3
rounds, alternating, and prints the medians and their ratio.

    OMP_NUM_THREADS=1 python benchmarks/border_rounds_cost.py [--steps 15] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

import lipkit as lk
import lipkit.constraints.conv_refresh as conv_refresh

LAYERS = {  # name: (layer factory, input shape)
    "replicate 8->16 at 8x24x24": (lambda: nn.Conv2d(8, 16, 3, 1, 1, padding_mode="replicate"), (8, 24, 24)),
    "reflect 32->32 at 32x32x32": (lambda: nn.Conv2d(32, 32, 3, 1, 1, padding_mode="reflect"), (32, 32, 32)),
}


def median_step_seconds(rounds: int, factory, shape: tuple[int, ...], steps: int) -> float:
    """Median seconds of a training step after 3 warm steps, with `rounds` refresh rounds."""
    conv_refresh.BORDER_UPDATE_ROUNDS = rounds  # read at every update by update_rounds()
    torch.manual_seed(0)
    layer = factory()
    width = layer(torch.zeros(1, *shape))[0].numel()
    critic = nn.Sequential(layer, nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(width, 1))
    lk.constrain(critic, "spectral", where=type(layer), operator="conv")
    x = torch.randn(64, *shape)
    critic(x[:2])  # learns the input shape and warms up
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = critic(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shipped = conv_refresh.BORDER_UPDATE_ROUNDS
    print("| layer | 2 rounds (ms) | 3 rounds (ms) | ratio |\n|---|---|---|---|")
    for name, (factory, shape) in LAYERS.items():
        runs: dict[int, list[float]] = {2: [], 3: []}
        for _ in range(args.repeats):  # alternating, so drift hits both alike
            for rounds in runs:
                runs[rounds].append(median_step_seconds(rounds, factory, shape, args.steps))
        two, three = statistics.median(runs[2]), statistics.median(runs[3])
        print(f"| {name} | {two * 1e3:.1f} | {three * 1e3:.1f} | {three / two:.2f}x |", flush=True)
    conv_refresh.BORDER_UPDATE_ROUNDS = shipped


if __name__ == "__main__":
    main()
