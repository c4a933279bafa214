"""1-Lipschitz building blocks (issue 13): Bjorck and AOL reparametrizations, GroupSort /
FullSort, and the HKR and Lipschitz-margin losses, against oracles: svdvals, the dense
Jacobian of each layer, closed forms, and gradcheck."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_conv_sn_contract import GEOMETRIES

import lipkit as lk
from lipkit.constraints.aol import AOLRescaling, _as_conv_layout, _padding_factor, conv_row_sums
from lipkit.constraints.bjorck import bjorck_orthonormalize
from lipkit.norms.operators import CONV_TRANSPOSE, ConvGeometry


def true_norm(layer: nn.Module, shape: tuple[int, ...]) -> float:
    return lk.operator_norm(lk.export(nn.Sequential(layer))[0], shape, "exact")


# --- Bjorck ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(16, 16), (64, 64), (10, 40), (40, 10), (1, 30)])
@pytest.mark.parametrize("bound", [1.0, 2.5])
def test_bjorck_linear_is_orthonormal_before_and_after_training(shape, bound):
    torch.manual_seed(0)
    model = lk.constrain(nn.Sequential(nn.Linear(shape[1], shape[0])), "bjorck", bound=bound)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(2):
        sv = torch.linalg.svdvals(model[0].weight.detach().double())
        assert (sv - bound).abs().max() <= 1e-3 * bound, (step, sv)
        loss = model(torch.randn(8, shape[1])).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_bjorck_never_exceeds_one_even_unconverged():
    """Each step maps sigma in (0, 1] to sigma * p(1 - sigma^2) <= 1: a certificate at any
    iteration count, also for an ill-conditioned weight."""
    w = torch.randn(50, 50, dtype=torch.float64) @ torch.diag(torch.logspace(-4, 1, 50, dtype=torch.float64))
    for iters in (0, 1, 3, 8):
        for order in (1, 2, 3):
            assert torch.linalg.svdvals(bjorck_orthonormalize(w, iters, order))[0] <= 1 + 1e-12


def test_bjorck_is_the_polar_factor():
    w = torch.randn(12, 7, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(w, full_matrices=False)
    torch.testing.assert_close(bjorck_orthonormalize(w, 30, 2), u @ vh)


def test_bjorck_refuses_convs_in_one_line():
    with pytest.raises(ValueError, match="2-D weights .*'0' \\(Conv2d\\).*use 'aol'"):
        lk.constrain(nn.Sequential(nn.Conv2d(2, 2, 3)), "bjorck")
    for bad in ({"order": 4}, {"order": True}, {"iters": 0}, {"bound": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            lk.constrain(nn.Sequential(nn.Linear(2, 2)), "bjorck", **bad)


# --- AOL ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", GEOMETRIES)
def test_aol_conv_true_norm_is_at_most_the_bound(name):
    """Every conv geometry of the SN contract test, at registration and after 30 Adam steps."""
    factory, shape = GEOMETRIES[name]
    torch.manual_seed(0)
    layer = factory()
    critic = lk.constrain(nn.Sequential(layer, nn.Flatten()), "aol")
    before = true_norm(critic[0], shape)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):  # push the norm up: maximize the output energy of one direction
        x = torch.randn(8, *shape, generator=gen)
        loss = -critic(x).sum(1).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = true_norm(critic[0], shape)
    assert before <= 1 + 1e-6 and after <= 1 + 1e-6, (before, after)
    assert after > 0.05, after  # not trivially small either


@pytest.mark.parametrize("bound", [1.0, 0.3])
def test_aol_linear_bound_and_fixed_point(bound):
    torch.manual_seed(0)
    layer = lk.constrain(nn.Sequential(nn.Linear(20, 12)), "aol", bound=bound)[0]
    assert torch.linalg.svdvals(layer.weight.detach())[0] <= bound * (1 + 1e-6)
    # a weight with orthonormal columns has W^T W = I: AOL leaves it as it is (times bound)
    q, _ = torch.linalg.qr(torch.randn(20, 12))
    plain = nn.Linear(12, 20)
    with torch.no_grad():
        plain.weight.copy_(q)
    lk.constrain(nn.Sequential(plain), "aol", bound=bound)
    torch.testing.assert_close(plain.weight.detach(), bound * q, atol=1e-6, rtol=0)


def test_aol_on_an_orthogonal_conv_keeps_it():
    """A 1x1 conv with an orthogonal channel mixing is an orthogonal operator: d = 1."""
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    conv = nn.Conv2d(6, 6, 1)
    with torch.no_grad():
        conv.weight.copy_(q[:, :, None, None])
    lk.constrain(nn.Sequential(conv), "aol")
    torch.testing.assert_close(conv.weight.detach()[:, :, 0, 0], q, atol=1e-6, rtol=0)


GRADCHECK_LAYERS = {
    "linear": lambda: nn.Linear(5, 4),
    "conv-groups": lambda: nn.Conv2d(2, 4, 3, 2, 1, groups=2),
    "convT": lambda: nn.ConvTranspose1d(2, 3, 4, 2, 1),
    "reflect-dilated": lambda: nn.Conv1d(2, 2, 3, padding=2, dilation=2, padding_mode="reflect"),
}
GRADCHECK_CASES = [(m, name) for m in ("aol", "bjorck") for name in GRADCHECK_LAYERS
                   if m == "aol" or name == "linear"]  # bjorck is for Linear layers only


@pytest.mark.parametrize(("method", "name"), GRADCHECK_CASES)
def test_gradcheck_through_the_reparametrization(method, name):
    torch.manual_seed(0)
    layer = GRADCHECK_LAYERS[name]().double()
    constraint = lk.constrain(nn.Sequential(layer), method)[0].parametrizations.weight[0]
    raw = torch.randn_like(layer.parametrizations.weight.original, requires_grad=True)
    # eval: gradcheck perturbs raw through .data (no version bump), which a training-mode read
    # would answer with the value kept for the step (constraints/step_reuse.py); the map is
    # the same in both modes
    constraint.eval()
    assert torch.autograd.gradcheck(constraint, (raw,))


# --- GroupSort ------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", [lk.GroupSort(2), lk.GroupSort(3), lk.FullSort()], ids=repr)
def test_groupsort_jacobian_is_a_permutation(activation):
    x = torch.randn(1, 6, 2, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: activation(t).flatten(), x).reshape(12, 12)
    assert set(jac.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(jac.sum(0), torch.ones(12, dtype=torch.float64))
    torch.testing.assert_close(jac.sum(1), torch.ones(12, dtype=torch.float64))
    y = activation(x).view(6 // (activation.group_size or 6), -1, 2)  # each group sorted ascending
    assert (y.diff(dim=1) >= 0).all()


def test_groupsort_errors_name_the_value():
    with pytest.raises(ValueError, match="divisible by 4, got 6"):
        lk.GroupSort(4)(torch.randn(2, 6))
    with pytest.raises(ValueError, match="group_size must be an int >= 1"):
        lk.GroupSort(0)


def test_orthonormal_groupsort_network_is_certified_one_and_preserves_gradient_norms():
    """Square Bjorck layers + GroupSort and a last unit row: the gradient norm is exactly 1
    at every input (the Jacobian is a product of orthogonal and permutation matrices), and
    the certified bound reads 1."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), lk.GroupSort(2), nn.Linear(8, 8), lk.FullSort(), nn.Linear(8, 1)).double()
    lk.constrain(net, "bjorck")
    assert lk.lipschitz_bound(net, (8,)).upper == pytest.approx(1.0, abs=1e-6)
    x = torch.randn(16, 8, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(net(x).sum(), x)
    torch.testing.assert_close(grad.norm(dim=1), torch.ones(16, dtype=torch.float64), atol=1e-6, rtol=0)


# --- losses ---------------------------------------------------------------------------------

def test_hkr_binary_closed_form():
    f = torch.tensor([0.5, -2.0, 1.5, 0.2])
    y = torch.tensor([1, -1, 1, -1])
    kr = (0.5 + 1.5) / 2 - (-2.0 + 0.2) / 2
    hinge = (0.5 + 0 + 0 + 1.2) / 4  # relu(1 - y f)
    assert float(lk.hkr_loss(f, y, alpha=10, margin=1)) == pytest.approx(-kr + 10 * hinge)
    assert float(lk.hkr_loss(f[:, None], (y > 0).long(), alpha=10, margin=1)) == pytest.approx(-kr + 10 * hinge)


def test_hkr_multiclass_is_one_vs_all():
    torch.manual_seed(0)
    out, target = torch.randn(9, 3), torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1])
    expected = 0.0
    for k in range(3):
        sign = torch.where(target == k, 1.0, -1.0)
        expected -= (out[target == k, k].mean() - out[target != k, k].mean()) / 3
        expected += 0.5 * F.relu(0.7 - sign * out[:, k]).sum() / 9
    assert float(lk.hkr_loss(out, target, alpha=0.5, margin=0.7)) == pytest.approx(float(expected))


