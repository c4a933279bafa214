"""Penalties against closed forms and hand computations (oracles, not snapshots).

Each peer bug of ANCHORS.md ("GP: norm per pixel, one norm over the batch, eps per pixel,
missing create_graph, NaN from sqrt at zero") has a test that would fail with it.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lipkit.penalties.snr as spectral_module
from lipkit.penalties import (
    SpectralPenalty,
    frobenius_penalty,
    gradient_penalty,
    input_gradient_penalty,
    l2_penalty,
    spectral_penalty,
    weight_gradient_penalty,
)

DT = torch.float64


def mixed_model(seed: int = 0, dtype: torch.dtype = DT) -> nn.Module:
    """Linear + Conv2d + ConvTranspose2d (dim 1 in the reshape convention), with biases."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(4, 2, 3, stride=2),
        nn.Flatten(),
        nn.Linear(2 * 11 * 11, 5),
    ).to(dtype)


def weight_mats(model: nn.Module) -> list[torch.Tensor]:
    """Reshaped weights by hand: (out, -1), ConvTranspose weights have out on dim 1."""
    mats = []
    for m in model.modules():
        if isinstance(m, nn.ConvTranspose2d):
            mats.append(m.weight.transpose(0, 1).reshape(m.weight.shape[1], -1))
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            mats.append(m.weight.reshape(m.weight.shape[0], -1))
    return mats


