"""Whole-network bounds: closed forms, upper >= lower, clear errors, no state touched."""
import copy

import pytest
import torch
import torch.nn as nn

import lipkit as lk
from lipkit import examples


def jacobian_norm_at(model, x):
    jac = torch.autograd.functional.jacobian(lambda z: model(z.unsqueeze(0)).flatten(), x)
    return float(torch.linalg.svdvals(jac.reshape(jac.shape[0], -1))[0])


def test_linear_model_bounds_are_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4))
    sigma = float(torch.linalg.svdvals(model[0].weight.detach())[0])
    assert lk.lipschitz_bound(model, (6,), "exact").upper == pytest.approx(sigma, rel=1e-6)
    assert lk.lipschitz_bound(model, (6,)).upper == pytest.approx(sigma, rel=1e-4)
    lower = lk.lipschitz_lower_bound(model, torch.randn(8, 6), steps=20)
    assert lower == pytest.approx(sigma, rel=1e-5)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 5)

    def forward(self, x):
        return 2.0 * x + self.fc(x) / 4


def test_residual_and_scaling_rules():
    torch.manual_seed(0)
    model = Residual()
    sigma = float(torch.linalg.svdvals(model.fc.weight.detach())[0])
    result = lk.lipschitz_bound(model, (5,), "exact")
    assert result.upper == pytest.approx(2.0 + sigma / 4, rel=1e-6)
    # the model is linear, so its true constant is ||2I + W/4||, below the bound
    true = float(torch.linalg.svdvals(2 * torch.eye(5) + model.fc.weight.detach() / 4)[0])
    assert true <= result.upper + 1e-9
    assert lk.lipschitz_lower_bound(model, torch.randn(4, 5), steps=10) == pytest.approx(true, rel=1e-5)


def test_concatenation_rule():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            return torch.cat([self.a(x), torch.relu(self.b(x))], dim=1)

    m = Cat()
    sa, sb = (float(torch.linalg.svdvals(lin.weight.detach())[0]) for lin in (m.a, m.b))
    assert lk.lipschitz_bound(m, (3,), "exact").upper == pytest.approx((sa**2 + sb**2) ** 0.5)


@pytest.mark.parametrize(
    "name, shape",
    [("mlp", (2,)), ("small_resnet", (1, 28, 28)), ("dcgan_critic_small", (3, 32, 32))],
)
def test_upper_bound_dominates_lower_bound(name, shape):
    model = examples.dcgan_critic(width=8) if name == "dcgan_critic_small" else getattr(examples, name)()
    torch.manual_seed(1)
    x = torch.randn(6, *shape)
    upper = lk.lipschitz_bound(model, shape)
    lower = lk.lipschitz_lower_bound(model, x, steps=30)
    assert 0 < lower <= upper.upper
    # the lower bound includes the Jacobian norm at the inputs (autograd oracle)
    assert lower >= jacobian_norm_at(model.double(), x[0].double()) * (1 - 1e-6)
    # every leaf layer appears once, alone or in a merged row "a+b" (rows follow the call
    # order, not the definition order)
    assert sorted(n for r in upper.layers for n in r.name.split("+")) == sorted(
        n for n, m in model.named_modules() if not list(m.children())
    )


class ScalesInPlace(nn.Module):
    """A forward that writes into its input (as an in-place input normalization does)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x.mul_(2))


def test_lower_bound_of_a_forward_writing_into_its_input():
    """It failed ("a leaf Variable that requires grad is being used in an in-place operation")
    and would have doubled the caller's inputs; the constant is exactly 2 ||W||."""
    torch.manual_seed(0)
    model = ScalesInPlace()
    x = torch.randn(8, 4)
    before = x.clone()
    true = 2 * float(torch.linalg.svdvals(model.fc.weight.detach())[0])
    assert lk.lipschitz_lower_bound(model, x, steps=5) == pytest.approx(true, rel=1e-5)
    assert torch.equal(x, before)
    assert lk.lipschitz_bound(model, (4,)).upper == pytest.approx(true, rel=1e-6)


def test_table_lists_every_layer_with_reshaped_sigma():
    model = examples.small_resnet()
    result = lk.lipschitz_bound(model, (1, 28, 28))
    text = result.table()
    assert "2.conv1" in text and "AvgPool2d" in text
    conv = next(r for r in result.layers if r.name == "0")
    assert conv.reshaped_sigma == pytest.approx(float(torch.linalg.svdvals(model[0].weight.detach().flatten(1))[0]), rel=1e-5)
    assert conv.input_shape == (1, 28, 28)


def test_bounds_leave_the_global_rng_alone():
    """The copy check of padding / flips drew from torch's global generator, so computing a
    bound mid-training changed every later random draw of the run."""
    model = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(2, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 1)).eval()
    state = torch.get_rng_state()
    lk.lipschitz_bound(model, (2, 6, 6))
    assert torch.equal(state, torch.get_rng_state())


