"""Issue 15 item 1: the global pooling torchvision classifiers end with (adaptive average /
max pooling, module and functional, and means over feature dims). Oracles: the dense
Jacobian (average pooling and means are linear: the bound must EQUAL its norm) and, for max
pooling, a point where one entry is the max of every window that holds it (the bound must
equal that Jacobian's norm: sound and tight)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from bound_oracles import Applies, jacobian_norm_at

import lipkit as lk
from lipkit.bounds.pooling import averaging_matrix


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def jacobian_norm(model: nn.Module, x: torch.Tensor) -> float:
    model = model.double()
    jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], x.double()).reshape(-1, x.numel())
    return float(torch.linalg.svdvals(jac)[0])


LINEAR_POOLS = [
    (nn.AdaptiveAvgPool2d(1), (3, 7, 7)),  # global pooling: 1/7
    (nn.AdaptiveAvgPool2d((3, 2)), (2, 7, 5)),  # uneven, overlapping windows
    (nn.AdaptiveAvgPool2d((5, 5)), (2, 7, 7)),
    (nn.AdaptiveAvgPool2d((None, 2)), (2, 4, 6)),  # None keeps the input size
    (nn.AdaptiveAvgPool1d(3), (2, 7)),
    (nn.AdaptiveAvgPool3d((2, 3, 1)), (1, 5, 4, 3)),
    (Fn(lambda x: F.adaptive_avg_pool2d(x, (3, 4))), (2, 7, 9)),
    (Fn(lambda x: F.adaptive_avg_pool1d(x, 4)), (2, 9)),
    (Fn(lambda x: x.mean([2, 3])), (2, 5, 4)),
    (Fn(lambda x: torch.mean(x, dim=(1,), keepdim=True)), (3, 4)),
    (Fn(lambda x: x.mean(-1)), (3, 4, 6)),
]


@pytest.mark.parametrize("model,shape", LINEAR_POOLS, ids=range(len(LINEAR_POOLS)))
def test_average_pooling_bound_is_the_exact_norm(model, shape):
    bound = lk.lipschitz_bound(model.eval(), shape).upper
    assert bound == pytest.approx(jacobian_norm(model, torch.randn(shape)), rel=1e-9)


MAX_POOLS = [(nn.AdaptiveMaxPool2d((3, 2)), (1, 7, 5), (3, 2)),
             (Fn(lambda x: F.adaptive_max_pool2d(x, 3)), (1, 7, 7), (3, 3)),
             (nn.AdaptiveMaxPool1d(4), (1, 9), (4,))]


@pytest.mark.parametrize("model,shape,out", MAX_POOLS, ids=["module", "functional", "1d"])
def test_adaptive_max_pooling_bound_is_sound_and_attained(model, shape, out):
    # the entry shared by the most windows, per axis
    shared = [int((averaging_matrix(n, m) > 0).sum(0).argmax()) for n, m in zip(shape[1:], out)]
    x = 0.01 * torch.randn(shape)
    x[(0, *shared)] = 10.0  # the max of every window holding it: the Jacobian's column has one 1 per window
    bound = lk.lipschitz_bound(model.eval(), shape).upper
    assert bound == pytest.approx(jacobian_norm(model, x), rel=1e-9)
    for _ in range(5):
        assert bound >= jacobian_norm(model, torch.randn(shape)) - 1e-9


@pytest.mark.parametrize("fn", [lambda x: x.mean(0), lambda x: x.mean(), lambda x: F.adaptive_max_pool2d(x, 2, True)[0]],
                         ids=["batch dim", "all dims", "return_indices"])
def test_pooling_that_mixes_samples_or_returns_indices_is_refused(fn):
    with pytest.raises((lk.UnsupportedLayerError, ValueError)):
        lk.lipschitz_bound(Fn(fn), (2, 4, 4))


def _worst_jacobian(model: nn.Module, shape: tuple[int, ...]) -> float:
    gen = torch.Generator().manual_seed(0)
    return max(jacobian_norm_at(model, torch.randn(shape, dtype=torch.float64, generator=gen)) for _ in range(60))


@pytest.mark.parametrize("pool, shape, constant", [
    (nn.MaxPool2d(3, 1), (6, 6), 3.0),  # windows overlap 3 x 3 times: sqrt(9)
    (nn.MaxPool1d(3, 1), (6,), 3 ** 0.5),
    (nn.AdaptiveMaxPool2d(4), (6, 6), 2.0),
    (nn.AdaptiveAvgPool2d(4), (6, 6), 0.75),
    (nn.MaxPool2d(3, 1), (2, 6, 6), 3.0),  # with a channel dim: unchanged
    (nn.AvgPool2d(2, 1), (6, 6), None),  # linear: its Jacobian's norm is the constant (it was refused)
    (nn.AvgPool1d(3, 2, 1), (7,), None),
])
def test_pooling_a_sample_without_a_channel_dim(pool, shape, constant):
    """A MaxPool2d fed (B, H, W) sees one unbatched (C=B, H, W) image and pools over H and W;
    the rules counted over input_shape[1:] (W alone) and certified 1.73 for the 3x3 stride-1
    pool (true 3) and 1.41 for the adaptive one (true 2). The functional form agrees."""
    model = nn.Sequential(pool)
    upper = lk.lipschitz_bound(model, shape).upper
    worst = _worst_jacobian(model, shape)
    assert upper == pytest.approx(worst if constant is None else constant, rel=1e-6)  # certified: a hair above
    assert worst <= upper * (1 + 1e-12)
    if isinstance(pool, nn.AdaptiveMaxPool2d):
        functional = Applies(lambda x: F.adaptive_max_pool2d(x, 4))
        assert lk.lipschitz_bound(functional, shape).upper == pytest.approx(constant, rel=1e-9)