class LinearCritic(nn.Module):
    """f(x) = w . flatten(x) + b: gradient w everywhere, so GP = (||w|| - target)^2."""

    def __init__(self, shape: tuple[int, ...], norm: float) -> None:
        super().__init__()
        w = torch.randn(math.prod(shape), dtype=DT)
        self.w = nn.Parameter(w * (norm / w.norm()))
        self.b = nn.Parameter(torch.tensor(0.3, dtype=DT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b


# ---------------------------------------------------------------- contract (optax style)
def _weight_penalties():
    return {
        "l2": lambda m: l2_penalty(m),
        "frobenius": lambda m: frobenius_penalty(m, max_norm=0.1),
        "spectral": lambda m: spectral_penalty(m),
        "spectral_obj": lambda m: SpectralPenalty(m)(),
        "input_grad_loss": lambda m: input_gradient_penalty(
            m, torch.randn(4, 3, 6, 6, dtype=DT), torch.tensor([0, 1, 2, 3])),
        "input_grad_logits": lambda m: input_gradient_penalty(m, torch.randn(4, 3, 6, 6, dtype=DT), kind="logits"),
        "weight_grad": lambda m: weight_gradient_penalty(m, m(torch.randn(4, 3, 6, 6, dtype=DT)).pow(2).mean()),
        "gp": lambda m: gradient_penalty(lambda x: m(x)[:, 0], torch.randn(4, 3, 6, 6, dtype=DT),
                                         torch.randn(4, 3, 6, 6, dtype=DT)),
    }


@pytest.mark.parametrize("name", list(_weight_penalties()))
@pytest.mark.parametrize("zero", [False, True])
def test_contract_every_penalty(name: str, zero: bool) -> None:
    """Same checks for every penalty: a finite 0-dim tensor whose gradient reaches the
    parameters, finite too - also for an all-zero model (sqrt / normalize at zero)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(32, 5)).to(DT)
    if zero:
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
    value = _weight_penalties()[name](model)
    assert isinstance(value, torch.Tensor) and value.dim() == 0
    assert torch.isfinite(value)
    value.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if not zero and name != "gp":  # gp is 0-gradient only by chance; the rest must move weights
        assert any(g.abs().sum() > 0 for g in grads)


# ---------------------------------------------------------------- gradient penalty
@pytest.mark.parametrize("shape", [(6,), (3, 4, 5)])
@pytest.mark.parametrize("norm", [2.5, 0.4])
@pytest.mark.parametrize("at", ["interpolate", "real", "fake"])
def test_gp_linear_critic_closed_form(shape, norm, at) -> None:
    """A linear critic's gradient is w at every point: GP = (||w|| - 1)^2, GP+ =
    relu(||w|| - 1)^2, whatever real and fake are, for flat and (B, C, H, W) inputs."""
    torch.manual_seed(0)
    critic = LinearCritic(shape, norm)
    real, fake = torch.randn(8, *shape, dtype=DT), 3 * torch.randn(8, *shape, dtype=DT)
    two = gradient_penalty(critic, real, fake, at=at)
    one = gradient_penalty(critic, real, fake, at=at, one_sided=True)
    assert two.item() == pytest.approx((norm - 1) ** 2, rel=1e-12)
    assert one.item() == pytest.approx(max(norm - 1, 0) ** 2, abs=1e-12)
    assert gradient_penalty(critic, real, fake, target=2.0, at=at).item() == pytest.approx((norm - 2) ** 2)


def test_gp_trains_the_critic_create_graph() -> None:
    """d GP / d w = 2 (||w|| - 1) w / ||w||: nonzero only if the input gradient was taken
    with create_graph=True (without it the penalty would not depend on w at all)."""
    critic = LinearCritic((2, 3, 3), 2.0)
    gradient_penalty(critic, torch.randn(5, 2, 3, 3, dtype=DT), torch.randn(5, 2, 3, 3, dtype=DT)).backward()
    w = critic.w.detach()
    assert torch.allclose(critic.w.grad, 2 * (w.norm() - 1) * w / w.norm(), atol=1e-12)


class HalfSquareCritic(nn.Module):
    """f(x_i) = 0.5 * a * ||x_i||^2: gradient a * x_i, a different norm for every sample."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.7, dtype=DT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.a * x.pow(2).flatten(1).sum(1)


def test_gp_norm_is_per_sample_not_per_pixel_nor_per_batch() -> None:
    torch.manual_seed(0)
    real, fake = torch.randn(6, 3, 4, 4, dtype=DT), torch.randn(6, 3, 4, 4, dtype=DT)
    critic = HalfSquareCritic()
    g = 0.7 * real  # the true input gradient at the real points
    per_sample = ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
    per_pixel = ((g.norm(dim=1) - 1) ** 2).mean()  # the caogang/wgan-gp #27 bug (norm over channels)
    whole_batch = (g.norm() - 1) ** 2
    value = gradient_penalty(critic, real, fake, at="real")
    assert value.item() == pytest.approx(per_sample.item(), rel=1e-12)
    assert abs(value - per_pixel) > 0.1 and abs(value - whole_batch) > 0.1
    # One-sided, per sample: only samples whose norm exceeds 1 count.
    one = gradient_penalty(critic, real, fake, at="real", one_sided=True)
    assert one.item() == pytest.approx((torch.relu(g.flatten(1).norm(dim=1) - 1) ** 2).mean().item())
    # And at interpolates, with eps recomputed from the same seed: (B, 1, 1, 1) per sample.
    gen = torch.Generator().manual_seed(3)
    value = gradient_penalty(critic, real, fake, generator=gen)
    eps = torch.rand(6, 1, 1, 1, generator=torch.Generator().manual_seed(3), dtype=DT)
    gx = 0.7 * (eps * real + (1 - eps) * fake)
    assert value.item() == pytest.approx(((gx.flatten(1).norm(dim=1) - 1) ** 2).mean().item(), rel=1e-12)


def test_gp_eps_is_per_sample_interpolates_on_segments() -> None:
    torch.manual_seed(0)
    real, fake = torch.randn(16, 2, 3, 3, dtype=DT), torch.randn(16, 2, 3, 3, dtype=DT)
    seen = []

    def critic(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.detach().clone())
        return x.flatten(1).sum(1)

    gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(5))
    x = seen[0]
    # x_i - fake_i = eps_i (real_i - fake_i) with ONE scalar eps_i in [0, 1] per sample.
    ratio = ((x - fake) / (real - fake)).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-10)
    assert (ratio[:, 0] >= 0).all() and (ratio[:, 0] <= 1).all()
    assert ratio[:, 0].std() > 0.1  # and it differs between samples
    # Reproducible from the generator.
    gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(5))
    assert torch.equal(seen[0], seen[1])


