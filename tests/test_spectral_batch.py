"""The batched refresh of reshape-SN pairs (constraints/spectral_batch.py, linalg.exact_top_pairs):
the same pairs as one eigh per layer (svdvals oracle), the same training as without the hook,
and only where it applies."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import lipkit as lk
from lipkit.constraints import spectral_batch
from lipkit.constraints.spectral import SpectralNormalization
from lipkit.constraints.spectral_batch import refresh_spectral_pairs, remove_refresh_hook
from lipkit.norms.batched_pairs import exact_top_pairs, traced_top_pairs
from lipkit.norms.linalg import exact_top_pair


@pytest.mark.parametrize("pairs_of", [exact_top_pairs, traced_top_pairs], ids=["eager", "traced"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_top_pairs_are_each_matrix_top_pair(dtype, pairs_of):
    gen = torch.Generator().manual_seed(0)
    shapes = [(2, 27), (16, 144), (300, 8), (1, 256), (7, 7), (40, 1), (5, 3)]
    matrices = [torch.randn(*s, generator=gen, dtype=dtype) * 10.0 ** (i - 3) for i, s in enumerate(shapes)]
    matrices.append(torch.zeros(3, 5, dtype=dtype))
    pairs = pairs_of(matrices)
    # entries whose squares overflow / underflow float32 (the batch is then scaled first), without
    # a zero matrix (the other path through the vectors)
    huge = [torch.randn(4, 6, generator=gen, dtype=dtype) * 1e20, torch.randn(9, 3, generator=gen, dtype=dtype) * 1e-21]
    pairs += pairs_of(huge + [matrices[0]])[:2]
    matrices += huge
    rel = 1e-6 if dtype is torch.float32 else 1e-12
    for m, (u, v, outer) in zip(matrices, pairs):
        assert u.shape == m.shape[:1] and v.shape == m.shape[1:] and u.dtype == v.dtype == outer.dtype == dtype
        assert torch.equal(outer, torch.outer(u, v))  # the product, as the layer's own refresh forms it
        assert torch.allclose(u.norm(), torch.ones((), dtype=dtype)) and torch.allclose(v.norm(), torch.ones((), dtype=dtype))
        sigma = torch.linalg.svdvals(m.double())[0]
        assert float(u.double() @ m.double() @ v.double()) == pytest.approx(float(sigma), rel=rel, abs=1e-30)
        u1, v1 = exact_top_pair(m)  # the per-layer refresh it replaces
        assert float(u @ m @ v) == pytest.approx(float(u1 @ m @ v1), rel=rel, abs=1e-30)


def test_traced_top_pairs_compile_into_one_graph():
    """The in-graph refresh's batch traces without a break (fullgraph) and gives the eager pairs."""
    gen = torch.Generator().manual_seed(0)
    matrices = [torch.randn(*s, generator=gen) for s in ((2, 27), (16, 144), (300, 8), (1, 256))]
    compiled = torch.compile(traced_top_pairs, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(matrices), traced_top_pairs(matrices)):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)


def test_exact_top_pairs_refuses_non_finite():
    assert exact_top_pairs([torch.randn(3, 4), torch.tensor([[1.0, float("nan")]])]) is None


def critic(hidden: int = 6) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, hidden, 3, 2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(hidden * 16, 5), nn.ReLU(), nn.Linear(5, 1))


def train(model: nn.Module, steps: int = 10) -> list[float]:
    gen = torch.Generator().manual_seed(1)
    dtype = next(model.parameters()).dtype
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.0, 0.9))
    losses = []
    for _ in range(steps):
        real, fake = (torch.randn(8, 3, 12, 12, generator=gen, dtype=dtype) for _ in range(2))
        loss = model(fake).mean() - model(real).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def count_own_refreshes(monkeypatch) -> dict:
    calls = {"n": 0}
    own = SpectralNormalization._top_pair

    def counted(self, matrix):
        calls["n"] += 1
        return own(self, matrix)
    monkeypatch.setattr(SpectralNormalization, "_top_pair", counted)
    return calls


