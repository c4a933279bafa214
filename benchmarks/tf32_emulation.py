"""Why lipkit computes norms at full float32 precision (lipkit/norms/full_precision.py).

On NVIDIA GPUs cuDNN runs float32 convs in TF32 by default (a 10-bit mantissa: tensor cores
read the operands' top 13 bits of mantissa less), and torch.set_float32_matmul_precision
("high") does the same for matmuls. This emulates that on a CPU: inside operator="conv"
spectral normalization's refresh only (lipkit's ConvGeometry forward and adjoint), every
float32 operand is truncated (or rounded) to TF32 before the conv, and the contract test's
training (tests/test_conv_sn_contract.py: train_and_measure, 20 Adam steps) reports the TRUE
norm / bound - 1 (dense float64 oracle) right after registration and the worst over the
steps. The refresh's Rayleigh-Ritz assumes its Krylov images are linear in their inputs;
with TF32 operands they are not, and the normalization is wrong by factors, not digits.
full_precision() switches TF32 off around every refresh, so on a GPU the refresh sees
IEEE float32 (tests/test_full_precision.py checks the switches where the work happens).

    OMP_NUM_THREADS=1 python benchmarks/tf32_emulation.py [--modes none truncate round]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from lipkit.norms import operators

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_conv_sn_contract as contract  # noqa: E402  (the contract's own training and oracle)

LOW_BITS = 13  # float32's 23 mantissa bits less TF32's 10


def tf32(t: torch.Tensor, mode: str) -> torch.Tensor:
    """t with its float32 values cut to TF32 (the gradient passes straight through)."""
    if mode == "none" or t.dtype != torch.float32:
        return t
    bits = t.detach().view(torch.int32)
    if mode == "round":
        bits = bits + (1 << (LOW_BITS - 1))
    cut = (bits & ~((1 << LOW_BITS) - 1)).view(torch.float32)
    return t + (cut - t).detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["none", "truncate", "round"])
    parser.add_argument("--layers", default="conv2d,stride2,conv1d,transpose2d,reflect,circular")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    forward, adjoint = operators.ConvGeometry.forward, operators.ConvGeometry.adjoint
    print("| operands in the refresh | layer | seed | after registration | worst step |\n|---|---|---|---|---|")
    for mode in args.modes:
        operators.ConvGeometry.forward = lambda self, x, w, m=mode: forward(self, tf32(x, m), tf32(w, m))
        operators.ConvGeometry.adjoint = lambda self, y, w, s, m=mode: adjoint(self, tf32(y, m), tf32(w, m), s)
        try:
            for name in args.layers.split(","):
                for seed in (0, 1):
                    before, during, _ = contract.train_and_measure(name, "conv", 1.0, seed=seed, steps=args.steps)
                    print(f"| {mode} | {name} | {seed} | {before - 1:+.1e} | {during - 1:+.1e} |", flush=True)
        finally:
            operators.ConvGeometry.forward, operators.ConvGeometry.adjoint = forward, adjoint


if __name__ == "__main__":
    main()