@pytest.mark.parametrize("one_sided", [False, True])
def test_gp_finite_at_zero_gradient(one_sided: bool) -> None:
    """A flat critic (zero input gradient): GP = target^2 (two-sided) or 0, and every
    gradient finite - no NaN from sqrt at zero."""
    bias = nn.Parameter(torch.tensor(1.0, dtype=DT))
    real, fake = torch.randn(4, 3, dtype=DT), torch.randn(4, 3, dtype=DT)
    zero_lin = nn.Linear(3, 1).to(DT)
    with torch.no_grad():
        zero_lin.weight.zero_()
    critics = [
        lambda x: bias.expand(x.shape[0]),  # does not even read x
        lambda x: (0 * x).sum(1) + bias,  # reads x, gradient exactly 0
        zero_lin,  # zero weight: d||w||/dw at w = 0
    ]
    for critic in critics:
        value = gradient_penalty(critic, real, fake, one_sided=one_sided, target=1.5)
        assert value.item() == pytest.approx(0.0 if one_sided else 2.25)
        if value.requires_grad:
            value.backward()
    assert zero_lin.weight.grad is not None and torch.isfinite(zero_lin.weight.grad).all()
    assert torch.equal(zero_lin.weight.grad, torch.zeros_like(zero_lin.weight))


def test_gp_conditional_critic_gets_labels() -> None:
    """critic(x, labels) = <W[label_i], x_i>: gradient W[label_i] per sample."""
    torch.manual_seed(0)
    table = nn.Parameter(torch.randn(4, 6, dtype=DT))
    labels = torch.tensor([0, 3, 3, 1, 2])
    got = []

    def critic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        got.append(y)
        return (table[y] * x).sum(1)

    value = gradient_penalty(critic, torch.randn(5, 6, dtype=DT), torch.randn(5, 6, dtype=DT), labels=labels)
    assert got[0] is labels
    expected = ((table[labels].detach().norm(dim=1) - 1) ** 2).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    value.backward()
    assert table.grad is not None and table.grad.abs().sum() > 0


def test_gp_does_not_train_the_generator() -> None:
    gen_param = nn.Parameter(torch.ones(3, dtype=DT))
    fake = torch.randn(4, 3, dtype=DT) * gen_param
    critic = LinearCritic((3,), 2.0)
    gradient_penalty(critic, torch.randn(4, 3, dtype=DT), fake).backward()
    assert gen_param.grad is None


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(fake=torch.randn(5, 3)), "same shape"),
        (dict(target=0.0), "target"),
        (dict(target=-1.0), "-1.0"),
        (dict(target=float("nan")), "nan"),
        (dict(at="middle"), "'middle'"),
        (dict(one_sided="yes"), "'yes'"),
        (dict(real=torch.ones(4, 3, dtype=torch.long)), "floating"),
    ],
)
def test_gp_rejects_bad_arguments(kwargs, fragment) -> None:
    args = dict(critic=lambda x: x.sum(1), real=torch.randn(4, 3), fake=torch.randn(4, 3))
    args.update(kwargs)
    critic, real, fake = args.pop("critic"), args.pop("real"), args.pop("fake")
    with pytest.raises(ValueError, match=None) as info:
        gradient_penalty(critic, real, fake, **args)
    assert fragment in str(info.value)


def test_gp_rejects_critic_without_one_score_per_sample_and_no_grad() -> None:
    real = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        gradient_penalty(lambda x: x[:, :2], real, real)
    with pytest.raises(RuntimeError, match="no_grad"), torch.no_grad():
        gradient_penalty(lambda x: x.sum(1), real, real)


# ---------------------------------------------------------------- l2 / frobenius
def test_l2_penalty_is_sum_of_squared_weights_not_biases() -> None:
    model = mixed_model()
    expected = sum(m.weight.pow(2).sum() for m in model if hasattr(m, "weight"))
    assert l2_penalty(model).item() == pytest.approx(expected.item(), rel=1e-12)
    l2_penalty(model).backward()
    assert all(m.bias.grad is None for m in model if hasattr(m, "bias"))
    assert torch.allclose(model[4].weight.grad, 2 * model[4].weight.detach())


