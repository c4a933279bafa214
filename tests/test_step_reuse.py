"""The reads of one training step share one constrained weight (lipkit/constraints/step_reuse.py).

Oracle: the same model with reuse switched off (reuse_within_update = False: every read
re-runs the map, torch's parametrize behaviour). Sharing must give the same losses and
gradients, evaluate each map once per update, and never hand out a value that is stale
(weight updated, checkpoint loaded) or whose graph a backward already consumed.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import lipkit as lk
from lipkit import constraints as lc
from lipkit.constraints.base import Constraint

CASES = [("spectral", {}), ("spectral", {"operator": "conv"}), ("spectral", {"certified": True}),
         ("aol", {}), ("frobenius", {})]


def critic() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(4, 4, 3, stride=2, padding=1),
                         nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(64, 1)).double()


def constrained(method: str, options: dict, reuse: bool) -> nn.Module:
    model = lk.constrain(critic(), method, **options)
    for *_, c in lc.constraints_of(model):
        c.reuse_within_update = reuse
    return model


def counting(model: nn.Module) -> list[int]:
    """Count evaluations of every constraint map of `model` (from an empty state: the read
    lk.constrain makes at registration keeps its value for the first step)."""
    calls = [0]
    for *_, c in lc.constraints_of(model):
        c.reuse.drop()
        inner = c.constrained

        def wrapped(raw, inner=inner):
            calls[0] += 1
            return inner(raw)
        c.constrained = wrapped
    return calls


def wgan_gp_loss(model: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Three reads per step: D(real), D(fake), D(x_interp) inside a double-backward penalty."""
    x = (0.3 * real + 0.7 * fake).requires_grad_()
    (grad,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
    penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    return model(fake).mean() - model(real).mean() + 10 * penalty


@pytest.mark.parametrize(("method", "options"), CASES, ids=lambda v: str(v))
def test_shared_reads_give_the_unshared_losses_and_gradients(method, options):
    real, fake = torch.randn(2, 5, 2, 8, 8, dtype=torch.float64)
    models = {reuse: constrained(method, options, reuse) for reuse in (True, False)}
    calls = {reuse: counting(m) for reuse, m in models.items()}
    opts = {reuse: torch.optim.SGD(m.parameters(), lr=0.05) for reuse, m in models.items()}
    n_weights = len(list(lc.constraints_of(models[True])))
    for _ in range(3):
        losses = {}
        for reuse, model in models.items():
            calls[reuse][0] = 0
            opts[reuse].zero_grad()
            losses[reuse] = wgan_gp_loss(model, real, fake)
            losses[reuse].backward()
        torch.testing.assert_close(losses[True], losses[False], rtol=1e-10, atol=1e-12)
        for p, q in zip(models[True].parameters(), models[False].parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-8, atol=1e-10)  # summation order only
        assert calls[True][0] == n_weights  # once per weight per update...
        assert calls[False][0] == 3 * n_weights  # ...where every read re-ran the map
        for opt in opts.values():
            opt.step()
        # Both models go on from the SAME weights: their gradients differ in summation order
        # (~1e-17 in the weights after a step), and a conv whose top singular pair is nearly
        # degenerate turns that into different top vectors (v moved 0.4 at step 1 with 6 symbol
        # frequencies per refresh, sigma 3e-10): the refresh's conditioning, not reuse's subject.
        with torch.no_grad():
            for p, q in zip(models[True].parameters(), models[False].parameters()):
                q.copy_(p)


def test_a_second_backward_after_a_consumed_graph_recomputes():
    """Two generator steps in a row: the critic's weights do not change, but the first backward
    freed the map's graph, so the second forward must not reuse its value."""
    model = constrained("spectral", {}, reuse=True)
    calls = counting(model)
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    for _ in range(2):
        model(x).mean().backward()  # would raise 'backward through the graph a second time'
    assert calls[0] == 2 * 3


def test_values_follow_updates_loads_and_modes():
    model = constrained("spectral", {"operator": "conv"}, reuse=True)
    oracle = constrained("spectral", {"operator": "conv"}, reuse=False)
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    model(x), oracle(x)
    donor = critic()
    with torch.no_grad():  # an in-place update with no backward in between
        for m in (model, oracle):
            for p in m.parameters():
                p.mul_(1.5).add_(0.01)
    torch.testing.assert_close(model(x), oracle(x))
    state = constrained("spectral", {"operator": "conv"}, reuse=False)
    state.load_state_dict(lk.constrain(donor, "spectral", operator="conv").state_dict())
    model.load_state_dict(state.state_dict())  # a load with no backward in between
    torch.testing.assert_close(model(x), state(x))
    model.eval()  # eval reads are never kept: they see the weights as they are
    first = model[0].weight
    assert model[0].weight is not first
    with torch.no_grad():
        model.train()
        assert model[0].weight is not model[0].weight  # nor no_grad ones


def test_copies_start_empty():
    model = constrained("spectral", {}, reuse=True)
    y = model(torch.randn(3, 2, 8, 8, dtype=torch.float64))
    clone = copy.deepcopy(model)  # a non-leaf kept value would make deepcopy raise
    y.sum().backward()
    for *_, c in lc.constraints_of(clone):
        assert isinstance(c, Constraint) and c.reuse.value is None


def test_a_new_input_shape_recomputes_the_conv_norm():
    """operator='conv' normalizes at the input shape: a new shape in the same step (no backward,
    no weight change) must not get the value kept for the old one."""
    model = constrained("spectral", {"operator": "conv"}, reuse=True)
    oracle = constrained("spectral", {"operator": "conv"}, reuse=False)
    for size in (8, 4):
        x = torch.randn(3, 2, size, size, dtype=torch.float64)
        torch.testing.assert_close(model[:2](x), oracle[:2](x))
