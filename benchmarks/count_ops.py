"""Top-level aten ops per WGAN critic step, per mode, as the difference to the first mode.

A CPU proxy for a GPU's kernel launches per step (a GPU critic step is launch-bound; see
benchmarks/README.md): on 2026-11-26 its ranking matched the H200's kernel counts, so use it
to compare implementations before spending device time.

    python benchmarks/count_ops.py none torch-sn sn
"""
from __future__ import annotations

import sys
from collections import Counter

from torch.profiler import ProfilerActivity, profile

from lipkit.experiments.step_timing import batch_pair, build, make_step
from lipkit.methods import method_names


def top_level_ops(mode: str) -> Counter:
    real, fake = batch_pair(4, "cpu")
    step = make_step(mode, build(mode, 4, "cpu", real), real, fake)
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return Counter(e.name for e in prof.events() if e.cpu_parent is None)


def main() -> None:
    modes = sys.argv[1:] or ["none", "torch-sn", "sn"]
    unknown = [m for m in modes if m not in method_names("critic")]
    if unknown:
        raise SystemExit(f"unknown mode(s) {unknown}; choose critic methods from {method_names('critic')}")
    counts = {m: top_level_ops(m) for m in modes}
    base = counts[modes[0]]
    for mode in modes[1:]:
        diff = {k: v - base.get(k, 0) for k, v in counts[mode].items() if v != base.get(k, 0)}
        extra = sum(counts[mode].values()) - sum(base.values())
        print(f"{mode}: {extra:+d} ops vs {modes[0]}; largest: "
              f"{sorted(diff.items(), key=lambda kv: -kv[1])[:12]}")


if __name__ == "__main__":
    main()