def test_where_selects_layers_and_rejects_typos() -> None:
    model = mixed_model()
    only_linear = model[4].weight.pow(2).sum().item()
    assert l2_penalty(model, where=nn.Linear).item() == pytest.approx(only_linear)
    assert l2_penalty(model, where="4").item() == pytest.approx(only_linear)
    assert l2_penalty(model, where=lambda name, m: isinstance(m, nn.Linear)).item() == pytest.approx(only_linear)
    both = only_linear + model[0].weight.pow(2).sum().item()
    assert l2_penalty(model, where=["0", "4"]).item() == pytest.approx(both)
    with pytest.raises(ValueError, match="'7'"):
        l2_penalty(model, where=["0", "7"])
    with pytest.raises(ValueError, match="matched no layer"):
        l2_penalty(model, where=nn.Conv3d)
    with pytest.raises(ValueError, match="where=3"):
        l2_penalty(model, where=3)
    with pytest.raises(TypeError, match="Module"):
        l2_penalty(torch.zeros(3))


def test_tied_weight_counts_once() -> None:
    a, b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    b.weight = a.weight
    assert l2_penalty(nn.Sequential(a, b)).item() == pytest.approx(a.weight.pow(2).sum().item())


def test_frobenius_penalty_closed_form() -> None:
    model = mixed_model()
    with torch.no_grad():  # layer norms 3, 0.5, 2 around a bound of 1
        for m, target in zip([model[0], model[2], model[4]], [3.0, 0.5, 2.0]):
            m.weight.mul_(target / m.weight.norm())
    value = frobenius_penalty(model, max_norm=1.0)
    assert value.item() == pytest.approx(2.0**2 + 0.0 + 1.0**2, rel=1e-12)
    value.backward()
    assert torch.equal(model[2].weight.grad, torch.zeros_like(model[2].weight))  # inside the ball
    w = model[0].weight.detach()
    assert torch.allclose(model[0].weight.grad, 2 * (3.0 - 1.0) * w / 3.0)
    assert frobenius_penalty(model, max_norm=0).item() == pytest.approx(l2_penalty(model).item())
    for bad in (-1.0, float("inf"), "1", True):
        with pytest.raises(ValueError, match="max_norm"):
            frobenius_penalty(model, max_norm=bad)


# ---------------------------------------------------------------- spectral (SNR)
def test_spectral_penalty_matches_svd_and_gradient_is_2_sigma_u_vT() -> None:
    model = mixed_model(dtype=torch.float32)
    value = spectral_penalty(model)
    mats = weight_mats(model)
    sigmas = [torch.linalg.svdvals(w.detach())[0] for w in mats]
    exact = sum(s**2 for s in sigmas)
    assert value.item() == pytest.approx(exact.item(), rel=1e-3)
    value.backward()
    for m, w, s in zip([model[0], model[2], model[4]], mats, sigmas):
        u, v = m._spectral_penalty_u, m._spectral_penalty_v
        sigma = u @ w.detach() @ v
        grad = m.weight.grad.transpose(0, 1) if isinstance(m, nn.ConvTranspose2d) else m.weight.grad
        assert torch.allclose(grad.reshape(w.shape), 2 * sigma * torch.outer(u, v), atol=1e-6)
        # ... and that is the true gradient of sigma^2 (top singular vectors of W).
        uu, _, vh = torch.linalg.svd(w.detach().double())
        true = 2 * s.double() * torch.outer(uu[:, 0], vh[0])
        assert torch.allclose(grad.reshape(w.shape).double(), true, atol=2e-2 * s.item())


