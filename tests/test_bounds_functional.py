"""Functional forms of layers (lipkit/bounds/functional_layers.py): F.max_pool2d, F.avg_pool2d,
F.softmax, F.log_softmax, F.dropout, and the 1-Lipschitz reductions (amax, amin, logsumexp).

Oracles: the module form's bound (the same map), the dense Jacobian at random inputs (a lower
bound on any model's constant) and closed forms (log-softmax's Jacobian norm tends to sqrt(n))."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from bound_oracles import Applies, jacobian_norm_at

import lipkit as lk


class MnistExample(nn.Module):
    """PyTorch's MNIST example network (examples/mnist/main.py), at 1x12x12 to keep it small."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, 1), nn.Conv2d(4, 8, 3, 1)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(8 * 4 * 4, 16), nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = torch.flatten(self.dropout1(F.max_pool2d(x, 2)), 1)
        x = self.fc2(self.dropout2(F.relu(self.fc1(x))))
        return F.log_softmax(x, dim=1)


def as_modules(net: MnistExample) -> nn.Sequential:
    """The same network written with modules only."""
    return nn.Sequential(net.conv1, nn.ReLU(), net.conv2, nn.ReLU(), nn.MaxPool2d(2), net.dropout1, nn.Flatten(),
                         net.fc1, nn.ReLU(), net.dropout2, net.fc2, nn.LogSoftmax(dim=1))


def test_the_pytorch_mnist_example_is_bounded_as_its_module_form():
    """It was refused (no rule for max_pool2d and log_softmax)."""
    net = MnistExample().double().eval()
    upper = lk.lipschitz_bound(net, (1, 12, 12)).upper
    assert upper == pytest.approx(lk.lipschitz_bound(as_modules(net), (1, 12, 12)).upper, rel=1e-9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(8):
        x = torch.randn(1, 12, 12, dtype=torch.float64, generator=gen) * 3
        assert jacobian_norm_at(net, x) <= upper
    # a function that changes the constant has its row, so the table ends at the bound
    rows = lk.lipschitz_bound(net, (1, 12, 12)).layers
    assert rows[-1].kind == "log_softmax" and rows[-1].bound == pytest.approx(math.sqrt(10))
    assert rows[-1].cumulative == pytest.approx(upper, rel=1e-12)


@pytest.mark.parametrize("fn, module", [
    (lambda x: F.max_pool2d(x, 3, 2, 1), nn.MaxPool2d(3, 2, 1)),
    (lambda x: F.max_pool2d(x, kernel_size=2, ceil_mode=True), nn.MaxPool2d(2, ceil_mode=True)),
    (lambda x: F.max_pool1d(x.flatten(2), 4, 3), nn.Sequential(nn.Flatten(2), nn.MaxPool1d(4, 3))),
    (lambda x: F.avg_pool2d(x, 3, 1, 1, False, False), nn.AvgPool2d(3, 1, 1, count_include_pad=False)),
    (lambda x: F.avg_pool2d(x, 2, divisor_override=1), nn.AvgPool2d(2, divisor_override=1)),
    (lambda x: F.softmax(x, 1), nn.Softmax(1)),
    (lambda x: x.softmax(-1), nn.Softmax(-1)),
    (lambda x: torch.log_softmax(x, 2), nn.LogSoftmax(2)),
    (lambda x: F.dropout(x, 0.3, training=False), nn.Dropout(0.3)),
    (lambda x: F.softmin(x, 2), nn.Softmin(2)),
    (lambda x: F.softmax(x, -3), nn.Softmax2d()),
], ids=["max2d", "max2d-ceil", "max1d", "avg2d-nopad", "sum-pool", "softmax", "softmax-method", "log-softmax",
        "dropout-eval", "softmin", "softmax2d"])
def test_a_functional_layer_gets_its_module_s_bound(fn, module):
    shape = (3, 7, 7)
    functional = lk.lipschitz_bound(Applies(fn), shape).upper
    assert functional == pytest.approx(lk.lipschitz_bound(nn.Sequential(module).eval(), shape).upper, rel=1e-12)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        x = torch.randn(shape, dtype=torch.float64, generator=gen) * 4
        assert jacobian_norm_at(Applies(fn), x) <= functional * (1 + 1e-9)


def test_log_softmax_constant_is_sqrt_n_and_approached():
    """Its Jacobian I - 1 p^T has norm -> sqrt(n) as p tends to a vertex, never above."""
    n = 10
    upper = lk.lipschitz_bound(Applies(lambda x: F.log_softmax(x, 1)), (n,)).upper
    assert upper == pytest.approx(math.sqrt(n))
    x = torch.zeros(n, dtype=torch.float64)
    x[0] = 40.0  # p = softmax(x) is e_1 to within e^-40
    assert jacobian_norm_at(Applies(lambda t: F.log_softmax(t, 1)), x) == pytest.approx(math.sqrt(n), rel=1e-9)
    with pytest.raises(lk.UnsupportedLayerError, match="batch"):  # dim 0 is the batch
        lk.lipschitz_bound(nn.Sequential(nn.LogSoftmax(0)), (n,))


def test_dropout_left_in_training_mode_is_bounded_for_every_mask():
    """F.dropout(x, p) defaults to training=True: a random mask, then 1 / (1 - p)."""
    fn = Applies(lambda x: F.dropout(x, 0.25))
    upper = lk.lipschitz_bound(fn, (6,)).upper
    assert upper == pytest.approx(1 / 0.75)
    torch.manual_seed(0)
    assert max(jacobian_norm_at(fn, torch.randn(6, dtype=torch.float64)) for _ in range(20)) == pytest.approx(upper)


@pytest.mark.parametrize("fn", [lambda x: x.amax((2, 3)), lambda x: torch.amin(x, 1), lambda x: x.logsumexp(3),
                                lambda x: torch.logsumexp(x, (1, 2), keepdim=True)],
                         ids=["amax", "amin", "logsumexp", "logsumexp-2dims"])
def test_one_lipschitz_reductions(fn):
    shape = (2, 5, 5)
    assert lk.lipschitz_bound(Applies(fn), shape).upper == 1.0
    gen = torch.Generator().manual_seed(0)
    worst = max(jacobian_norm_at(Applies(fn), torch.randn(shape, dtype=torch.float64, generator=gen) * 3)
                for _ in range(6))
    assert 0.5 < worst <= 1.0 + 1e-12


@pytest.mark.parametrize("fn, match", [
    (lambda x: x.sum(), "mixes the samples|every dim"),
    (lambda x: torch.amax(x, 0), "batch"),
    (lambda x: F.max_pool2d(x, 2, return_indices=True)[0], "return_indices|not a tensor|unsupported"),
    (lambda x: F.softmax(x, 1, dtype=torch.int64), "mixes|dtype|int"),
    (lambda x: x.sum(1, dtype=torch.float64), "not read|unsupported arguments"),
    # shapes follow the batch, but entries move between samples: refused, not bounded as 1
    (lambda x: torch.roll(x, 1), "mixes the samples"),
    (lambda x: x.roll(1, 0), "mixes the samples"),
    (lambda x: x.flip(0, 2), "mixes the samples"),
    (lambda x: x.flip(2, 0), "mixes the samples"),
    (lambda x: torch.flip(x, dims=(-4,)), "mixes the samples"),
])
def test_functional_refusals(fn, match):
    with pytest.raises((lk.UnsupportedLayerError, ValueError), match=match):
        lk.lipschitz_bound(Applies(fn), (2, 4, 4))


def test_softmax2d_on_samples_without_channels_is_refused():
    """Fed (B, H, W), Softmax2d normalizes over dim -3, the batch."""
    with pytest.raises(lk.UnsupportedLayerError, match="over the batch"):
        lk.lipschitz_bound(nn.Sequential(nn.Softmax2d()), (4, 4))


class Extremes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.one = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 1, 1)

    def forward(self, x):
        return torch.maximum(self.conv(x), 2.0 * x) - torch.minimum(x, self.one(x)) + x.fmax(torch.zeros(1, 2, 1, 1))