def test_bounds_do_not_touch_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 1))
    model.train()
    with torch.no_grad():
        model[1].running_var.fill_(2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # The certificate is of the eval-mode network: asked of a train-mode BatchNorm it refuses
    # (issue 16: it used to answer for the eval network without a word).
    with pytest.raises(ValueError, match=r"train mode \('1'\).*model.eval\(\)"):
        lk.lipschitz_bound(model, (2, 6, 6))
    lk.lipschitz_lower_bound(model, torch.randn(4, 2, 6, 6), steps=5)  # an estimate on an eval copy
    assert model.training and model[1].training
    model.eval()
    lk.lipschitz_bound(model, (2, 6, 6))
    assert not model.training and not model[1].training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_unsupported_layer_names_it_and_registration_fixes_it():
    class Doubler(nn.Module):
        def forward(self, x):
            return 2 * x

    model = nn.Sequential(nn.Linear(3, 3), nn.Hardshrink())  # a step function: no rule
    with pytest.raises(lk.UnsupportedLayerError, match="(?s)Hardshrink.*register_layer_bound"):
        lk.lipschitz_bound(model, (3,))

    class Scale(nn.Module):  # a leaf-like layer that fx would otherwise trace through
        def forward(self, x):
            return x * x  # not Lipschitz globally: no rule

    with pytest.raises(lk.UnsupportedLayerError, match="mul"):
        lk.lipschitz_bound(nn.Sequential(Scale()), (3,))

    @lk.register_layer_bound(Scale)
    def _(layer, input_shape, method):
        return lk.LayerRule(bound=6.0, how="|2x| <= 6 on [-3, 3]")

    assert lk.lipschitz_bound(nn.Sequential(Scale(), Doubler()), (3,)).upper == pytest.approx(12.0)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="does not fit layer '0'"):
        lk.lipschitz_bound(examples.mlp(), (3,))
    with pytest.raises(ValueError, match="certified"):
        lk.lipschitz_bound(examples.mlp(), (2,), method="power")

    class TwoInputs(nn.Module):
        def forward(self, x, y):
            return x + y

    with pytest.raises(ValueError, match="one tensor input"):
        lk.lipschitz_bound(TwoInputs(), (2,))

    class BatchMean(nn.Module):
        def forward(self, x):
            return x - x.mean(0)

    with pytest.raises(ValueError, match="mixes the samples"):
        lk.lipschitz_bound(BatchMean(), (2,))


@pytest.mark.parametrize("layer,shape", [(nn.Linear(3, 4), (3,)), (nn.Conv2d(2, 3, 3, padding=1), (2, 6, 6))],
                         ids=["linear", "conv"])
def test_a_bare_layer_is_a_model_too(layer, shape):
    """fx never makes the root a leaf: a saved nn.Linear used to be traced into F.linear and
    refused (issue 16's unimportable-pickle probe found it). Oracle: the dense Jacobian."""
    x = torch.randn(shape)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0], x).reshape(-1, x.numel())
    true = float(torch.linalg.svdvals(jac)[0])
    bound = lk.lipschitz_bound(layer, shape, method="exact")
    assert bound.upper == pytest.approx(true, rel=1e-5) and bound.layers[0].name == "model"


def test_an_unsupported_model_fails_fast_naming_every_problem(monkeypatch):
    """Issue 15 item 2: every unsupported layer type and operation in ONE error, before any
    norm is computed (resnet18 used to compute norms for 65 s, then refuse its last layer)."""
    import time

    import lipkit.bounds.network as network

    class Square(nn.Module):  # traced through: its x * x is the unsupported operation
        def forward(self, x):
            return x * x

    computed = []
    monkeypatch.setattr(network, "layer_bound", lambda *a: computed.append(a))
    model = nn.Sequential(nn.Linear(3, 8), nn.Hardshrink(), Square(), nn.Threshold(0.1, 20.0), nn.Hardshrink(),
                          nn.Linear(8, 1))  # (step functions: no rule)
    began = time.perf_counter()
    with pytest.raises(lk.UnsupportedLayerError) as info:
        lk.lipschitz_bound(model, (3,))
    assert time.perf_counter() - began < 1.0 and computed == []
    message = str(info.value)
    assert "3 problems" in message and "Hardshrink (at '1', '4')" in message and "Threshold (at '3')" in message
    assert "mul" in message and "@lipkit.register_layer_bound(Hardshrink)" in message


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_model_gets_the_bound_of_its_stored_values(dtype):
    """The certificate is for the map its stored (rounded) parameters define: the same as its
    float64 copy's. A bfloat16 model raised (torch has no half SVD for the reshaped sigma), and a
    float16 BatchNorm's slope, computed in float16, came out 1.2e-4 below (a bound too small)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.ReflectionPad2d(1),
                          nn.Conv2d(8, 4, 3), nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
                          nn.Upsample(scale_factor=2, mode="bilinear"), nn.Flatten(), nn.Linear(4 * 16 * 16, 3),
                          nn.BatchNorm1d(3)).eval()
    for layer in model.modules():
        if getattr(layer, "running_var", None) is not None:
            layer.running_var.uniform_(0.5, 2)
            layer.weight.data.normal_()
    low = model.to(dtype)
    exact = copy.deepcopy(low).double()
    for merge in (True, False):
        assert lk.lipschitz_bound(low, (3, 8, 8), merge=merge).upper == pytest.approx(
            lk.lipschitz_bound(exact, (3, 8, 8), merge=merge).upper, rel=1e-12)
    weight = low[0].weight.detach()
    assert float(lk.spectral_norm(weight)) == pytest.approx(float(lk.spectral_norm(weight.double())), rel=1e-6)