def test_spectral_state_persists_and_advances_only_when_a_weight_changed(monkeypatch) -> None:
    model = mixed_model()
    spectral_penalty(model)
    lin = model[4]
    u0, v0 = lin._spectral_penalty_u.clone(), lin._spectral_penalty_v.clone()
    calls = []
    real_refresh = spectral_module.refresh_vectors

    def spy(forward, adjoint, u, v, n_iter, tol=None, dtype=torch.float32):
        calls.append((n_iter, tol))
        return real_refresh(forward, adjoint, u, v, n_iter, tol, dtype)

    monkeypatch.setattr(spectral_module, "refresh_vectors", spy)
    spectral_penalty(model)
    spectral_penalty(model)
    assert calls == []  # nothing changed: no iteration at all
    assert torch.equal(lin._spectral_penalty_u, u0) and torch.equal(lin._spectral_penalty_v, v0)
    with torch.no_grad():
        lin.weight.add_(0.3 * torch.randn_like(lin.weight))  # as optimizer.step() does
    value = spectral_penalty(model, n_iter=2)
    assert calls == [(2, None)]  # only the changed layer, n_iter rounds, no tol: no host sync
    # exactly n_iter warm-started rounds from the stored (u, v), as spectral normalization does
    w = lin.weight.detach()
    u, v = u0, v0
    for _ in range(2):
        u = F.normalize(w @ v, dim=0)
        v = F.normalize(w.T @ u, dim=0)
    assert torch.allclose(lin._spectral_penalty_v, v, atol=1e-12)
    assert torch.allclose(lin._spectral_penalty_u, u, atol=1e-12)
    rest = float(spectral_penalty(model, where=["0", "2"]).detach())  # the unchanged layers
    assert float(value.detach()) == pytest.approx(float(u @ w @ v) ** 2 + rest, rel=1e-12)
    # buffers are not in the model's state_dict: checkpoints stay loadable both ways
    assert not any("spectral_penalty" in k for k in model.state_dict())
    mixed_model().load_state_dict(model.state_dict())


def test_spectral_tracks_weight_over_training_steps() -> None:
    """1 round per step keeps sigma converged while SGD moves the weights slowly, and the
    estimate u^T W v never exceeds the true sigma (power iteration is a lower bound)."""
    model = mixed_model(dtype=torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    torch.manual_seed(0)
    for _ in range(20):
        opt.zero_grad()
        penalty = spectral_penalty(model)
        exact = sum(torch.linalg.svdvals(w.detach())[0] ** 2 for w in weight_mats(model))
        assert penalty.item() <= exact.item() * (1 + 1e-5)
        (model(torch.randn(2, 3, 5, 5)).pow(2).mean() + 0.01 * penalty).backward()
        opt.step()
    value = spectral_penalty(model)
    exact = sum(torch.linalg.svdvals(w.detach())[0] ** 2 for w in weight_mats(model))
    assert value.item() == pytest.approx(exact.item(), rel=1e-4)


def test_spectral_zero_weight_is_finite_and_two_evaluations_one_backward() -> None:
    lin = nn.Linear(4, 3).to(DT)
    with torch.no_grad():
        lin.weight.zero_()
    value = spectral_penalty(lin)
    value.backward()
    assert value.item() == 0 and torch.isfinite(lin.weight.grad).all()
    # Recovers once the weight is nonzero (v stayed a unit vector).
    with torch.no_grad():
        lin.weight.copy_(torch.randn(3, 4, dtype=DT))
    for _ in range(60):
        with torch.no_grad():
            lin.weight.mul_(1.0)  # in-place under no_grad (as optimizers do): one round each
        value = spectral_penalty(lin)
    assert value.item() == pytest.approx(torch.linalg.svdvals(lin.weight.detach())[0].item() ** 2, rel=1e-6)
    # Two evaluations, the weight replaced in between, then one backward (torch #66363 kind).
    model = mixed_model()
    first = spectral_penalty(model)
    model[4].weight = nn.Parameter(torch.randn_like(model[4].weight))
    second = spectral_penalty(model)
    (first + second).backward()


def _train(model: nn.Module, penalty: SpectralPenalty, opt, steps: int, seed: int) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(steps):
        opt.zero_grad()
        p = penalty()
        (model(torch.randn(2, 3, 5, 5, generator=gen, dtype=DT)).pow(2).mean() + 0.1 * p).backward()
        opt.step()
        values.append(p.item())
    return values


def test_spectral_penalty_object_resumes_exactly() -> None:
    model = mixed_model()
    penalty, opt = SpectralPenalty(model), torch.optim.SGD(model.parameters(), lr=0.05)
    _train(model, penalty, opt, 3, seed=0)
    ckpt = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(), "pen": penalty.state_dict()})
    assert all(entry["stale"] for entry in ckpt["pen"]["layers"].values())  # stepped after the last call
    straight = _train(model, penalty, opt, 4, seed=1)

    fresh = mixed_model(seed=9)
    fresh_penalty, fresh_opt = SpectralPenalty(fresh), torch.optim.SGD(fresh.parameters(), lr=0.05)
    fresh.load_state_dict(ckpt["model"])  # model first, then the penalty
    fresh_opt.load_state_dict(ckpt["opt"])
    fresh_penalty.load_state_dict(ckpt["pen"])
    assert _train(fresh, fresh_penalty, fresh_opt, 4, seed=1) == straight  # bit-exact


