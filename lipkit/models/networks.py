"""Critics and generators for lipkit's GAN experiments: MLPs for 2-D toy data, DCGAN-style
convnets for small grey images (8x8 digits, 28x28 Fashion-MNIST), and conditional variants.

Why they look like this:
- Critics have no BatchNorm: a gradient penalty needs per-sample scores, and a spectral
  bound must not depend on the batch (WGAN-GP, Gulrajani et al. 2017). Activations are
  ReLU / LeakyReLU(0.2), whose slopes are <= 1, so per-layer constraints bound the network.
- An unconditional critic is a plain nn.Sequential ending in Linear(., 1): lk.lipschitz_bound
  certifies it as it is.
- The conditional critic is a projection discriminator (Miyato & Koyama 2018):
  f(x, y) = psi(phi(x)) + <E onehot(y), phi(x)>. The class embedding E is an nn.Linear on
  one-hot labels (not nn.Embedding) so every lk.constrain method reaches it: for a fixed y
  the critic is (Lip(psi) + ||E e_y||) * Lip(phi)-Lipschitz in x.
- Generators may use BatchNorm (DCGAN) and end in tanh for images ([-1, 1] range).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

LEAK = 0.2  # LeakyReLU slope of the conv critics (DCGAN); <= 1 keeps it 1-Lipschitz
MIN_SIDE = 4  # conv nets halve the image side while it is even and larger than this


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def mlp(in_dim: int, out_dim: int, width: int = 512, depth: int = 3) -> nn.Sequential:
    """`depth` hidden Linear+ReLU layers of `width`, then Linear(width, out_dim)."""
    _check_positive(in_dim=in_dim, out_dim=out_dim, width=width, depth=depth)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(in_dim if i == 0 else width, width), nn.ReLU()]
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def mlp_critic(dim: int = 2, width: int = 512, depth: int = 3) -> nn.Sequential:
    """WGAN-GP toy critic: 3 x 512 ReLU MLP, one score per sample (shape (B, 1))."""
    return mlp(dim, 1, width, depth)


def _sides(side: int) -> list[int]:
    """Image sides after each stride-2 stage: 28 -> [28, 14, 7], 8 -> [8, 4], 32 -> [32, 16, 8, 4]."""
    sides = [side]
    while sides[-1] % 2 == 0 and sides[-1] > MIN_SIDE:
        sides.append(sides[-1] // 2)
    return sides


def _check_image_shape(image_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(image_shape) != 3 or image_shape[1] != image_shape[2] or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (C, H, H) with a square image, got {tuple(image_shape)}")
    if len(_sides(image_shape[1])) < 2:
        raise ValueError(f"image side {image_shape[1]} cannot be halved (needs an even side > {MIN_SIDE})")
    return image_shape[0], image_shape[1]


def conv_features(image_shape: tuple[int, int, int] = (1, 28, 28), width: int = 64) -> nn.Sequential:
    """phi(x) of the DCGAN critic: Conv3x3 (stride 1), then Conv4x4 stride 2 stages doubling
    the channels until the side is odd or <= 4 (28: 28->14->7; 8: 8->4), flattened."""
    channels, side = _check_image_shape(image_shape)
    _check_positive(width=width)
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1), nn.LeakyReLU(LEAK)]
    c = width
    for _ in _sides(side)[1:]:
        layers += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.LeakyReLU(LEAK)]
        c *= 2
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def conv_feature_dim(image_shape: tuple[int, int, int], width: int) -> int:
    sides = _sides(_check_image_shape(image_shape)[1])
    return width * 2 ** (len(sides) - 1) * sides[-1] ** 2


def conv_critic(image_shape: tuple[int, int, int] = (1, 28, 28), width: int = 64) -> nn.Sequential:
    """DCGAN-style critic without BatchNorm: conv_features then Linear(., 1)."""
    body = conv_features(image_shape, width)
    return nn.Sequential(*body, nn.Linear(conv_feature_dim(image_shape, width), 1))


class ProjectionCritic(nn.Module):
    """f(x, y) = head(phi(x)) + <embed(onehot(y)), phi(x)> (Miyato & Koyama 2018), shape (B, 1)."""

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        _check_positive(feature_dim=feature_dim, num_classes=num_classes)
        self.features = features
        self.head = nn.Linear(feature_dim, 1)
        # Linear on one-hot labels == an embedding table (its weight is E^T), but constrainable.
        self.embed = nn.Linear(num_classes, feature_dim, bias=False)
        self.num_classes = num_classes

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        if labels.shape != x.shape[:1]:
            raise ValueError(f"labels {tuple(labels.shape)} must be one per sample of x {tuple(x.shape)}")
        phi = self.features(x)
        onehot = F.one_hot(labels.long(), self.num_classes).to(phi.dtype)
        return self.head(phi) + (self.embed(onehot) * phi).sum(dim=1, keepdim=True)


def projection_mlp_critic(num_classes: int, dim: int = 2, width: int = 512, depth: int = 3) -> ProjectionCritic:
    """Conditional toy critic: phi = the MLP's ReLU hidden stack."""
    body = mlp(dim, 1, width, depth)[:-1]  # drop the output layer: phi ends at the last ReLU
    return ProjectionCritic(body, width, num_classes)