def test_elementwise_maximum_and_minimum():
    """sqrt(sum of m L^2) over the input-dependent operands (m: broadcast multiplicity): above
    every Jacobian; a constant operand adds nothing (maximum(x, 0) is relu: exactly 1)."""
    torch.manual_seed(0)
    model = Extremes().double().eval()
    upper = lk.lipschitz_bound(model, (2, 5, 5)).upper
    gen = torch.Generator().manual_seed(0)
    for _ in range(8):
        assert jacobian_norm_at(model, torch.randn(2, 5, 5, dtype=torch.float64, generator=gen)) <= upper
    relu = Applies(lambda x: torch.maximum(x, torch.zeros(())))
    assert lk.lipschitz_bound(relu, (3, 4)).upper == 1.0
    broadcast = Applies(lambda x: torch.minimum(x, x[:, :1]))  # row 0 replicated over the 3 rows
    assert lk.lipschitz_bound(broadcast, (3, 4)).upper == pytest.approx(math.sqrt(1 + 3))
    # where row 0 is the smallest every output copies it: sqrt(3), the most this map reaches
    assert jacobian_norm_at(broadcast, torch.arange(12.0, dtype=torch.float64).view(3, 4)) == pytest.approx(math.sqrt(3))


class NanoGptLayerNorm(nn.Module):
    """nanoGPT's LayerNorm (optional bias): a module of its own that calls F.layer_norm."""

    def __init__(self, ndim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(ndim) * 3)
        self.bias = None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


def test_functional_layer_and_group_norm_get_the_module_constant():
    """max|weight| / sqrt(eps); at a constant input the Jacobian is diag(weight) P / sqrt(eps), P the
    centring projection: within a few % of it (equal for equal weights)."""
    torch.manual_seed(0)
    ln = NanoGptLayerNorm(6).double()
    upper = lk.lipschitz_bound(ln, (4, 6)).upper
    module = nn.LayerNorm(6, elementwise_affine=True, bias=False).double()
    with torch.no_grad():
        module.weight.copy_(ln.weight)
    assert upper == pytest.approx(lk.lipschitz_bound(module, (4, 6)).upper, rel=1e-12)
    assert upper == pytest.approx(float(ln.weight.detach().abs().max()) / 1e-5 ** 0.5, rel=1e-12)
    assert jacobian_norm_at(ln, torch.full((4, 6), 0.7, dtype=torch.float64)) <= upper * (1 + 1e-9)
    assert jacobian_norm_at(ln, torch.full((4, 6), 0.7, dtype=torch.float64)) >= upper * 0.9
    group = Applies(lambda x: F.group_norm(x, 2, eps=1e-3))
    assert lk.lipschitz_bound(group, (4, 3, 3)).upper == pytest.approx(1 / 1e-3 ** 0.5, rel=1e-12)