def test_spectral_state_not_stale_when_saved_right_after_a_call() -> None:
    model = mixed_model()
    penalty = SpectralPenalty(model)
    penalty()
    state = copy.deepcopy(penalty.state_dict())
    assert not any(entry["stale"] for entry in state["layers"].values())
    fresh = mixed_model(seed=3)
    fresh.load_state_dict(model.state_dict())
    resumed = SpectralPenalty(fresh)
    resumed.load_state_dict(state)
    assert resumed().item() == penalty().item()
    assert torch.equal(fresh[4]._spectral_penalty_v, model[4]._spectral_penalty_v)  # did not advance


def test_spectral_model_copies_and_bad_arguments() -> None:
    model = mixed_model()
    spectral_penalty(model)
    twin = copy.deepcopy(model)  # the change-tracking state must not break deepcopy
    # the copy re-advances once (its tensors are new), so equal up to the warm-up tolerance
    assert spectral_penalty(twin).item() == pytest.approx(spectral_penalty(model).item(), rel=1e-5)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_iter"):
            spectral_penalty(model, n_iter=bad)
    with pytest.raises(ValueError, match="'9'"):
        SpectralPenalty(model).load_state_dict({"layers": {"9": {}}})
    with pytest.raises(ValueError, match=r"\(5,\)"):
        SpectralPenalty(model).load_state_dict(
            {"layers": {"4": {"u": torch.ones(4), "v": torch.ones(242), "stale": True}}})


# ---------------------------------------------------------------- supervised
def _linear_data(k: int = 3, d: int = 5, b: int = 7):
    torch.manual_seed(0)
    model = nn.Linear(d, k).to(DT)
    return model, torch.randn(b, d, dtype=DT)


def test_input_gradient_penalty_mse_closed_form() -> None:
    model, x = _linear_data()
    y = torch.randn(7, 3, dtype=DT)
    w, bias = model.weight.detach(), model.bias.detach()
    # loss_i = mean_k (W x_i + b - y_i)_k^2  ->  g_i = (2/K) W^T (W x_i + b - y_i)
    g = (2 / 3) * (x @ w.T + bias - y) @ w
    value = input_gradient_penalty(model, x, y)
    assert value.item() == pytest.approx(g.pow(2).sum(1).mean().item(), rel=1e-12)
    value.backward()
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0


def test_input_gradient_penalty_cross_entropy_closed_form() -> None:
    model, x = _linear_data()
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    w = model.weight.detach()
    p = torch.softmax(x @ w.T + model.bias.detach(), dim=1)
    g = (p - F.one_hot(y, 3).to(DT)) @ w  # d CE_i / d x_i, per sample (not divided by B)
    assert input_gradient_penalty(model, x, y).item() == pytest.approx(g.pow(2).sum(1).mean().item(), rel=1e-12)
    custom = input_gradient_penalty(model, x, y, loss_fn=lambda o, t: F.cross_entropy(o, t, reduction="none"))
    assert custom.item() == pytest.approx(g.pow(2).sum(1).mean().item(), rel=1e-12)