def test_margin_cross_entropy_shifts_non_target_logits():
    torch.manual_seed(0)
    logits, target = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    shifted = logits + math.sqrt(2) * 2.0 * 0.25
    shifted[torch.arange(5), target] = logits[torch.arange(5), target]
    assert float(lk.margin_cross_entropy(logits, target, eps=0.25, lipschitz=2.0)) == \
        pytest.approx(float(F.cross_entropy(shifted, target)))
    assert float(lk.margin_cross_entropy(logits, target, eps=0)) == pytest.approx(float(F.cross_entropy(logits, target)))


def test_loss_errors_name_the_value():
    logits, target = torch.randn(3, 4), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="eps must be a finite number >= 0, got -1"):
        lk.margin_cross_entropy(logits, target, eps=-1)
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        lk.margin_cross_entropy(logits, torch.tensor([0, 1, 4]), eps=0.1)
    with pytest.raises(ValueError, match="binary targets must be"):
        lk.hkr_loss(torch.randn(3), torch.tensor([0, 1, 2]), alpha=1, margin=1)
    with pytest.raises(ValueError, match="alpha must be"):
        lk.hkr_loss(logits, target, alpha=float("nan"), margin=1)


# --- AOL's two ingredients against their definitions ----------------------------------------

def full_stride_one_copy(layer: nn.Module) -> nn.Module:
    """The same weight as a stride-1 zero-padded layer that outputs every overlap (the
    unbounded conv restricted to an input: its Gram's interior rows hold every shift)."""
    nd = len(layer.kernel_size)
    reach = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size)]
    if isinstance(layer, CONV_TRANSPOSE):  # padding 0 is already the full transposed conv
        copy = type(layer)(layer.in_channels, layer.out_channels, layer.kernel_size, 1, 0,
                           groups=layer.groups, dilation=layer.dilation, bias=False)
    else:
        copy = type(layer)(layer.in_channels, layer.out_channels, layer.kernel_size, 1, reach,
                           groups=layer.groups, dilation=layer.dilation, bias=False)
    with torch.no_grad():
        copy.weight.copy_(layer.weight)
    return copy.double(), nd, reach


