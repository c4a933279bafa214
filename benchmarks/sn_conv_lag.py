"""How far behind the true conv operator norm does a power-iteration estimate fall during
training? (issue 11: a conv SN whose bound holds.)

For each geometry, a small critic is trained with lk.constrain(..., operator="conv") (Adam
lr 1e-3, betas (0, 0.9), a WGAN loss) and the raw weight of the watched layer is recorded
at every step. Offline, several refresh strategies track the top singular pair along that
weight trajectory, starting from the exact pair of the first weight, and each step's
estimate is compared with the exact norm (dense SVD): the worst sigma_true / sigma_est - 1
is how far above its bound the normalized layer would go.

    OMP_NUM_THREADS=1 python benchmarks/sn_conv_lag.py [--steps 40]

Strategies: "v1 xN": one vector, N power steps per update (lipkit before issue 11: N = 1);
"block kxN": k vectors, N block steps per update, Rayleigh-Ritz (the top Ritz pair);
"stale": the previous update's vectors on the new weight (an eval read right after a step).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn

import lipkit as lk
from lipkit.constraints import constraints_of
from lipkit.constraints.base import raw_tensor
from lipkit.norms.linalg import dense_matrix
from lipkit.norms.operators import ConvGeometry

GEOMETRIES = {  # name: (layers before the watched one, the watched layer, the critic's input shape)
    "conv3x3 s1 16x16": ([], nn.Conv2d(3, 16, 3, 1, 1), (3, 16, 16)),
    "conv4x4 s2 16x16": ([nn.Conv2d(3, 16, 3, 1, 1)], nn.Conv2d(16, 32, 4, 2, 1), (3, 16, 16)),
    "conv3x3 s2 10x10 (plateau)": ([], nn.Conv2d(1, 3, 3, stride=2), (1, 10, 10)),
    "reflect 3x3 12x12": ([], nn.Conv2d(3, 8, 3, 1, 1, padding_mode="reflect"), (3, 12, 12)),
    "replicate 3x3 12x12": ([], nn.Conv2d(3, 8, 3, 1, 1, padding_mode="replicate"), (3, 12, 12)),
    "dilation 2 12x12": ([], nn.Conv2d(3, 8, 3, 1, 2, dilation=2), (3, 12, 12)),
    "groups 2 12x12": ([], nn.Conv2d(4, 8, 3, 1, 1, groups=2), (4, 12, 12)),
    "convT 4x4 s2 6x6": ([], nn.ConvTranspose2d(3, 8, 4, 2, 1), (3, 6, 6)),
    "convT 3x3 5x5": ([], nn.ConvTranspose2d(1, 2, 3), (1, 5, 5)),
}


def critic_for(before: list[nn.Module], watched: nn.Module, shape: tuple[int, ...]) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for layer in before:
        layers += [layer, nn.LeakyReLU(0.2)]
    index = len(layers)
    layers += [watched, nn.LeakyReLU(0.2), nn.Flatten()]
    probe = nn.Sequential(*layers)(torch.zeros(1, *shape))
    return nn.Sequential(*layers, nn.Linear(probe.shape[1], 1)), index


def trajectory(name: str, steps: int, seed: int = 0) -> tuple[list[torch.Tensor], ConvGeometry, tuple[int, ...]]:
    """Raw weights of the watched layer at registration and after every training step."""
    torch.manual_seed(seed)
    before, watched, in_shape = GEOMETRIES[name]
    critic, index = critic_for([type(b)(**_kwargs(b)) for b in before], type(watched)(**_kwargs(watched)), in_shape)
    lk.constrain(critic, "spectral", operator="conv")
    gen = torch.Generator().manual_seed(seed)
    real = torch.randn(64, *in_shape, generator=gen) * 0.5 + 1.0
    critic(real[:2])  # the conv operator learns its input shape
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.0, 0.9))
    weights = [raw_tensor(critic[index], "weight").detach().clone()]
    for _ in range(steps):
        fake = torch.randn(64, *in_shape, generator=gen)
        loss = critic(fake).mean() - critic(real).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        weights.append(raw_tensor(critic[index], "weight").detach().clone())
    layer = critic[index]
    shape_seen = tuple(int(s) for s in next(c for n, _, _, c in constraints_of(critic) if n == str(index)).input_shape)
    return weights, ConvGeometry.of(layer), shape_seen


def _kwargs(layer: nn.Module) -> dict:
    keys = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode")
    return {k: getattr(layer, k) for k in keys}


def exact_pair(matrix: torch.Tensor) -> tuple[float, torch.Tensor]:
    """sigma and the top right singular vector of a dense (in_dim, out_dim) map matrix."""
    _, s, vh = torch.linalg.svd(matrix.T, full_matrices=False)
    return float(s[0]), vh[0]


def track(matrices: list[torch.Tensor], k: int, n: int) -> list[float]:
    """Estimates along the trajectory: k vectors, n block steps per update, from the exact
    top vectors (and the next k-1) of the first weight."""
    a0 = matrices[0].T  # (out, in)
    _, _, vh = torch.linalg.svd(a0, full_matrices=False)
    basis = vh[:k].T.clone()  # (in, k)
    estimates = []
    for m in matrices:
        a = m.T
        for _ in range(n):
            basis, _ = torch.linalg.qr(a.T @ (a @ basis))
        s = torch.linalg.svdvals(a @ basis)
        estimates.append(float(s[0]))
    return estimates


def stale(matrices: list[torch.Tensor]) -> list[float]:
    """Previous update's top vectors (one step at the previous weight) read on the new weight."""
    out = []
    for prev, cur in zip(matrices[:-1], matrices[1:]):
        _, v = exact_pair(prev)
        u = prev.T @ v
        u = u / u.norm()
        out.append(float(u @ (cur.T @ v)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    strategies = [("v1 x1", 1, 1), ("v1 x3", 1, 3), ("block 2x1", 2, 1), ("block 4x1", 4, 1), ("block 4x2", 4, 2),
                  ("block 8x1", 8, 1)]
    header = ["geometry", "top-2 gap"] + [s for s, _, _ in strategies] + ["stale read"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name in GEOMETRIES:
        weights, geometry, shape = trajectory(name, args.steps)
        matrices = [dense_matrix(lambda x, w=w: geometry.forward(x, w.double()), shape, torch.float64, "cpu")
                    for w in weights]
        truth = [exact_pair(m)[0] for m in matrices]
        s = torch.linalg.svdvals(matrices[-1].T)
        cells = [name, f"{float(1 - s[1] / s[0]):.2%}"]
        for _, k, n in strategies:
            est = track(matrices, k, n)
            cells.append(f"{max(t / e - 1 for t, e in zip(truth, est)):.2e}")
        lag = stale(matrices)
        cells.append(f"{max(t / e - 1 for t, e in zip(truth[1:], lag)):.2e}")
        print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\nworst sigma_true / sigma_est - 1 over {args.steps} Adam steps (lr 1e-3); "
          f"below 1e-3 keeps the layer within bound * (1 + 1e-3)")


if __name__ == "__main__":
    main()