def test_input_gradient_penalty_logits_is_jacobian_frobenius() -> None:
    model, x = _linear_data(k=4, d=6, b=64)
    fro2 = model.weight.detach().pow(2).sum().item()  # J_i = W for every sample
    assert input_gradient_penalty(model, x, kind="logits", n_proj=None).item() == pytest.approx(fro2, rel=1e-12)
    estimate = input_gradient_penalty(model, x, kind="logits", n_proj=20, generator=torch.Generator().manual_seed(0))
    assert estimate.item() == pytest.approx(fro2, rel=0.1)


def test_input_gradient_penalty_rejects_bad_arguments() -> None:
    model, x = _linear_data()
    y = torch.randn(7, 3, dtype=DT)
    with pytest.raises(ValueError, match="'hessian'"):
        input_gradient_penalty(model, x, y, kind="hessian")
    with pytest.raises(ValueError, match="one loss per sample"):  # a batch mean: 1/B too small
        input_gradient_penalty(model, x, y, loss_fn=F.mse_loss)
    with pytest.raises(ValueError, match="needs the targets"):
        input_gradient_penalty(model, x)
    with pytest.raises(ValueError, match="n_proj"):
        input_gradient_penalty(model, x, kind="logits", n_proj=0)


def test_weight_gradient_penalty_matches_autograd_and_is_differentiable() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(9, 3, dtype=DT), torch.randn(9, dtype=DT)
    model = nn.Linear(3, 1, bias=False).to(DT)
    loss = (model(x)[:, 0] - y).pow(2).mean()
    (g,) = torch.autograd.grad(loss, model.weight, retain_graph=True)
    value = weight_gradient_penalty(model, loss)
    assert value.item() == pytest.approx(g.pow(2).sum().item(), rel=1e-12)
    (loss + value).backward()
    # d||g||^2/dw = 2 H g with H = (2/N) X^T X for this least-squares loss.
    hessian = 2 / 9 * x.T @ x
    expected = g[0] + 2 * hessian @ g[0]
    assert torch.allclose(model.weight.grad[0], expected, atol=1e-10)
    # the unsquared form of the paper, safe at a zero gradient
    w = nn.Parameter(torch.zeros(3, dtype=DT))
    flat = weight_gradient_penalty([w], w.pow(2).sum(), squared=False)  # gradient 2w = 0
    flat.backward()
    assert flat.item() == 0 and torch.equal(w.grad, torch.zeros(3, dtype=DT))
    with pytest.raises(ValueError, match="scalar"):
        weight_gradient_penalty(model, model(x))
    with pytest.raises(ValueError, match="require grad"):
        weight_gradient_penalty(model, loss.detach())


class Doubled(nn.Module):
    """A toy parametrization W -> scale * W with the scale in a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(2.0, dtype=DT))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.scale * w


def test_weight_penalties_read_the_weight_a_parametrized_layer_uses() -> None:
    from torch.nn.utils import parametrize

    torch.manual_seed(0)
    lin = nn.Linear(6, 4).to(DT)
    raw = lin.weight.detach().clone()
    parametrize.register_parametrization(lin, "weight", Doubled())
    assert l2_penalty(lin).item() == pytest.approx(4 * raw.pow(2).sum().item())
    sigma = torch.linalg.svdvals(raw)[0].item()
    assert spectral_penalty(lin).item() == pytest.approx((2 * sigma) ** 2, rel=1e-5)
    v = lin._spectral_penalty_v.clone()
    spectral_penalty(lin)
    assert torch.equal(lin._spectral_penalty_v, v)  # nothing behind the weight moved
    with torch.no_grad():
        lin.parametrizations.weight.original.add_(0.5 * torch.randn_like(raw))
    spectral_penalty(lin)
    assert not torch.equal(lin._spectral_penalty_v, v)  # the raw weight moved: advanced
    spectral_penalty(lin).backward()
    assert torch.isfinite(lin.parametrizations.weight.original.grad).all()
