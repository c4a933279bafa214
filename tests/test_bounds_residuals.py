"""Residual blocks with a linear branch bounded as ||c_s I + c_t A|| (bounds/residuals.py),
against the dense Jacobian of each (linear) block: exact where the rule is exact, never below
the truth anywhere, and the plain sum rule (merge=False) for comparison."""
from __future__ import annotations

import operator

import pytest
import torch
import torch.nn as nn

import lipkit as lk


class Block(nn.Module):
    """combine(x, branch(x)) for a given combine function."""

    def __init__(self, branch: nn.Module, combine):
        super().__init__()
        self.branch, self.combine = branch, combine

    def forward(self, x):
        return self.combine(x, self.branch(x))


def in_place_sum(x, y):
    y += x  # torchvision's `out += identity`: writes into the branch's own output
    return y


def true_norm(model: nn.Module, shape) -> float:
    """sigma_max of the (affine) block's matrix: f(e_i) - f(0) for every basis vector e_i
    (no autograd: a block that writes in place has no gradient to take)."""
    dim = int(torch.tensor(shape).prod())
    with torch.no_grad():
        basis = torch.eye(dim, dtype=torch.float64).reshape(dim, *shape)
        matrix = (model(basis) - model(torch.zeros(1, *shape, dtype=torch.float64))).reshape(dim, -1)
    return float(torch.linalg.eigvalsh(matrix.T @ matrix)[-1].sqrt())  # (faster than an SVD at 2000+ dims)


def _bn(c):
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.weight.uniform_(0.3, 2.0)
        bn.running_var.uniform_(0.2, 3.0)
        bn.running_mean.normal_()
    return bn


CASES = {
    "x + conv": (lambda: Block(nn.Conv2d(4, 4, 3, padding=1), operator.add), (4, 8, 8)),
    "x + bn(conv)": (lambda: Block(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), _bn(4)), operator.add), (4, 8, 8)),
    "x - 0.5 conv": (lambda: Block(nn.Conv2d(3, 3, 3, padding=1), lambda x, y: torch.sub(x, y, alpha=0.5)),
                     (3, 7, 7)),
    "conv + 2 x": (lambda: Block(nn.Conv2d(3, 3, 3, padding=1), lambda x, y: torch.add(y, x, alpha=2.0)),
                   (3, 7, 7)),
    "out += x": (lambda: Block(nn.Conv2d(3, 3, 3, padding=1), in_place_sum), (3, 7, 7)),
    "x + depthwise": (lambda: Block(nn.Conv2d(4, 4, 3, padding=1, groups=4), operator.add), (4, 8, 8)),
    "x + grouped": (lambda: Block(nn.Conv2d(4, 4, 3, padding=1, groups=2), operator.add), (4, 8, 8)),
    "x + dilated": (lambda: Block(nn.Conv2d(2, 2, 3, padding=2, dilation=2), operator.add), (2, 9, 9)),
    "x + conv1d reflect": (lambda: Block(nn.Conv1d(3, 3, 5, padding=2, padding_mode="reflect"), operator.add),
                           (3, 12)),
    "x + lin(lin)": (lambda: Block(nn.Sequential(nn.Linear(6, 9), nn.Linear(9, 6)), operator.add), (6,)),
    "x + bn": (lambda: Block(_bn(3), operator.add), (3, 5, 5)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_linear_branch_is_bounded_exactly(name):
    build, shape = CASES[name]
    torch.manual_seed(0)
    model = build().double().eval()
    truth = true_norm(model, shape)
    merged = lk.lipschitz_bound(model, shape)
    plain = lk.lipschitz_bound(model, shape, merge=False).upper
    assert merged.upper == pytest.approx(truth, rel=1e-9), merged.table()
    assert merged.upper <= plain * (1 + 1e-9)  # equal where both are exact, up to the certification margin
    assert any("residual" in row.name for row in merged.layers)


def test_closed_form_minus_half_identity():
    lin = nn.Linear(5, 5, bias=False)
    with torch.no_grad():
        lin.weight.copy_(-0.5 * torch.eye(5))
    model = Block(lin, operator.add)
    # the dense value is certified from above by a rounding margin (linalg.certify_margin, ~1e-14 here)
    assert lk.lipschitz_bound(model, (5,)).upper == pytest.approx(0.5, rel=1e-12)
    assert lk.lipschitz_bound(model, (5,), merge=False).upper == pytest.approx(1.5, rel=1e-12)


def test_large_conv_branch_gets_the_gram_bound_of_the_shifted_kernel():
    torch.manual_seed(0)
    model = Block(nn.Conv2d(3, 3, 3, padding=1), operator.add).double().eval()
    shape = (3, 28, 28)  # 2352 inputs: above the dense limit, so the Gram rule bounds I + A as one conv
    bound = lk.lipschitz_bound(model, shape)
    assert "Gram" in bound.layers[0].how
    truth = true_norm(model, shape)
    assert truth <= bound.upper <= 1.02 * truth
    assert bound.upper < lk.lipschitz_bound(model, shape, merge=False).upper


@pytest.mark.parametrize("combine", [lambda x, y: x + torch.relu(y), lambda x, y: x + y + 0.5 * y],
                         ids=["nonlinear branch", "branch read twice"])
def test_what_is_not_a_linear_residual_keeps_the_sum_rule(combine):
    torch.manual_seed(0)
    model = Block(nn.Conv2d(3, 3, 3, padding=1), combine).double().eval()
    merged = lk.lipschitz_bound(model, (3, 6, 6))
    assert not any("residual" in row.name for row in merged.layers)
    assert merged.upper >= true_norm(model, (3, 6, 6)) * (1 - 1e-9)


def test_writing_into_the_source_is_not_merged():
    class IntoSource(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            x = x * 1.0
            x.add_(self.conv(x))  # (fx traces `x += ...` as x = x + ...: out of place, a true residual)
            return x

    torch.manual_seed(0)
    model = IntoSource().double().eval()
    bound = lk.lipschitz_bound(model, (3, 6, 6))
    assert not any("residual" in row.name for row in bound.layers)
    assert bound.upper >= true_norm(model, (3, 6, 6)) * (1 - 1e-9)
