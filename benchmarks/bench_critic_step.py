"""Cost of one WGAN critic step under each Lipschitz method, as ratios to a plain step.

The critic is the DCGAN-style network of ../shared/anchors/gpu_anchor_bench.py (7 convs up
to 8*width channels + linear, 32x32x3 inputs, Adam). One step = D(fake).mean() -
D(real).mean() [+ lambda * penalty], backward, optimizer step [, projection]. Modes are
interleaved over repeats so machine drift hits all alike; the table reports the median
ms/step of the repeats and its ratio to the plain step measured in the same run.

    python benchmarks/bench_critic_step.py                 # CPU-sized defaults
    python benchmarks/bench_critic_step.py --width 64 --batch 64 256 --steps 100   # GPU (anchor)
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm as torch_sn

import lipkit as lk
from lipkit.examples import dcgan_critic

MODES = (
    "plain", "clip", "torch-sn", "lipkit-sn", "lipkit-sn-conv",
    "gp", "gp1", "lipkit-sn+gp", "torch-sn+gp",
)
GP_LAMBDA = 10.0


def build(mode: str, width: int, device: str, real: torch.Tensor) -> nn.Module:
    critic = dcgan_critic(width=width).to(device)
    if mode.startswith("torch-sn"):
        for m in critic.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                torch_sn(m)
    elif mode.startswith("lipkit-sn-conv"):
        lk.constrain(critic, "spectral", operator="conv")
        critic(real[:1])  # the conv operator learns its input shape from a first forward
    elif mode.startswith("lipkit-sn"):
        lk.constrain(critic, "spectral")
    elif mode == "clip":
        lk.constrain(critic, "clip", mode="project", c=0.01)
    return critic


def make_step(mode: str, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor):
    opt = torch.optim.Adam(critic.parameters(), 2e-4, betas=(0.0, 0.9))
    with_gp = mode in ("gp", "gp1") or mode.endswith("+gp")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = critic(fake).mean() - critic(real).mean()
        if with_gp:
            loss = loss + GP_LAMBDA * lk.gradient_penalty(critic, real, fake, one_sided=mode == "gp1")
        loss.backward()
        opt.step()
        if mode == "clip":
            lk.project_(critic)

    return step


def time_mode(mode: str, width: int, batch: int, steps: int, warmup: int, device: str) -> float:
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    fake = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    critic = build(mode, width, device, real)
    step = make_step(mode, critic, real, fake)
    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=32, help="critic base width (anchor: 64)")
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"torch {torch.__version__} on {name}; critic width {args.width}; median of {args.repeats} "
          f"interleaved repeats of {args.steps} steps\n")
    results = {}
    for batch in args.batch:
        times: dict[str, list[float]] = {m: [] for m in args.modes}
        for _ in range(args.repeats):
            for mode in args.modes:
                times[mode].append(time_mode(mode, args.width, batch, args.steps, args.warmup, args.device))
        base = statistics.median(times["plain"]) if "plain" in times else None
        print(f"| mode (B={batch}) | ms/step | x plain |\n|---|---|---|")
        for mode in args.modes:
            med = statistics.median(times[mode])
            ratio = f"{med / base:.2f}" if base else "-"
            print(f"| {mode} | {med * 1e3:.1f} | {ratio} |")
            results[f"B{batch}_{mode}"] = med
        print()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": name, "torch": torch.__version__, "width": args.width, "ms": results}, fh, indent=1)


if __name__ == "__main__":
    main()
