"""Small example networks, importable as `lipkit.examples:NAME` (e.g. by `lipkit bound`).

Each factory is seeded so a given name always builds the same weights.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def mlp(seed: int = 0) -> nn.Module:
    """A 2-D -> 1 critic as in the WGAN-GP toy experiments (3 x 512 ReLU), input (2,)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 1),
    )


def dcgan_critic(seed: int = 0, width: int = 64) -> nn.Module:
    """The DCGAN-style critic of the GPU anchor benchmark (7 convs, stride-2 downsampling,
    LeakyReLU 0.1, linear head), input (3, 32, 32)."""
    torch.manual_seed(seed)
    w = width
    chans = [(3, w, 3, 1), (w, 2 * w, 4, 2), (2 * w, 2 * w, 3, 1), (2 * w, 4 * w, 4, 2),
             (4 * w, 4 * w, 3, 1), (4 * w, 8 * w, 4, 2), (8 * w, 8 * w, 3, 1)]
    layers: list[nn.Module] = []
    for cin, cout, k, s in chans:
        layers += [nn.Conv2d(cin, cout, k, s, 1), nn.LeakyReLU(0.1)]
    layers += [nn.Flatten(), nn.Linear(8 * w * 4 * 4, 1)]
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """x + conv(relu(conv(x))): its Lipschitz constant is at most 1 + L(branch)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


def small_resnet(seed: int = 0, channels: int = 16, classes: int = 10) -> nn.Module:
    """A small residual classifier for (1, 28, 28) inputs: stem, 2 blocks, pooling, head."""
    torch.manual_seed(seed)
    c = channels
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
        ResidualBlock(c), nn.AvgPool2d(2),
        ResidualBlock(c), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(c * 7 * 7, classes),
    )
