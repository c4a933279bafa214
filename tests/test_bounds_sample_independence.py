"""lipschitz_bound refuses a model whose value for one sample depends on another sample of the
batch, even through a layer whose registered rule says nothing about it
(bounds/sample_independence.py): the bound is of a per-sample function, which such a layer has
not. Oracle: the definition, checked on the model itself (sample 0's output moves when sample
1's input does)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import lipkit as lk


class MinibatchStdDev(nn.Module):
    """ProGAN's critic feature: each sample gets the batch's mean standard deviation appended."""

    def forward(self, x):
        std = x.std(dim=0).mean().expand(x.shape[0], 1)
        return torch.cat([x, std], dim=1)


class NoiseInjection(nn.Module):
    """Per-sample: adds fresh noise (eval mode too), mixes nothing."""

    def forward(self, x):
        return x + 0.1 * torch.randn_like(x)


# Rules for both layers, as a user would register them (the classes are this module's own,
# so the registrations touch nothing else)
lk.register_layer_bound(MinibatchStdDev)(lambda layer, shape, method: lk.LayerRule(bound=2.0, how="user rule"))
lk.register_layer_bound(NoiseInjection)(lambda layer, shape, method: lk.LayerRule(bound=1.0, how="user rule"))


def model(layer: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), layer, nn.Linear(6 + isinstance(layer, MinibatchStdDev), 1)).eval()


def test_a_registered_layer_that_mixes_the_batch_is_refused():
    net = model(MinibatchStdDev())
    x = torch.randn(2, 4)
    moved = x.clone()
    moved[1] += 3.0
    assert not torch.allclose(net(x)[0], net(moved)[0])  # the oracle: sample 0 depends on sample 1
    with pytest.raises(ValueError, match=r"layer '2' \(MinibatchStdDev\(\)\) mixes the samples of a batch"):
        lk.lipschitz_bound(net, (4,))


def test_a_registered_per_sample_layer_drawing_noise_is_bounded():
    bound = lk.lipschitz_bound(model(NoiseInjection()), (4,))
    assert float(bound) > 0
    state = torch.random.get_rng_state()
    lk.lipschitz_bound(model(NoiseInjection()), (4,))
    assert torch.equal(torch.random.get_rng_state(), state)  # the check draws from a private seed
