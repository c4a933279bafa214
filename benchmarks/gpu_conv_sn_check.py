"""Does operator="conv" spectral normalization hold its bound on a GPU, with cuDNN's default TF32?

lipkit/norms/full_precision.py switches TF32 off around every refresh because, emulated on a
CPU (benchmarks/tf32_emulation.py), TF32 operands normalized layers to 1.9-79x their bound.
This checks it on real hardware: the contract test's critic (one conv + LeakyReLU + Linear,
WGAN loss, Adam lr 1e-3, betas (0, 0.9), batch 32) trains on the GPU with torch's default
precision settings (cuDNN convs in TF32), and after every step the weight the next forward
uses is copied to the CPU and measured in float64 (the tests' Lanczos oracle, no lipkit code;
without scipy a warm-started power iteration, which can only understate a breach).
Rows: lipkit as shipped, and lipkit with full_precision disabled (to see what it prevents).

    PYTHONPATH=. python benchmarks/gpu_conv_sn_check.py [--device cuda] [--steps 20]

On a CPU (--device cpu) it is a plumbing check only: there is no TF32 there.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

import lipkit as lk
from lipkit.norms import full_precision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
try:
    from test_conv_sn_contract import lanczos_norm  # float64 ARPACK oracle on the CPU (scipy, pytest)
    ORACLE = "ARPACK Lanczos, float64"
except ImportError:  # a device image without scipy or pytest
    lanczos_norm = None
    ORACLE = "power iteration, float64, 300 steps warm-started (a lower estimate: a breach it shows is real)"
POWER_STEPS = 300


def power_norm(probe: nn.Module, shape: tuple[int, ...], state: dict) -> float:
    """||probe|| (a bias-free float64 CPU layer) by power iteration on A^T A (autograd adjoint),
    warm-started from the previous call's vector: never above the true norm."""
    x = state.get("x", torch.randn(1, *shape, dtype=torch.float64))
    for _ in range(POWER_STEPS):
        x = (x / x.norm()).requires_grad_(True)
        y = probe(x)
        (x,) = torch.autograd.grad(y, x, y)
    state["x"] = x = x.detach()
    with torch.no_grad():
        return float(probe(x / x.norm()).norm())

LAYERS = {  # name: (factory, input shape)
    "Conv2d(3, 16, 3, 1, 1) at 3x16x16": (lambda: nn.Conv2d(3, 16, 3, 1, 1), (3, 16, 16)),
    "Conv2d(8, 16, 4, 2, 1) at 8x16x16": (lambda: nn.Conv2d(8, 16, 4, 2, 1), (8, 16, 16)),
    "Conv2d(32, 64, 4, 2, 1) at 32x32x32": (lambda: nn.Conv2d(32, 64, 4, 2, 1), (32, 32, 32)),
    "ConvTranspose2d(16, 8, 4, 2, 1) at 16x16x16": (lambda: nn.ConvTranspose2d(16, 8, 4, 2, 1), (16, 16, 16)),
    "reflect Conv2d(8, 16, 3, 1, 1) at 8x24x24": (lambda: nn.Conv2d(8, 16, 3, 1, 1, padding_mode="reflect"), (8, 24, 24)),
}


@contextlib.contextmanager
def guard_disabled():
    """full_precision() a no-op everywhere (the code before the fix): every guard, decorator
    included, asks full_precision._lowered which switches to turn off."""
    saved = full_precision._lowered
    full_precision._lowered = lambda device_type: []
    try:
        yield
    finally:
        full_precision._lowered = saved


def worst_excess(name: str, device: str, steps: int, seed: int) -> float:
    """Largest true norm / bound - 1 over registration and every training step."""
    factory, shape = LAYERS[name]
    torch.manual_seed(seed)
    layer = factory()
    width = layer(torch.zeros(1, *shape))[0].numel()
    critic = nn.Sequential(layer, nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(width, 1)).to(device)
    lk.constrain(critic, "spectral", where=type(layer), operator="conv")
    gen = torch.Generator().manual_seed(seed)
    real = (torch.randn(32, *shape, generator=gen) * 0.5 + 1.0).to(device)
    critic(real[:2])
    probe = factory().double()  # a plain CPU copy the oracle reads: the linear map, no bias
    probe.register_parameter("bias", None)
    power_state: dict = {}

    def excess() -> float:
        with torch.no_grad():
            probe.weight.copy_(layer.weight.detach().double().cpu())
        if lanczos_norm is not None:
            return lanczos_norm(probe, shape) - 1.0
        return power_norm(probe, shape, power_state) - 1.0

    worst = excess()
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.0, 0.9))
    for _ in range(steps):
        fake = torch.randn(32, *shape, generator=gen).to(device)
        loss = critic(fake).mean() - critic(real).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        worst = max(worst, excess())
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    backends = torch.backends
    switches = {"cudnn.conv": getattr(getattr(backends.cudnn, "conv", None), "fp32_precision", backends.cudnn.allow_tf32),
                "cuda.matmul": getattr(backends.cuda.matmul, "fp32_precision", backends.cuda.matmul.allow_tf32)}
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"{name}, torch {torch.__version__}, precision switches as torch set them: {switches}; oracle: {ORACLE}\n")
    print("| layer | seed | lipkit | full_precision disabled | seconds |\n|---|---|---|---|---|")
    for layer_name in LAYERS:
        for seed in (int(s) for s in args.seeds.split(",")):
            start = time.perf_counter()
            shipped = worst_excess(layer_name, args.device, args.steps, seed)
            with guard_disabled():
                unguarded = worst_excess(layer_name, args.device, args.steps, seed)
            print(f"| {layer_name} | {seed} | {shipped:+.1e} | {unguarded:+.1e} | {time.perf_counter() - start:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
