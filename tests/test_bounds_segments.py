"""lipschitz_bound(method="segments"): the Combettes-Pesquet segment expansion, against oracles:
the closed form for one hidden layer, the maximum of ||J|| over EVERY activation pattern of a
small ReLU network (vertices of [0, 1]^n: an upper bound on the true constant, and the value
any sound bound from slope ranges must reach), dense Jacobians at random points, the empirical
lower bound, and the product of layer norms it must never exceed."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn

import lipkit as lk
from lipkit.bounds.activations import SLOPE_RANGES
from lipkit.bounds.layer_rules import UnsupportedLayerError
from lipkit.layers import GroupSort


def _norm(m: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(m, ord=2))


def _mlp(widths, act=nn.ReLU, seed=0):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b)] + ([act()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers).double().eval()


def _jacobian_norm_max(model, dim, points=16, seed=1):
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(points, dim, generator=gen, dtype=torch.float64)
    return max(_norm(torch.autograd.functional.jacobian(model, x[None])[0, :, 0]) for x in xs)


def test_one_hidden_layer_closed_form():
    m = _mlp([5, 12, 3])
    a, b = m[0].weight.detach(), m[2].weight.detach()
    expected = 0.5 * _norm(b @ a) + 0.5 * _norm(a) * _norm(b)
    assert lk.lipschitz_bound(m, (5,), "segments").upper == pytest.approx(min(expected, _norm(a) * _norm(b)), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_at_least_the_worst_activation_pattern_and_at_most_the_product(seed):
    m = _mlp([3, 5, 5, 2], seed=seed)
    w = [m[i].weight.detach() for i in (0, 2, 4)]
    worst = max(_norm(w[2] @ torch.diag(torch.tensor(d2, dtype=torch.float64)) @ w[1]
                      @ torch.diag(torch.tensor(d1, dtype=torch.float64)) @ w[0])
                for d1 in itertools.product((0, 1), repeat=5) for d2 in itertools.product((0, 1), repeat=5))
    seg = lk.lipschitz_bound(m, (3,), "segments").upper
    product = lk.lipschitz_bound(m, (3,), "exact").upper
    assert worst * (1 - 1e-9) <= seg <= product * (1 + 1e-9)
    assert seg < 0.9 * product  # the point of it: tighter than the product on random weights
    assert seg >= _jacobian_norm_max(m, 3) and seg >= lk.lipschitz_lower_bound(m, torch.randn(8, 3).double())


def test_generic_joints_are_cuts_and_stay_sound():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                      GroupSort(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.Tanh(), nn.Linear(6, 2)).double().eval()
    seg = lk.lipschitz_bound(m, (1, 8, 8), "segments")
    product = lk.lipschitz_bound(m, (1, 8, 8), "gram").upper
    gen = torch.Generator().manual_seed(3)
    dense = max(_norm(torch.autograd.functional.jacobian(m, x[None]).reshape(2, 64))
                for x in torch.randn(16, 1, 8, 8, generator=gen, dtype=torch.float64))
    assert dense <= seg.upper <= product * (1 + 1e-9)
    assert seg.layers[-1].kind == "segment expansion" and seg.method == "segments"


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.ReLU6(), nn.Tanh(), nn.Hardtanh(), nn.Softplus(beta=3.0),
                                   nn.Softsign(), nn.Sigmoid(), nn.LeakyReLU(0.2), nn.LeakyReLU(-0.5), nn.ELU(2.0),
                                   nn.ELU(0.5), nn.SiLU(), nn.GELU(), nn.GELU(approximate="tanh"), nn.Mish(),
                                   nn.Hardswish(), nn.Hardsigmoid(), nn.SELU(), nn.CELU(0.5), nn.LogSigmoid(),
                                   nn.Softshrink(0.5), nn.Tanhshrink(), nn.PReLU(init=-0.7).double(),
                                   nn.RReLU(-3.0, -1.0).eval()],
                         ids=lambda m: repr(m))
def test_slope_ranges_contain_every_derivative(layer):
    x = torch.linspace(-60, 60, 600001, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(layer(x).sum(), x)
    low, high = SLOPE_RANGES[type(layer)](layer)
    assert low <= float(slope.min()) and float(slope.max()) <= high
    assert high - float(slope.max()) < 1e-3 and float(slope.min()) - low < 1e-3  # and not needlessly wide


def test_refuses_what_is_not_a_chain():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return x + self.b(torch.relu(self.a(x)))

    with pytest.raises(UnsupportedLayerError, match="feed-forward chains.*use method='gram'"):
        lk.lipschitz_bound(Residual().eval(), (4,), "segments")
    with pytest.raises(ValueError, match="not one of"):
        lk.lipschitz_bound(Residual().eval(), (4,), "segment")