def test_batched_refresh_trains_as_the_per_layer_refresh(monkeypatch):
    """Losses and weights over 10 WGAN-style Adam steps equal those of the same model without
    the hook (every layer refreshing at its own read), and with the hook no layer refreshes
    on its own; every layer's sigma is 1 after training (svdvals)."""
    torch.manual_seed(0)
    batched = lk.constrain(critic().double(), "spectral")
    alone = copy.deepcopy(batched)
    remove_refresh_hook(alone)
    assert any(h is refresh_spectral_pairs for h in batched._forward_pre_hooks.values())
    assert not any(h is refresh_spectral_pairs for h in alone._forward_pre_hooks.values())
    calls = count_own_refreshes(monkeypatch)
    a = train(batched)
    assert calls["n"] == 0  # every refresh came from the batch
    b = train(alone)
    assert calls["n"] == 10 * 4  # one per layer per update without the hook
    # The same pairs to rounding (the batch scales only matrices whose Gram could overflow,
    # the layer's own refresh every matrix), which Adam's g / sqrt(v) magnifies over 10 steps
    assert a == pytest.approx(b, rel=1e-8)
    for p, q in zip(batched.parameters(), alone.parameters()):
        assert torch.allclose(p, q, rtol=1e-8, atol=1e-9)
    batched.eval()
    for layer in (m for m in batched.modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
        assert float(torch.linalg.svdvals(layer.weight.detach().flatten(1))[0]) == pytest.approx(1.0, rel=1e-9)


def test_only_batchable_layers_are_batched(monkeypatch):
    """A weight above EXACT_SIDE on both sides (Krylov refresh), certified SN and conv-operator
    SN keep their own refresh; export's plain copy and unconstrain drop the hook."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(200, 150), nn.ReLU(), nn.Linear(150, 4), nn.ReLU(), nn.Linear(4, 2))
    lk.constrain(model, "spectral")
    calls = count_own_refreshes(monkeypatch)
    train_mlp = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(3, 200)).sum().backward()
    train_mlp.step()
    model(torch.randn(3, 200))
    assert calls["n"] == 1  # the 150 x 200 layer alone; the two small ones came from the batch
    sizes = []  # the batches formed (returning None sends every layer to its own refresh)
    monkeypatch.setattr(spectral_batch, "exact_top_pairs", lambda ms: sizes.append(len(ms)))
    train(lk.constrain(critic(), "spectral", certified=True), steps=2)
    assert sizes == []
    train(lk.constrain(critic(), "spectral", operator="conv"), steps=2)
    assert sizes == [2]  # step 2 (registration made the pairs current): the two Linears, not the convs
    exported = lk.export(model)  # a plain copy: no parametrization, no hook
    assert any(h is refresh_spectral_pairs for h in model._forward_pre_hooks.values())
    assert not any(h is refresh_spectral_pairs for h in exported._forward_pre_hooks.values())
    assert not any(hasattr(m, "parametrizations") for m in exported.modules())
    lk.unconstrain(model)
    assert not any(h is refresh_spectral_pairs for h in model._forward_pre_hooks.values())


def test_batched_refresh_runs_in_full_precision_under_autocast():
    """A forward under bf16 autocast: the batch's Gram and eigh stay float32, so the pairs are
    the ones computed without autocast (the per-layer refresh turns autocast off too)."""
    torch.manual_seed(0)
    model = lk.constrain(critic(), "spectral")
    plain = copy.deepcopy(model)
    for m in (model, plain):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01)  # a weight update: every pair is stale
    x = torch.randn(2, 3, 12, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    plain(x)
    pairs = [(c.u, c.v) for c in model.modules() if isinstance(c, SpectralNormalization)]
    expected = [(c.u, c.v) for c in plain.modules() if isinstance(c, SpectralNormalization)]
    assert len(pairs) == 4
    for (u, v), (u0, v0) in zip(pairs, expected):
        assert u.dtype == torch.float32
        assert torch.allclose(u.abs(), u0.abs(), atol=1e-5) and torch.allclose(v.abs(), v0.abs(), atol=1e-5)


def test_a_layer_swapped_in_after_a_call_joins_the_batch(monkeypatch):
    """The walk over the model is kept between calls until a module is registered anywhere:
    a constrained layer set into the model later (nn.Sequential item, attribute) has its pair
    from the model's batch, not from its own read."""
    torch.manual_seed(0)
    model = lk.constrain(critic(), "spectral")
    train(model, steps=2)  # the model's walk is cached now
    model[5] = lk.constrain(nn.Linear(6 * 16, 5), "spectral")
    model.add_module("head", lk.constrain(nn.Linear(1, 1), "spectral"))
    calls = count_own_refreshes(monkeypatch)
    train(model, steps=3)
    assert calls["n"] == 0
    assert len(spectral_batch._spectral(model)) == 5


def test_batched_sigma_grad_in_every_weight_layout():
    """The batch hands each layer u v^T cut from one product: in the weight's layout for a
    ConvTranspose (dim=1: moved into place), a tall Linear (its matrix turned in the batch) and
    a zero weight (unit vectors), it equals the layer's own refresh: outer(u, v) laid out as
    the weight, with sigma = <u v^T, W> the top singular value (svdvals)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.ConvTranspose2d(3, 5, 3), nn.Flatten(), nn.Linear(5 * 36, 4), nn.ReLU(),
                          nn.Linear(4, 40), nn.Linear(40, 1))
    with torch.no_grad():
        model[5].weight.zero_()
    lk.constrain(model, "spectral")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)  # a weight update: every pair is stale
    model(torch.randn(2, 3, 4, 4))  # the pre-forward batch refreshes all four
    layers = [model[0], model[2], model[4], model[5]]
    for layer in layers:
        c = layer.parametrizations.weight[0]
        raw = layer.parametrizations.weight.original.detach()
        own = copy.deepcopy(c)
        own.refresh(raw)  # the per-layer path
        # same shape and strides as the layer's own: a compiled graph reading it is specialized on both
        assert c.sigma_grad.shape == raw.shape and c.sigma_grad.stride() == own.sigma_grad.stride()
        assert torch.allclose(c.sigma_grad, own.sigma_grad, atol=1e-6)
        matrix = raw.movedim(c.dim, 0).flatten(1)
        assert torch.equal(c.sigma_grad.movedim(c.dim, 0).reshape(matrix.shape), torch.outer(c.u, c.v))
        sigma = float((c.sigma_grad * raw).sum())
        assert sigma == pytest.approx(float(torch.linalg.svdvals(matrix)[0]), rel=1e-5, abs=1e-30)
    assert model[0].parametrizations.weight[0].dim == 1 and model[4].weight.shape[0] > model[4].weight.shape[1]


def test_a_non_finite_weight_in_the_batch_is_named_by_its_layer():
    """The batch finds NaN / inf with its one host read and leaves those layers to their own
    refresh, whose check names the weight (not an eigh failure, nor NaN outputs in silence)."""
    from lipkit.constraints.base import NonFiniteWeightError

    model = lk.constrain(critic(), "spectral")
    model(torch.randn(2, 3, 12, 12))
    with torch.no_grad():
        model[5].parametrizations.weight.original[0, 1] = float("nan")
        model[7].parametrizations.weight.original.add_(0.1)  # a second stale layer: a batch of two
    with pytest.raises(NonFiniteWeightError, match=r"1 non-finite"):
        model(torch.randn(2, 3, 12, 12))
