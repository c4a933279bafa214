"""The certified bound is never below the truth: a sweep of the arithmetic forms a forward may
use (add / sub with alpha, in-place forms, broadcasting in every dimension, repeated operands,
slicing, cat, view / reshape / flatten with size(), scaling by constants), each in a small
LINEAR model, whose Lipschitz constant is exactly the spectral norm of its dense Jacobian."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from bound_oracles import dense_norm

import lipkit as lk

SHAPE = (2, 6, 6)


def true_constant(model: nn.Module, shape: tuple[int, ...]) -> float:
    """||J||_2 of a linear model (the same J at every input): its exact Lipschitz constant."""
    return dense_norm(model, shape)


class Forward(nn.Module):
    """A model whose forward is `fn(self, x)`, with a conv, a 1x1 conv and a linear layer."""

    def __init__(self, fn, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fn = fn
        self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.one = nn.Conv2d(2, 1, 1, bias=False)
        self.pool = nn.AvgPool2d(6)
        self.linear = nn.Linear(2 * 6 * 6, 5, bias=False)

    def forward(self, x):
        return self.fn(self, x)


def add_alpha(m, x):
    return torch.add(x, m.conv(x), alpha=10)


def sub_alpha(m, x):
    return torch.sub(x, m.conv(x), alpha=10)


def method_add_alpha(m, x):
    return m.conv(x).add(x, alpha=-4)


def inplace_add_alpha(m, x):
    y = m.conv(x)
    y.add_(x, alpha=7)
    return y


def inplace_then_view(m, x):
    y = m.conv(x)
    y.add_(x, alpha=7)
    return y.flatten(1)  # a view taken after the write reads the new values


def inplace_iadd(m, x):
    y = m.conv(x)
    y += 3 * x
    return y


def inplace_mul(m, x):
    y = m.conv(x)
    y.mul_(5.0)
    return y


def global_context(m, x):  # squeeze to 1x1, 1x1 conv, broadcast back over H x W
    return x + m.conv(m.pool(x))


def broadcast_channels(m, x):  # 1 channel broadcast to 8
    return m.one(x) + torch.zeros(1, 8, 6, 6)


def broadcast_rows(m, x):  # a row broadcast over 6 rows
    return x + m.conv(x)[:, :, :1, :]


def broadcast_both(m, x):
    return m.one(x)[:, :, :1, :1] - x


def repeated_operand(m, x):
    y = m.conv(x)
    return y + y


def repeated_in_cat(m, x):
    y = m.conv(x)
    return torch.cat([y, y, x], dim=1)


def slices(m, x):
    return m.conv(x)[:, :, 1:5, ::2] * 3


def view_with_size(m, x):
    return m.linear(m.conv(x).view(x.size(0), -1))


def reshape_with_shape(m, x):
    return m.linear(torch.reshape(m.conv(x), (x.shape[0], -1)) / 0.25)


def flatten_residual(m, x):
    h = torch.flatten(m.conv(x) - 2.0 * x, 1)
    return m.linear(h) - 0.5 * m.linear(torch.flatten(x, 1))


def scale_and_divide(m, x):
    return 2.5 * (m.conv(x) / -0.5)


def chunk_and_cat(m, x):
    a, b = m.conv(x).chunk(2, dim=1)
    return torch.cat([b, 3.0 * a, a], dim=1)


def channel_split_shuffle(m, x):  # ShuffleNet v2: split, a branch, concat, channel shuffle
    left, right = torch.split(m.conv(x), 1, dim=1)
    y = torch.cat([left, m.one(x) - 2.0 * right], dim=1)
    b, c, h, w = y.size()
    return y.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)


def unbind_rows(m, x):
    rows = m.conv(x).unbind(2)
    return rows[0] + 2.0 * rows[5]


def flip_and_roll(m, x):
    return m.conv(x).flip(2) + torch.roll(x, 2, 3) - 3.0 * torch.flip(x, (2, 3))


def repeat_and_tile(m, x):
    return torch.cat([m.one(x).repeat(1, 2, 1, 1), x], 1) + torch.tile(m.one(x), (1, 4, 1, 1))


def expand_and_narrow(m, x):
    return m.one(x).expand(-1, 2, -1, -1).narrow(3, 1, 4) + torch.narrow(x, 3, 0, 4)


def sums_and_means(m, x):
    return x.sum((2, 3)) * 0.5 + m.conv(x).mean((2, 3)) + torch.sum(x, 1, keepdim=True).flatten(1)[:, :2]


def functional_avg_pools(m, x):
    return F.avg_pool2d(m.conv(x), 3, 2, 1) + F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)


FORMS = [add_alpha, sub_alpha, method_add_alpha, inplace_add_alpha, inplace_then_view, inplace_iadd, inplace_mul, global_context,
         broadcast_channels, broadcast_rows, broadcast_both, repeated_operand, repeated_in_cat, slices,
         view_with_size, reshape_with_shape, flatten_residual, scale_and_divide, chunk_and_cat, channel_split_shuffle,
         unbind_rows, flip_and_roll, repeat_and_tile, expand_and_narrow, sums_and_means, functional_avg_pools]


@pytest.mark.parametrize("form", FORMS, ids=[f.__name__ for f in FORMS])
@pytest.mark.parametrize("method", ["exact", "gram"])
def test_bound_is_never_below_the_dense_jacobian(form, method) -> None:
    model = Forward(form).double().eval()
    truth = true_constant(model, SHAPE)
    upper = lk.lipschitz_bound(model, SHAPE, method=method).upper
    assert upper >= truth * (1 - 1e-9), f"{form.__name__}: certified {upper:.4g} < true {truth:.4g}"


def test_the_sweep_is_tight_where_the_rules_are_exact() -> None:
    """Not only sound: for forms whose rule is exact, the bound equals the truth (so a rule
    that over-counts by mistake shows up too)."""
    def flipped_sum(m, x):
        return x.flip(3).sum((2, 3)) * 3.0

    for form, factor in [(repeated_operand, 1.0), (scale_and_divide, 1.0), (inplace_mul, 1.0), (flipped_sum, 1.0)]:
        model = Forward(form).double().eval()
        truth = true_constant(model, SHAPE)
        assert lk.lipschitz_bound(model, SHAPE, method="exact").upper == pytest.approx(truth * factor, rel=1e-6)


def test_input_dependent_scales_and_products_are_refused() -> None:
    for fn in (lambda m, x: x * x, lambda m, x: x * m.conv(x), lambda m, x: m.conv(x) / x,
               lambda m, x: x.expand(3, 2, 2, 6, 6).sum(0)):
        with pytest.raises((lk.UnsupportedLayerError, ValueError)):
            lk.lipschitz_bound(Forward(fn).eval(), SHAPE)


def test_inplace_on_a_view_is_refused() -> None:
    def on_view(m, x):
        y = m.conv(x)
        top = y[:, :, :3]
        top.add_(x[:, :, :3], alpha=5)
        return y

    def view_before_write(m, x):
        y = m.conv(x)
        flat = y.flatten(1)  # taken before the write: its values change through y
        y.mul_(5)
        return flat

    for fn in (on_view, view_before_write):
        with pytest.raises(lk.UnsupportedLayerError, match="in-place"):
            lk.lipschitz_bound(Forward(fn).eval(), SHAPE)


class Scaled(nn.Linear):
    """A Linear subclass whose forward does more than Linear's (as a LoRA layer does)."""

    def forward(self, x):
        return super().forward(x) * 10


