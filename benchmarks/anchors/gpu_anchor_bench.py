# ruff: noqa: E401, I001 -- copied unchanged from ../shared/anchors/gpu_anchor_bench.py (the PyTorch-only GPU anchor of ANCHORS.md)
"""Anchor timings: cost of Lipschitz methods per WGAN critic step, using only
PyTorch's own tools (no project code). Prints one line per mode with the
median ms/step and the ratio to an unconstrained step, measured in one run."""
import sys, time, json, torch, torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm as sn_param
from torch.nn.utils import spectral_norm as sn_hook

dev = "cuda" if torch.cuda.is_available() else "cpu"
torch.backends.cudnn.benchmark = True

def critic(wrap):
    w = wrap or (lambda m: m)
    chans = [(3, 64, 3, 1), (64, 128, 4, 2), (128, 128, 3, 1), (128, 256, 4, 2),
             (256, 256, 3, 1), (256, 512, 4, 2), (512, 512, 3, 1)]
    layers = []
    for cin, cout, k, s in chans:
        layers += [w(nn.Conv2d(cin, cout, k, s, 1)), nn.LeakyReLU(0.1)]
    layers += [nn.Flatten(), w(nn.Linear(512 * 4 * 4, 1))]
    return nn.Sequential(*layers).to(dev)

def make_step(D, opt, mode, real, fake):
    B = real.shape[0]
    def step():
        opt.zero_grad(set_to_none=True)
        loss = D(fake).mean() - D(real).mean()
        if mode in ("gp", "lp", "sn+gp"):
            eps = torch.rand(B, 1, 1, 1, device=dev)
            x = (eps * real + (1 - eps) * fake).requires_grad_(True)
            g, = torch.autograd.grad(D(x).sum(), x, create_graph=True)
            gn = g.flatten(1).norm(dim=1)
            pen = torch.relu(gn - 1) ** 2 if mode == "lp" else (gn - 1) ** 2
            loss = loss + 10 * pen.mean()
        loss.backward()
        opt.step()
        if mode == "clip":
            with torch.no_grad():
                for p in D.parameters():
                    p.clamp_(-0.01, 0.01)
    return step

def bench(mode, B, n):
    wrap = {"sn": sn_param, "sn+gp": sn_param, "sn_hook": sn_hook}.get(mode)
    D = critic(wrap)
    opt = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.0, 0.9))
    real = torch.randn(B, 3, 32, 32, device=dev)
    fake = torch.randn(B, 3, 32, 32, device=dev)
    step = make_step(D, opt, mode, real, fake)
    for _ in range(10):
        step()
    if dev == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        step()
    if dev == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / n

def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {name}")
    modes = ["plain", "clip", "sn", "sn_hook", "gp", "lp", "sn+gp"]
    out = {}
    for B in (64, 256):
        res = {m: [] for m in modes}
        for _ in range(3):           # interleave modes so drift hits all alike
            for m in modes:
                res[m].append(bench(m, B, n))
        base = sorted(res["plain"])[1]
        for m in modes:
            med = sorted(res[m])[1]
            out[f"B{B}_{m}"] = med
            print(f"B={B:4d} {m:8s} {med*1e3:8.3f} ms/step  x{med/base:5.2f} vs plain")
    print(json.dumps(out))

if __name__ == "__main__":
    main()