@pytest.mark.parametrize("name", GEOMETRIES)
def test_aol_row_sums_are_those_of_the_dense_gram(name):
    """r_i = the largest absolute row sum of the layer's Gram J^T J over the rows of input
    channel i (interior rows see every shift): groups, dilation, ConvTranspose layout."""
    factory, _ = GEOMETRIES[name]
    torch.manual_seed(1)
    layer = factory()
    copy, nd, reach = full_stride_one_copy(layer)
    n = [3 * r + 3 for r in reach]
    shape = (layer.in_channels, *n)
    jac = lk_dense(copy, shape)
    rows = (jac.T @ jac).abs().sum(1).view(layer.in_channels, -1).max(dim=1).values
    constraint = AOLRescaling(layer)
    w = layer.weight.detach().double()
    conv_w = _as_conv_layout(w, layer.groups) if isinstance(layer, CONV_TRANSPOSE) else w
    torch.testing.assert_close(conv_row_sums(conv_w, layer.groups), rows)
    # and the weight the layer uses is the raw one with input channel i scaled by r_i^(-1/2)
    d = rows.rsqrt() * constraint.factor
    if isinstance(layer, CONV_TRANSPOSE):
        expected = w * d.view(-1, *(1,) * (w.dim() - 1))
    else:
        in_g, out_g = w.shape[1], w.shape[0] // layer.groups
        channel = (torch.arange(w.shape[0])[:, None] // out_g) * in_g + torch.arange(in_g)[None, :]
        expected = w * d[channel].view(*w.shape[:2], *(1,) * (w.dim() - 2))
    torch.testing.assert_close(constraint(w), expected)


def lk_dense(layer: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    basis = torch.eye(math.prod(shape), dtype=torch.float64).view(-1, *shape)
    with torch.no_grad():
        return layer(basis).flatten(1).T


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("pads", [(1, 1), (2, 2), (0, 2), (2, 1)])
def test_aol_padding_factor_covers_every_input_size(mode, pads):
    """The factor AOL divides by is >= ||padding map|| at every input size torch accepts."""
    from lipkit.norms.conv_symbol import pad_operator_norm

    conv = nn.Conv1d(1, 1, 3, padding=0, padding_mode=mode)
    conv._reversed_padding_repeated_twice = list(pads)  # (left, right) as torch stores them
    conv.padding = (max(pads),)
    factor = _padding_factor(ConvGeometry.of(conv), (3,))
    for n in range(1, 12):
        try:
            norm = pad_operator_norm([n], [pads], mode)
        except (RuntimeError, ValueError):  # a size torch refuses for this padding
            continue
        if mode == "circular" and sum(pads) <= 2:
            continue  # a cropped shifted circular conv: no entry reaches one output twice
        assert norm <= factor + 1e-12, (n, norm, factor)


# --- the lipnet critic method ---------------------------------------------------------------

def test_lipnet_method_builds_a_certified_gradient_norm_preserving_critic():
    from lipkit.methods import apply_method
    from lipkit.models import conv_critic, mlp_critic
    from lipkit.train.presets import preset_defaults

    hp = preset_defaults("lipnet", toy=True)
    critic = mlp_critic(2, 16, 3).double()
    apply_method(critic, "lipnet", hp, "critic")
    assert sum(isinstance(m, lk.GroupSort) for m in critic.modules()) == 3
    assert not any(isinstance(m, (nn.ReLU, nn.LeakyReLU)) for m in critic.modules())
    assert lk.lipschitz_bound(critic, (2,)).upper <= 1 + 1e-9
    x = torch.randn(32, 2, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x)
    assert (grad.norm(dim=1) <= 1 + 1e-9).all()

    convs = conv_critic((1, 8, 8), 4)
    apply_method(convs, "lipnet", preset_defaults("lipnet", toy=False), "critic")
    assert lk.lipschitz_bound(convs, (1, 8, 8), "exact").upper <= 1 + 1e-5


def test_lipnet_with_sn_convs_holds_each_conv_true_norm_at_one():
    """lipnet_conv="sn-conv": every conv keeps its TRUE operator norm (dense Jacobian) at 1
    within 1e-3 through Adam steps, Linears stay Bjorck-orthonormal, ReLUs become GroupSort;
    any other value is refused by name."""
    from lipkit.constraints.conv import ConvSpectralNormalization
    from lipkit.methods import apply_method
    from lipkit.models import cnn_classifier
    from lipkit.train.presets import preset_defaults

    torch.manual_seed(0)
    model = cnn_classifier((1, 8, 8), 3, width=2, hidden=6).double()
    apply_method(model, "lipnet", {**preset_defaults("lipnet", toy=False), "lipnet_conv": "sn-conv"}, "classifier")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(isinstance(c.parametrizations.weight[0], ConvSpectralNormalization) for c in convs)
    assert sum(isinstance(m, lk.GroupSort) for m in model.modules()) == 3
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.rand(16, 1, 8, 8, dtype=torch.float64), torch.randint(0, 3, (16,))
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    plain = lk.export(model)
    shapes = [(1, 8, 8), (2, 8, 8), (4, 4, 4)]
    norms = [lk.operator_norm(layer, shape, "exact") for layer, shape in
             zip([m for m in plain if isinstance(m, nn.Conv2d)], shapes)]
    assert all(abs(n - 1) <= 1e-3 for n in norms), norms
    for linear in (m for m in plain if isinstance(m, nn.Linear)):
        assert torch.allclose(torch.linalg.svdvals(linear.weight), torch.ones(()).double(), atol=1e-3)
    assert lk.lipschitz_bound(model, (1, 8, 8), "exact").upper <= 1 + 3e-3
    with pytest.raises(ValueError, match=r"lipnet_conv='bjorck' is not allowed; choose one of \('aol', 'sn-conv'\)"):
        apply_method(cnn_classifier((1, 8, 8), 3, 2, 6), "lipnet",
                     {**preset_defaults("lipnet", toy=False), "lipnet_conv": "bjorck"}, "classifier")


def test_sort_activations_needs_an_activation_module():
    with pytest.raises(ValueError, match="no nn.ReLU / nn.LeakyReLU module"):
        lk.constrain  # noqa: B018  (the public API stays importable beside it)
        from lipkit.layers import sort_activations_
        sort_activations_(nn.Sequential(nn.Linear(2, 2), nn.Tanh()))


def test_train_clf_lipnet_with_each_loss_is_certified_one_lipschitz(tmp_path):
    """--reg lipnet turns the cnn classifier into GroupSort + Bjorck + AOL; --loss margin / hkr
    train it; its certified bound is <= 1 (the robust metrics use it)."""
    import json

    from lipkit.train.classify import fit
    from lipkit.train.clf_config import ClfConfig

    for loss in ("margin", "hkr", "ce"):
        out = tmp_path / loss
        fit(ClfConfig(out=str(out), data="digits", reg="lipnet", loss=loss, steps=3, train_size=64, val_size=32,
                      test_size=32, width=4, hidden=8, batch_size=16, pgd_size=8, pgd_steps=2,
                      lower_bound_size=4, lower_bound_steps=1, progress=False))
        final = json.loads((out / "summary.json").read_text())["final"]
        assert final["lipschitz_upper"] <= 1 + 1e-5 and final["lipschitz_lower"] <= final["lipschitz_upper"]


def test_classification_losses_are_the_library_losses():
    import dataclasses

    from lipkit.train.classify import classification_loss
    from lipkit.train.clf_config import ClfConfig

    logits, labels = torch.randn(6, 10), torch.randint(0, 10, (6,))
    from lipkit.train.clf_config import resolve_config

    c = resolve_config(ClfConfig(data="digits"))
    margin = dataclasses.replace(c, loss="margin", margin_eps=0.3, temperature=4.0)
    assert float(classification_loss(margin, logits, labels)) == pytest.approx(
        float(lk.margin_cross_entropy(4.0 * logits, labels, eps=1.2)))
    hkr = dataclasses.replace(c, loss="hkr", hkr_alpha=5.0, hkr_margin=0.2)
    assert float(classification_loss(hkr, logits, labels)) == pytest.approx(
        float(lk.hkr_loss(logits, labels, alpha=5.0, margin=0.2)))
    assert float(classification_loss(c, logits, labels)) == pytest.approx(float(F.cross_entropy(logits, labels)))
    with pytest.raises(ValueError, match="loss='l1' is not allowed"):
        resolve_config(dataclasses.replace(c, loss="l1"))