class Standardized(nn.Conv2d):
    """A conv that standardizes its weight in forward (timm's StdConv2d does)."""

    def forward(self, x):
        w = (self.weight - self.weight.mean((1, 2, 3), keepdim=True)) / self.weight.std((1, 2, 3), keepdim=True)
        return self._conv_forward(x, w, self.bias)


class Renamed(nn.Conv2d):
    """A subclass that keeps Conv2d's forward: Conv2d's rule describes it."""


def test_a_subclass_that_overrides_forward_does_not_inherit_its_base_s_rule() -> None:
    """The rule registered for Linear once bounded Scaled as a Linear: 10x too small."""
    torch.manual_seed(0)
    for model, shape, base in [(nn.Sequential(nn.Flatten(), Scaled(72, 5)), SHAPE, "Linear"),
                               (Scaled(4, 3), (4,), "Linear"), (nn.Sequential(Standardized(2, 3, 3)), SHAPE, "Conv2d")]:
        name = type(model[-1] if isinstance(model, nn.Sequential) else model).__name__
        expected = rf"(?s){name} \(overrides {base}.forward.*register_layer_bound\({name}\)"
        with pytest.raises(lk.UnsupportedLayerError, match=expected):
            lk.lipschitz_bound(model.double().eval(), shape)
    renamed = nn.Sequential(Renamed(2, 3, 3, padding=1)).double().eval()
    assert lk.lipschitz_bound(renamed, SHAPE, "exact").upper == pytest.approx(true_constant(renamed, SHAPE), rel=1e-6)


