"""CayleyConv2d, the exactly orthogonal conv of issue 13, against oracles: the singular values
of the layer's dense Jacobian (all 1; semi-orthogonal when the channel counts differ), the
dense Jacobian again after training (orthogonal by construction, not by initialization),
gradcheck, a state_dict round trip, and lk.lipschitz_bound reading the exact value 1."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import lipkit as lk


def jacobian(layer: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    x = torch.randn(1, *shape, dtype=torch.float64)
    return torch.autograd.functional.jacobian(lambda t: layer(t.view(1, *shape)).flatten(), x.flatten())


@pytest.mark.parametrize(("c_in", "c_out", "kernel", "size"), [(3, 3, 3, 6), (2, 4, 3, 5), (4, 2, 2, 6), (1, 1, 5, 7)])
def test_singular_values_are_all_one_before_and_after_training(c_in, c_out, kernel, size):
    torch.manual_seed(0)
    layer = lk.CayleyConv2d(c_in, c_out, kernel, size, bias=False).double()
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for step in range(2):
        sv = torch.linalg.svdvals(jacobian(layer, (c_in, size, size)))
        # min(c_in, c_out) * size^2 singular values, every one of them 1
        assert sv.numel() == min(c_in, c_out) * size * size
        assert (sv - 1).abs().max() < 1e-10, (step, sv.min(), sv.max())
        loss = layer(torch.randn(4, c_in, size, size, dtype=torch.float64)).sin().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_gradcheck_and_state_dict_round_trip():
    torch.manual_seed(0)
    layer = lk.CayleyConv2d(2, 3, 3, 4).double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, t: torch.func.functional_call(layer, {"weight": w}, (t,)),
                                    (layer.weight.detach().clone().requires_grad_(), x))
    copy = lk.CayleyConv2d(2, 3, 3, 4).double()
    copy.load_state_dict(layer.state_dict())
    torch.testing.assert_close(copy(x), layer(x))


def test_a_cayley_groupsort_network_is_certified_one_lipschitz():
    torch.manual_seed(0)
    net = nn.Sequential(lk.CayleyConv2d(2, 4, 3, 6), lk.GroupSort(2), lk.CayleyConv2d(4, 4, 3, 6), lk.GroupSort(2),
                        nn.Flatten(), nn.Linear(4 * 36, 1))
    lk.constrain(net, "bjorck", where=nn.Linear)
    bound = lk.lipschitz_bound(net.eval(), (2, 6, 6))
    assert float(bound.upper) == pytest.approx(1.0, abs=1e-5)
    for row in bound.layers[:3:2]:
        assert "Cayley" in row.how and row.bound == pytest.approx(1.0, abs=1e-6)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="CayleyConv2d: kernel_size=5 is larger than the input size=4"):
        lk.CayleyConv2d(2, 2, 5, 4)
    with pytest.raises(ValueError, match="CayleyConv2d: size must be an int >= 1, got 0"):
        lk.CayleyConv2d(2, 2, 1, 0)
    with pytest.raises(ValueError, match=r"expects inputs \(N, 2, 6, 6\), got \(1, 2, 8, 8\)"):
        lk.CayleyConv2d(2, 2, 3, 6)(torch.randn(1, 2, 8, 8))
