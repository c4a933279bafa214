"""Claim (d) experiment: the gradient-norm probe and its regions (gradient_probes.py), the verdict
rule, the result."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch import Tensor

from lipkit.data.toy import rings
from lipkit.experiments import gradient_probes as probes
from lipkit.experiments import many_classes as mc
from lipkit.experiments.common import ClaimResult, Context


class LinearCritic(nn.Module):
    """f(x, y) = <w_y, x>: its input gradient is w_y, so the norm is ||w_y|| exactly."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        return (self.w[labels] * x).sum(dim=1, keepdim=True)


def test_gradient_norms_linear_critic_closed_form() -> None:
    critic = LinearCritic(5, 3)
    x = torch.randn(50, 3)
    y = torch.arange(50) % 5
    norms = probes.gradient_norms(critic, x, y, batch_size=7)  # several batches
    torch.testing.assert_close(norms, critic.w.detach()[y].norm(dim=1))
    assert critic.training  # restored after the eval-mode measurement


def test_gradient_norms_unconditional_and_images() -> None:
    linear = nn.Linear(3, 1)
    norms = probes.gradient_norms(linear, torch.randn(10, 3))
    torch.testing.assert_close(norms, linear.weight.detach().norm().expand(10))
    conv = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))  # (B, 1, 2, 2) inputs: norm over all pixels
    torch.testing.assert_close(probes.gradient_norms(conv, torch.randn(4, 1, 2, 2)), conv[1].weight.detach().norm().expand(4))


def test_gradient_norms_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="one per point"):
        probes.gradient_norms(LinearCritic(2, 2), torch.randn(4, 2), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("k", [10, 100])
def test_off_manifold_far_from_centres_and_inside_box(k: int) -> None:
    mixture = rings(k)
    regions = probes.probe_regions(mixture, 500, torch.Generator().manual_seed(1))
    assert set(regions) == set(probes.REGIONS)
    points, labels = regions["off-manifold"]
    assert points.shape == (500, 2) and labels.shape == (500,) and int(labels.max()) < k
    assert (torch.cdist(points, mixture.centers).min(dim=1).values > probes.FAR_STD * mixture.std).all()
    low, high = probes.probe_box(mixture.centers, mixture.std)
    assert ((points >= low) & (points <= high)).all()


def test_same_class_interpolates_keep_the_pair_label() -> None:
    mixture = rings(10)
    x, y = probes.probe_regions(mixture, 400, torch.Generator().manual_seed(2))["same-class interpolates"]
    # A segment between two points of one mode stays in that mode: its nearest centre is the label.
    assert torch.equal(torch.cdist(x, mixture.centers).argmin(dim=1), y)


def test_pair_interpolates_distinct_partners_and_cross_classes() -> None:
    labels = torch.arange(8) // 2  # four classes of exactly two points each
    points = torch.stack([labels.float(), torch.arange(8.0)], dim=1)  # (class, index)
    gen = torch.Generator().manual_seed(3)
    x, y = probes.pair_interpolates(points, labels, 300, same_class=True, generator=gen)
    assert torch.equal(x[:, 0], y.float())  # both ends are of class y
    # The partner is the class's other point, never a itself: the index coordinate is strictly
    # between the class's two indices (an endpoint only if t is exactly 0 or 1).
    assert ((x[:, 1] > 2 * y) & (x[:, 1] < 2 * y + 1)).float().mean() > 0.99
    x, y = probes.pair_interpolates(points, labels, 300, same_class=False, generator=gen)
    assert (x[:, 0] != y.float()).float().mean() > 0.99  # b's class differs from a's (the label)
    with pytest.raises(ValueError, match="2"):
        probes.pair_interpolates(points[:3], labels[:3], 5, same_class=True, generator=gen)


def numbers(w1: tuple[float, float, float], sn_max: float, viol: tuple[float, float, float]) -> dict:
    return {"classes": 100, "w1_class_mean": dict(zip(mc.METHODS, w1)), "sn_max_gradient": sn_max,
            "offdata_violations": dict(zip(mc.METHODS, viol))}


def test_decide_all_three_verdicts() -> None:
    assert mc.decide(numbers((0.1, 0.3, 0.3), 0.9, (0.0, 0.5, 0.4)))[0] == "supported"
    assert mc.decide(numbers((0.3, 0.1, 0.2), 1.5, (0.2, 0.05, 0.3)))[0] == "not supported"
    # quality favours GP but only SN constrains everywhere: the two halves disagree
    verdict, sentence = mc.decide(numbers((0.3, 0.1, 0.2), 0.9, (0.0, 0.5, 0.4)))
    assert verdict == "mixed" and "K=100" in sentence and "0.3" in sentence
    # SN better by less than the margin: neither side
    assert mc.decide(numbers((0.1, 0.102, 0.3), 0.9, (0.0, 0.5, 0.4)))[0] == "mixed"
    with pytest.raises(ValueError, match="gp1"):
        mc.decide({"classes": 100, "w1_class_mean": {"sn": 1, "gp": 1}, "sn_max_gradient": 1,
                   "offdata_violations": {"sn": 0, "gp": 0}})


def test_run_tiny_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = {"classes": (3,), "seeds": (0,), "steps": {3: 1}, "width": 8, "eval_samples": 64,
            "lower_bound_steps": 0, "probe_points": 60, "images": None}
    monkeypatch.setitem(mc.SETTINGS, "quick", tiny)
    result = mc.run(Context(tmp_path, "quick", progress=False))
    assert isinstance(result, ClaimResult) and result.key == "d" and result.rule == mc.RULE
    assert len(result.runs) == 3 and all((tmp_path / r / "summary.json").is_file() for r in result.runs)
    assert all((tmp_path / f.path).is_file() and f.caption for f in result.figures)
    assert set(result.numbers["sets"]) == {"rings3"}
    data = result.to_json()
    json.dumps(data)  # JSON-able all the way down
    assert data["verdict"] in ("supported", "not supported", "mixed") and data["numbers"]["decision"]["classes"] == 3


def test_run_rejects_unknown_profile(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="profile"):
        mc.run(Context(tmp_path, "huge"))
