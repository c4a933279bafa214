"""Claim "trap": the sn-project preset keeps every layer at sigma = 1 after its projection,
gradient_gap matches the closed form and an independent SVD-based autograd oracle, and the
verdict rule gives each verdict on crafted numbers. Tiny models: well under a second each."""
from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
import torch.nn as nn
from torch.func import functional_call

from lipkit.constraints import project_
from lipkit.experiments import trap
from lipkit.experiments.common import ClaimResult
from lipkit.train import GanConfig, GanTask, resolve_config
from lipkit.train.presets import PRESET_KEYS


def normalized(model: nn.Module) -> nn.Module:
    """Divide every Linear weight by its exact spectral norm (sigma = 1, as after a projection)."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                layer.weight /= torch.linalg.svdvals(layer.weight)[0]
    return model


def loss_of(model: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return model(fake).mean() - model(real).mean()


def test_sn_project_preset_normalizes_after_every_step(tmp_path) -> None:
    config = GanConfig(out=str(tmp_path), data="gaussians8", critic="sn-project", width=16, g_width=8, depth=2,
                       batch_size=32, noise_dim=4, n_critic=2, eval_samples=200, progress=False, certify=False)
    task = GanTask(resolve_config(config))
    layers = [m for m in task.critic.modules() if isinstance(m, nn.Linear)]

    def check() -> None:
        for layer in layers:
            w = layer.weight.detach()
            projection = layer.lipkit_projections["weight"]
            # What the projection promises exactly: its own estimate u^T W v is 1 ...
            assert float(projection.u @ w @ projection.v) == pytest.approx(1.0, abs=1e-5)
            # ... and, the estimate being from below and warm-started, the true norm is 1 + tiny.
            sigma = float(torch.linalg.svdvals(w)[0])
            assert 1 - 1e-5 <= sigma <= 1 + 1e-3, sigma
            assert float(torch.linalg.matrix_norm(w.flatten(1), 2)) == pytest.approx(sigma, rel=1e-5)

    check()  # normalized at construction
    with torch.no_grad():  # sigma -> ~3: a step of lr 2e-4 alone moves it ~1e-3, too little to tell
        for layer in layers:  # a projection from no projection; only project_ can bring 3 back to 1
            layer.weight.mul_(3.0)
    for step in (1, 2, 3):
        task.train_step(step)
        check()
    same = [getattr(resolve_config(dataclasses.replace(config, critic=c)), k) for c in ("sn", "sn-project")
            for k in PRESET_KEYS]
    assert same[:len(PRESET_KEYS)] == same[len(PRESET_KEYS):]  # sn's recipe, only the SN placement differs
    before = [layer.weight.detach().clone() for layer in layers]
    project_(task.critic)  # idempotent up to the power-iteration error
    assert all(torch.allclose(b, layer.weight, atol=1e-4) for b, layer in zip(before, layers))


def test_gradient_gap_matches_the_closed_form_on_a_linear_layer() -> None:
    torch.manual_seed(0)
    layer = normalized(nn.Linear(5, 3))
    real, fake = torch.randn(16, 5), torch.randn(16, 5) + 1.0
    (name, (g, g_reparam)), = trap.gradient_pair(layer, real, fake).items()
    w = layer.weight.detach()
    loss = loss_of(layer, real, fake)
    (autograd_g,) = torch.autograd.grad(loss, layer.weight)
    u, _, vh = torch.linalg.svd(w)
    top = torch.outer(u[:, 0], vh[0])
    closed = autograd_g - (autograd_g * w).sum() * top  # d/dW_raw of L(W_raw / sigma(W_raw)) at sigma = 1
    assert name == "" and torch.allclose(g, autograd_g)
    assert torch.allclose(g_reparam, closed, atol=1e-5)
    gap = trap.gradient_gap(layer, real, fake)
    cosine = float(torch.nn.functional.cosine_similarity(autograd_g.flatten(), closed.flatten(), dim=0))
    assert gap["cosine"] == pytest.approx(cosine, abs=1e-5)
    assert gap["rel_diff"] == pytest.approx(float((autograd_g - closed).norm() / autograd_g.norm()), abs=1e-5)


def test_gradient_gap_of_an_mlp_matches_an_svd_autograd_oracle() -> None:
    torch.manual_seed(1)
    mlp = normalized(nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))).double()
    real, fake = torch.randn(32, 2, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64) * 2
    pairs = trap.gradient_pair(mlp, real, fake)
    raw = {k: v.detach().clone().requires_grad_() for k, v in mlp.named_parameters()}
    normal = {k: v / torch.linalg.matrix_norm(v, 2) if k.endswith("weight") else v for k, v in raw.items()}
    loss = functional_call(mlp, normal, (fake,)).mean() - functional_call(mlp, normal, (real,)).mean()
    oracle = torch.autograd.grad(loss, [raw["0.weight"], raw["2.weight"]])
    for (name, (_, g_reparam)), expected in zip(pairs.items(), oracle):
        assert torch.allclose(g_reparam, expected, atol=1e-10), name


def test_gap_of_a_bias_free_relu_critic_is_the_loss_over_the_gradient_norm() -> None:
    # Euler: f is 1-homogeneous in each W_l, so <G_l, W_l> = L and ||G_l - G_reparam_l|| = |L|.
    torch.manual_seed(2)
    mlp = normalized(nn.Sequential(nn.Linear(2, 8, bias=False), nn.ReLU(), nn.Linear(8, 1, bias=False))).double()
    real, fake = torch.randn(32, 2, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64) + 2
    loss = float(loss_of(mlp, real, fake).detach())
    for g, g_reparam in trap.gradient_pair(mlp, real, fake).values():
        assert float((g - g_reparam).norm()) == pytest.approx(abs(loss), rel=1e-5)  # sigma = 1 to float32


def test_gradient_gap_refuses_an_unnormalized_critic() -> None:
    layer = nn.Linear(4, 4)
    with torch.no_grad():
        layer.weight.copy_(3 * torch.eye(4))
    with pytest.raises(ValueError, match="spectral norm 3"):
        trap.gradient_gap(layer, torch.randn(4, 4), torch.randn(4, 4))
    assert isinstance(copy.deepcopy(layer).weight, nn.Parameter)  # the caller's critic is untouched


def crafted(q_sn: float, q_project: float, range_sn: float = 0.01, range_project: float = 0.01,
            gap: float = 0.3) -> dict:
    def method(q: float, spread: float) -> dict:
        return {"late_mean": q, "late_range": spread}

    return {"data": {"gaussians25": {"metric": "w1", "methods": {"sn": method(q_sn, range_sn),
                                                                 "sn-project": method(q_project, range_project)},
                                     "gap": {"median_rel_diff": gap}}}}


@pytest.mark.parametrize(("numbers", "verdict"), [
    (crafted(0.20, 0.30), "supported"),  # 50% worse, far beyond the spread, material gap
    (crafted(0.20, 0.30, gap=0.01), "mixed"),  # worse, but the gradients barely differ
    (crafted(0.20, 0.21), "not supported"),  # within the seed spread
    (crafted(0.20, 0.15), "not supported"),  # projection better
    (crafted(0.20, 0.215, range_sn=0.005, range_project=0.005), "mixed"),  # beyond spread, under 10%
    (crafted(0.20, 0.30, range_project=0.2), "not supported"),  # the seeds disagree more than the methods
])
def test_decide_gives_each_verdict(numbers: dict, verdict: str) -> None:
    got, decided_by = trap.decide(numbers)
    assert got == verdict and decided_by.endswith(verdict) and "gaussians25" in decided_by


def test_decide_needs_every_data_set_to_agree() -> None:
    numbers = crafted(0.2, 0.3)
    numbers["data"]["digits"] = crafted(20.0, 19.0)["data"]["gaussians25"] | {"metric": "fid"}
    assert trap.decide(numbers)[0] == "mixed"
    with pytest.raises(ValueError, match="at least one data set"):
        trap.decide({"data": {}})


def test_claim_result_to_json() -> None:
    numbers = crafted(0.2, 0.3)
    verdict, decided_by = trap.decide(numbers)
    result = ClaimResult(key="trap", title="t", verdict=verdict, rule=trap.RULE, decided_by=decided_by,
                         numbers=numbers, settings=trap.SETTINGS["quick"])
    data = json.loads(json.dumps(result.to_json()))
    assert data["verdict"] == "supported" and data["numbers"] == numbers and data["rule"] == trap.RULE
    assert set(trap.SETTINGS) == {"quick", "full"}
