"""Where a critic step's time goes on a GPU, and how long the --full GAN runs will take.

1. Per mode (none = plain, torch-sn, sn, sn-conv, gp, sn+gp) at the anchor's
   critic (width 64, B=64): CUDA kernels per step and GPU-busy milliseconds (torch.profiler)
   next to the wall-clock step: the gap between them is host-side overhead (ANCHORS.md found
   torch's SN is overhead-bound: 652 kernels, 3.4 ms busy of 20.8 ms wall).
2. Training-step time (no evaluation: POT is absent on the device) of the --full GAN
   configurations of `lipkit reproduce`, so the README can state the full run's GPU time.

    PYTHONPATH=. python benchmarks/gpu_probe.py [--device cuda]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from lipkit.experiments.step_timing import batch_pair, build, make_step, sync, time_steps

PROBE_MODES = ("none", "torch-sn", "sn", "sn-conv", "gp", "sn+gp")


def probe(mode: str, device: str, width: int = 64, batch: int = 64, steps: int = 50) -> str:
    real, fake = batch_pair(batch, device)
    step = make_step(mode, build(mode, width, device, real), real, fake)
    for _ in range(10):
        step()
    sync(device)
    activity = ProfilerActivity.CUDA if device.startswith("cuda") else ProfilerActivity.CPU
    with profile(activities=[activity]) as prof:
        step()
        sync(device)
    events = prof.key_averages()
    kernels = sum(e.count for e in events if e.device_type.name == activity.name)
    busy_ms = sum(e.self_device_time_total for e in events) / 1e3
    wall = statistics.median(time_steps(step, steps, 0, device) for _ in range(3)) * 1e3
    return f"| {mode} | {wall:.2f} | {kernels} | {busy_ms:.2f} | {wall - busy_ms:.2f} |"


def gan_step_seconds(device: str, steps: int = 30) -> list[str]:
    """Seconds per generator step (n_critic critic steps + 1 generator step) of --full configs."""
    from lipkit.train.gan import GanConfig, GanTask, resolve_config

    rows = []
    cases = [("gaussians25", "gp", 512, False, 10), ("gaussians25", "sn", 512, False, 10),
             ("gaussians8", "sn-project", 512, False, 10), ("rings", "gp", 256, True, 100),
             ("rings", "sn", 256, True, 100), ("digits", "gp", 64, False, 10), ("digits", "sn", 64, False, 10)]
    for data, critic, width, conditional, classes in cases:
        config = resolve_config(GanConfig(data=data, critic=critic, width=width, conditional=conditional,
                                          classes=classes, device=device, progress=False))
        task = GanTask(config)
        for s in range(1, 4):
            task.train_step(s)
        sync(device)
        began = time.perf_counter()
        for s in range(4, 4 + steps):
            task.train_step(s)
        sync(device)
        seconds = (time.perf_counter() - began) / steps
        rows.append(f"| {data}{' conditional K=' + str(classes) if conditional else ''} | {critic} | {width} | "
                    f"{seconds * 1e3:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the script runs (any device)")
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"torch {torch.__version__} on {name}\n")
    sizes = dict(width=4, batch=4, steps=1) if args.smoke else {}
    print("| mode (width 64, B=64) | wall ms/step | CUDA kernels/step | GPU busy ms | host overhead ms |")
    print("|---|---|---|---|---|")
    for mode in PROBE_MODES:
        print(probe(mode, args.device, **sizes), flush=True)
    print("\n| data | critic | width | ms per generator step (training only) |\n|---|---|---|---|")
    for row in gan_step_seconds(args.device, steps=1 if args.smoke else 30):
        print(row, flush=True)


if __name__ == "__main__":
    main()