@pytest.mark.filterwarnings("ignore:Implicit dimension choice for softmax")  # torch's, for the dim=None case
def test_softmax_over_the_batch_is_refused_and_over_a_sample_dim_is_sound() -> None:
    """nn.Softmax(dim=0), or dim=None on a 3-D batch (torch then picks dim 0), normalizes
    across the samples of a batch: no per-sample constant; it was bounded as 1-Lipschitz."""
    for model, shape in [(nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=0)), (4,)),
                         (nn.Sequential(nn.Linear(4, 4), nn.Unflatten(1, (2, 2)), nn.Softmax()), (4,))]:
        with pytest.raises(lk.UnsupportedLayerError, match="mixes the samples of a batch"):
            lk.lipschitz_bound(model.eval(), shape)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Unflatten(1, (2, 3)), nn.Softmax(dim=-1)).double().eval()
    gen = torch.Generator().manual_seed(1)
    dense = max(float(torch.linalg.matrix_norm(torch.autograd.functional.jacobian(model, x[None]).reshape(6, 4), ord=2))
                for x in torch.randn(32, 4, generator=gen, dtype=torch.float64) * 3)
    assert lk.lipschitz_bound(model, (4,)).upper >= dense


class MaxIndices(nn.Module):
    """A max pool's indices used as values (they jump when the argmax moves)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool = nn.Conv2d(2, 2, 3, padding=1), nn.MaxPool2d(2, return_indices=True)

    def forward(self, x):
        values, indices = self.pool(self.conv(x))
        return values + indices.float()


def test_integer_values_made_from_the_input_are_refused() -> None:
    """A cast to an integer dtype or an argmax index is a step function: no Lipschitz constant.
    `.to(torch.long)` and a max pool's indices were bounded as if they kept the input's constant."""
    casts = [lambda m, x: m.conv(x).to(torch.long).double(), lambda m, x: m.conv(x).to(dtype=torch.int32).double(),
             lambda m, x: m.conv(x).long().double(), lambda m, x: m.conv(x).type(torch.long).double()]
    for model in [Forward(fn) for fn in casts] + [MaxIndices()]:
        with pytest.raises(lk.UnsupportedLayerError, match="a step function, which has no Lipschitz constant"):
            lk.lipschitz_bound(model.double().eval(), SHAPE)
    kept = Forward(lambda m, x: m.conv(x).to(torch.float32).to("cpu").double()).double().eval()  # floats: allowed
    assert lk.lipschitz_bound(kept, SHAPE, "exact").upper >= true_constant(kept, SHAPE) * (1 - 1e-6)
