"""lipkit.models: shapes, the projection-critic formula, no BatchNorm in critics, and that every
critic can be constrained and certified by lipkit's own tools."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import lipkit as lk
from lipkit import models


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_conv_critic_and_generator_shapes(shape: tuple[int, int, int]) -> None:
    critic = models.conv_critic(shape, width=4)
    generator = models.conv_generator(shape, noise_dim=5, width=4)
    x = generator(torch.randn(3, 5))
    assert x.shape == (3, *shape)
    assert x.abs().max() <= 1  # tanh range, the [-1, 1] of lipkit.data.to_gan_range
    assert critic(x).shape == (3, 1)
    assert not _has_batchnorm(critic) and _has_batchnorm(generator)
    assert not _has_batchnorm(models.conv_generator(shape, 5, 4, batch_norm=False))


def test_mlp_models_follow_the_wgan_gp_toy_code() -> None:
    critic = models.mlp_critic()
    linears = [m for m in critic if isinstance(m, nn.Linear)]
    assert [lin.out_features for lin in linears] == [512, 512, 512, 1]
    assert all(isinstance(m, (nn.Linear, nn.ReLU)) for m in critic)
    generator = models.mlp_generator(noise_dim=2)
    assert generator(torch.randn(7, 2)).shape == (7, 2)


def test_projection_critic_is_psi_plus_inner_product() -> None:
    torch.manual_seed(0)
    critic = models.projection_mlp_critic(num_classes=5, dim=2, width=8, depth=2)
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 2, 3, 4, 0])
    phi = critic.features(x)
    embedding = critic.embed.weight.T  # (classes, features): row k is class k's vector
    expected = critic.head(phi).squeeze(1) + (embedding[y] * phi).sum(1)
    torch.testing.assert_close(critic(x, y).squeeze(1), expected)
    with pytest.raises(ValueError, match="one per sample"):
        critic(x, y[:3])


def test_conditional_generators_need_labels() -> None:
    generator = models.conv_generator((1, 8, 8), noise_dim=4, width=4, num_classes=10)
    assert generator(torch.randn(2, 4), torch.tensor([3, 9])).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="conditional"):
        generator(torch.randn(2, 4))
    with pytest.raises(ValueError, match="unconditional"):
        models.mlp_generator(2)(torch.randn(2, 2), torch.tensor([0, 1]))


def test_every_critic_layer_is_constrainable_and_certifiable() -> None:
    torch.manual_seed(0)
    critic = lk.constrain(models.conv_critic((1, 8, 8), width=4), "spectral", operator="conv")
    critic(torch.randn(2, 1, 8, 8))  # the conv constraint learns its input shape
    assert lk.lipschitz_bound(critic, (1, 8, 8)).upper <= 1.05
    conditional = models.projection_conv_critic(10, (1, 8, 8), width=4)
    lk.constrain(conditional, "clip", mode="project")
    assert conditional.embed.lipkit_projections  # the class embedding is constrained too


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match="width must be an int >= 1, got 0"):
        models.mlp_critic(width=0)
    with pytest.raises(ValueError, match="square"):
        models.conv_critic((1, 8, 6))
    with pytest.raises(ValueError, match="cannot be halved"):
        models.conv_critic((1, 7, 7))
