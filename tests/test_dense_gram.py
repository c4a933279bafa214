"""The dense certified path of "gram" (lipkit/norms/dense_gram.py): its Gram is the operator's,
from either side, and the policy sends a conv to it exactly where the symbol bound is loose
and the dense norm affordable."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import lipkit as lk
from lipkit.norms.dense_gram import smaller_gram
from lipkit.norms.linalg import certify_margin, dense_matrix
from lipkit.norms.measure import conv_gram_norm
from lipkit.norms.operators import build_operator


@pytest.mark.parametrize("layer, in_shape", [
    (nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 6, 6)),  # in 72 < out 108: A^T A
    (nn.Conv2d(3, 2, 3, stride=2, padding=1, padding_mode="replicate"), (3, 6, 6)),  # in 108 > out 18: A A^T
])
def test_smaller_gram_is_the_operators_gram(layer, in_shape):
    torch.manual_seed(0)
    op = build_operator(layer.double(), in_shape)
    rows = dense_matrix(op.forward, op.in_shape, torch.float64, "cpu")  # row i = A e_i, so rows = A^T
    expected = rows @ rows.T if op.in_dim <= op.out_dim else rows.T @ rows
    assert torch.allclose(smaller_gram(op, "cpu"), expected, atol=1e-12)


@pytest.mark.parametrize("mode, side, dense", [
    ("zeros", 32, False),  # 4096 x 6144: the symbol is within ~0.3%, a dense norm would cost ~10 s
    ("zeros", 12, True),  # small: the symbol is loose on small domains, the dense norm cheap
    ("reflect", 32, True),  # the symbol carries the pad map's factor (~2x): dense up to 4096
    ("replicate", 64, False),  # 16384 inputs: past the dense limit, symbol x pad factor
    ("circular", 12, False),  # the symbol is exact
])
def test_which_convs_take_the_dense_path(mode, side, dense):
    torch.manual_seed(0)
    layer = nn.Conv2d(4, 6, 3, padding=1, padding_mode=mode).double()
    value, took_dense = conv_gram_norm(layer, (4, side, side))
    assert took_dense == dense
    if side <= 12:  # cheap oracle: the dense SVD
        exact = lk.operator_norm(layer, (4, side, side), "exact")
        assert exact <= value <= exact * (1 + certify_margin(4 * side * side, 6 * side * side) if dense else 1.01)


def test_network_bound_of_a_reflect_padded_conv_is_its_exact_norm():
    # before the dense path this was the symbol bound times the pad map's norm: ~1.9x exact
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1, padding_mode="replicate")).double()
    result = lk.lipschitz_bound(net, (3, 10, 10))
    exact = [lk.operator_norm(net[i], (c, 10, 10), "exact") for i, c in ((0, 3), (2, 4))]
    assert all("dense, certified" in row.how for row in result.layers if row.kind == "Conv2d"), result.layers
    assert exact[0] * exact[1] <= result.upper <= exact[0] * exact[1] * (1 + 2 * certify_margin(400, 400))
