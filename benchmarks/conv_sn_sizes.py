"""Does operator="conv" spectral normalization hold its bound at the layer sizes people train? (issue 11)

tests/test_conv_sn_contract.py checks the contract on small layers (dense Jacobian oracle) and
a few large regression cases. This sweep trains the contract's critic (one conv + LeakyReLU +
Linear, WGAN loss, Adam lr 1e-3, betas (0, 0.9), batch 32: train_and_measure) around the conv
layers of published critics and generators at their real input sizes, and measures the TRUE
norm of the weight each next training forward uses after EVERY step with the tests' ARPACK
Lanczos oracle (lanczos_norm: the conv in float64 through torch.nn.functional, its adjoint by
autograd, nothing of lipkit's; a Ritz value is never above the true norm, so a breach it shows
is real). The table gives the worst norm / bound - 1 over the steps per layer and seed; the
contract is <= 1e-3.

    OMP_NUM_THREADS=1 python benchmarks/conv_sn_sizes.py [--layers NAME,...] [--seeds 0,1,2] \
        [--steps 30] --out benchmarks/results/conv_sn_sizes_cpu.md

About 25 minutes for every layer at 3 seeds on one CPU thread (the 128-channel 32x32 layer
alone ~2 minutes a seed); --layers splits the set over processes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_conv_sn_contract as contract  # noqa: E402  (the contract's own training and oracle)

LAYERS = {  # name: (what it is, layer factory, input shape)
    "sngan-1": ("SN-GAN CIFAR critic", lambda: nn.Conv2d(3, 64, 3, 1, 1), (3, 32, 32)),
    "sngan-2": ("SN-GAN CIFAR critic", lambda: nn.Conv2d(64, 64, 4, 2, 1), (64, 32, 32)),
    "sngan-3": ("SN-GAN CIFAR critic", lambda: nn.Conv2d(64, 128, 3, 1, 1), (64, 16, 16)),
    "sngan-4": ("SN-GAN CIFAR critic", lambda: nn.Conv2d(128, 128, 4, 2, 1), (128, 16, 16)),
    "sngan-5": ("SN-GAN CIFAR critic", lambda: nn.Conv2d(128, 256, 3, 1, 1), (128, 8, 8)),
    "sngan-6": ("SN-GAN CIFAR critic", lambda: nn.Conv2d(256, 256, 4, 2, 1), (256, 8, 8)),
    "sngan-7": ("SN-GAN CIFAR critic", lambda: nn.Conv2d(256, 512, 3, 1, 1), (256, 4, 4)),
    "resnet-1": ("SN-GAN ResNet critic", lambda: nn.Conv2d(3, 128, 3, 1, 1), (3, 32, 32)),
    "resnet-2": ("SN-GAN ResNet critic", lambda: nn.Conv2d(128, 128, 3, 1, 1), (128, 16, 16)),
    "resnet-3": ("SN-GAN ResNet critic", lambda: nn.Conv2d(128, 128, 3, 1, 1), (128, 32, 32)),
    "dcgan64-1": ("64x64 DCGAN critic", lambda: nn.Conv2d(3, 64, 4, 2, 1), (3, 64, 64)),
    "dcgan64-2": ("64x64 DCGAN critic", lambda: nn.Conv2d(64, 128, 4, 2, 1), (64, 32, 32)),
    "dcgan64-3": ("64x64 DCGAN critic", lambda: nn.Conv2d(128, 256, 4, 2, 1), (128, 16, 16)),
    "dcgan64-4": ("64x64 DCGAN critic", lambda: nn.Conv2d(256, 512, 4, 2, 1), (256, 8, 8)),
    "dcgan32-2": ("width-16/32 DCGAN critic", lambda: nn.Conv2d(16, 32, 4, 2, 1), (16, 16, 16)),
    "dcgan32-3": ("width-32 DCGAN critic", lambda: nn.Conv2d(32, 64, 4, 2, 1), (32, 32, 32)),
    "gen-1": ("64x64 DCGAN generator", lambda: nn.ConvTranspose2d(128, 64, 4, 2, 1), (128, 16, 16)),
    "gen-2": ("64x64 DCGAN generator", lambda: nn.ConvTranspose2d(64, 3, 4, 2, 1), (64, 32, 32)),
    "gen-small": ("narrow generator", lambda: nn.ConvTranspose2d(16, 8, 4, 2, 1), (16, 16, 16)),
    "reflect": ("reflect padding", lambda: nn.Conv2d(16, 32, 3, 1, 1, padding_mode="reflect"), (16, 16, 16)),
    "replicate": ("replicate padding", lambda: nn.Conv2d(8, 16, 3, 1, 1, padding_mode="replicate"), (8, 24, 24)),
    "circular": ("circular padding", lambda: nn.Conv2d(32, 32, 3, 1, 1, padding_mode="circular"), (32, 16, 16)),
    "dilation2": ("dilation 2", lambda: nn.Conv2d(16, 16, 3, 1, 2, dilation=2), (16, 16, 16)),
    "groups4": ("groups 4", lambda: nn.Conv2d(16, 32, 3, 1, 1, groups=4), (16, 16, 16)),
    "audio-1": ("HiFi-GAN-style audio critic", lambda: nn.Conv1d(1, 16, 15, 1, 7), (1, 1024)),
    "audio-2": ("HiFi-GAN-style audio critic", lambda: nn.Conv1d(16, 32, 41, 4, 20, groups=4), (16, 512)),
    "audio-3": ("HiFi-GAN-style audio critic", lambda: nn.Conv1d(32, 64, 41, 4, 20, groups=16), (32, 256)),
    "audio-reflect": ("MelGAN-style first layer", lambda: nn.Conv1d(1, 16, 15, 1, 7, padding_mode="reflect"), (1, 1024)),
    "volume": ("3D critic", lambda: nn.Conv3d(8, 16, 4, 2, 1), (8, 8, 8, 8)),
}


def describe(layer: nn.Module, shape: tuple[int, ...]) -> str:
    return f"{layer!r} at {'x'.join(map(str, shape))}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default=",".join(LAYERS), help="comma-separated names (default: all)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names, seeds = args.layers.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [n for n in names if n not in LAYERS]
    if unknown:
        parser.error(f"unknown layer(s) {unknown}; known: {', '.join(LAYERS)}")
    rows = [f"torch {torch.__version__}, cpu, 1 thread; {args.steps} Adam steps per seed; worst "
            "true norm / bound - 1 over every step (Lanczos oracle)", "",
            "| layer | kind | " + " | ".join(f"seed {s}" for s in seeds) + " | seconds |",
            "|---|---|" + "---|" * (len(seeds) + 1)]
    print("\n".join(rows), flush=True)
    worst = 0.0
    for name in names:
        kind, factory, shape = LAYERS[name]
        contract.LARGE[name] = (factory, shape)  # train_and_measure looks layers up by name
        start, cells = time.perf_counter(), []
        for seed in seeds:
            _, during, _ = contract.train_and_measure(name, "conv", 1.0, seed=seed, steps=args.steps,
                                                      norm=contract.lanczos_norm)
            worst = max(worst, during - 1)
            cells.append(f"{during - 1:+.1e}")
        row = f"| {describe(factory(), shape)} | {kind} | " + " | ".join(cells) + f" | {time.perf_counter() - start:.0f} |"
        rows.append(row)
        print(row, flush=True)
    rows += ["", f"Worst: {worst:.1e} over the bound (the contract allows 1e-3)."]
    print(rows[-1])
    if args.out:
        Path(args.out).write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
