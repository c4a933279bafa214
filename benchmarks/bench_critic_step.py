"""Cost of one WGAN critic step under each Lipschitz method, as ratios to a plain step.

The critic is the DCGAN-style network of the GPU anchor benchmark
(benchmarks/anchors/gpu_anchor_bench.py: 7 convs up to 8*width channels + linear, 32x32x3
inputs, Adam). One step = D(fake).mean() - D(real).mean() [+ lambda * penalty], backward,
optimizer step [, projection]. Modes are interleaved over repeats so machine drift hits all
alike; the table reports the median ms/step of the repeats and its ratio to the plain step
measured in the same run. The timing is lipkit.experiments.step_timing (also `lipkit bench`).

    python benchmarks/bench_critic_step.py                 # CPU-sized defaults
    python benchmarks/bench_critic_step.py --width 64 --batch 64 256 --steps 100   # GPU (anchor)
"""
from __future__ import annotations

import argparse
import sys

from lipkit.cli.bench import add_bench_arguments, cmd_bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_bench_arguments(parser)
    return cmd_bench(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