def projection_conv_critic(num_classes: int, image_shape: tuple[int, int, int] = (1, 28, 28),
                           width: int = 64) -> ProjectionCritic:
    """Conditional image critic: phi = conv_features."""
    return ProjectionCritic(conv_features(image_shape, width), conv_feature_dim(image_shape, width), num_classes)


class Generator(nn.Module):
    """noise (B, noise_dim) [+ labels (B,)] -> samples. Conditional generators concatenate a
    learned label embedding to the noise (the simplest class-conditional generator)."""

    def __init__(self, net: nn.Module, noise_dim: int, num_classes: int = 0, embed_dim: int = 0) -> None:
        super().__init__()
        self.net, self.noise_dim, self.num_classes = net, noise_dim, num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None

    @property
    def conditional(self) -> bool:
        return self.embed is not None

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is None:
            if labels is not None:
                raise ValueError("this generator is unconditional: call it without labels")
            return self.net(z)
        if labels is None:
            raise ValueError(f"this generator is conditional ({self.num_classes} classes): pass labels")
        return self.net(torch.cat([z, self.embed(labels.long())], dim=1))


def mlp_generator(noise_dim: int = 2, dim: int = 2, width: int = 512, depth: int = 3,
                  num_classes: int = 0, embed_dim: int = 16) -> Generator:
    """WGAN-GP toy generator (3 x 512 ReLU MLP); conditional when num_classes > 0."""
    _check_positive(noise_dim=noise_dim)
    extra = embed_dim if num_classes else 0
    return Generator(mlp(noise_dim + extra, dim, width, depth), noise_dim, num_classes, embed_dim)


def conv_generator(image_shape: tuple[int, int, int] = (1, 28, 28), noise_dim: int = 64, width: int = 64,
                   batch_norm: bool = True, num_classes: int = 0, embed_dim: int = 16) -> Generator:
    """DCGAN-style generator mirroring conv_critic: Linear to (width * 2^k, s, s), then
    ConvTranspose4x4 stride 2 stages halving the channels, Conv3x3 to C channels, tanh."""
    channels, side = _check_image_shape(image_shape)
    _check_positive(noise_dim=noise_dim, width=width)
    sides = _sides(side)
    c = width * 2 ** (len(sides) - 1)
    in_dim = noise_dim + (embed_dim if num_classes else 0)
    norm1 = nn.BatchNorm1d if batch_norm else (lambda n: nn.Identity())
    norm2 = nn.BatchNorm2d if batch_norm else (lambda n: nn.Identity())
    layers: list[nn.Module] = [nn.Linear(in_dim, c * sides[-1] ** 2), norm1(c * sides[-1] ** 2), nn.ReLU(),
                               nn.Unflatten(1, (c, sides[-1], sides[-1]))]
    for _ in sides[1:]:
        layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1), norm2(c // 2), nn.ReLU()]
        c //= 2
    layers += [nn.Conv2d(c, channels, 3, 1, 1), nn.Tanh()]
    return Generator(nn.Sequential(*layers), noise_dim, num_classes, embed_dim)


# ----------------------------------------------------------------------------- classifiers
# Classifiers for lipkit's supervised experiments (train-clf). Same rules as the critics:
# no BatchNorm (the certified bound and the per-sample input-gradient penalty must not depend
# on the batch), ReLU activations (slope <= 1), every layer one that lk.lipschitz_bound
# certifies, so the whole network is certifiable as it is. Inputs (N, C, H, W) in [0, 1].


def mlp_classifier(input_shape: tuple[int, ...], num_classes: int, width: int = 256,
                   depth: int = 2) -> nn.Sequential:
    """Flatten, then `depth` hidden Linear+ReLU layers of `width`, then Linear to the logits."""
    _check_positive(num_classes=num_classes)
    if not input_shape or min(input_shape) < 1:
        raise ValueError(f"input_shape must be positive sizes without the batch dim, got {tuple(input_shape)}")
    dim = 1
    for s in input_shape:
        dim *= int(s)
    return nn.Sequential(nn.Flatten(), *mlp(dim, num_classes, width, depth))


def cnn_classifier(image_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, width: int = 32,
                   hidden: int = 128) -> nn.Sequential:
    """Small CNN: Conv3x3 (stride 1), Conv4x4 stride-2 stages doubling the channels while the
    side halves (28 -> 14 -> 7; 8 -> 4), Flatten, Linear(., hidden)+ReLU, Linear to the logits.

    Strided convolutions instead of max pooling: pooling is certified too, but a strided conv
    is one linear map whose true operator norm lk.operator_norm computes, so the certified
    bound is a product of per-layer norms with no extra slack from the pooling rule.
    """
    _check_positive(num_classes=num_classes, width=width, hidden=hidden)
    channels, side = _check_image_shape(image_shape)
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1), nn.ReLU()]
    c = width
    for _ in _sides(side)[1:]:
        layers += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.ReLU()]
        c *= 2
    layers += [nn.Flatten(), nn.Linear(conv_feature_dim(image_shape, width), hidden), nn.ReLU(),
               nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)
