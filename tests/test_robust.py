"""lipkit.metrics.robust: L2 PGD finds the closed-form worst case of a linear classifier, never
leaves the eps ball or the [0, 1] box, and certified robustness never exceeds empirical."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from lipkit.metrics import robust
from lipkit.metrics.robust import SQRT2, certified_radius, certified_robust, logit_margin, pgd_l2, project_l2_box, robust_report


class Recorder(nn.Module):
    """Wraps a model and keeps every batch it is called on (each PGD iterate)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.model(x)


def binary_linear(dim: int = 16, seed: int = 0) -> nn.Linear:
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(dim, 2)
    with torch.no_grad():
        v = torch.randn(dim, generator=gen)
        layer.weight.copy_(torch.stack([v - v.mean(), torch.zeros(dim)]))  # margin 0 at the centre 0.5
        layer.bias.zero_()
    return layer


def points_at_distance(layer: nn.Linear, distances: torch.Tensor) -> torch.Tensor:
    """Points around 0.5 (far from the box faces) of class 0 at the given L2 distances from
    the decision boundary: margin f_0 - f_1 = w . x + b with w = w_0 - w_1, distance margin / ||w||."""
    w = (layer.weight[0] - layer.weight[1]).detach()
    b = float((layer.bias[0] - layer.bias[1]).detach())
    centre = torch.full((w.numel(),), 0.5)
    shift = (distances[:, None] * w.norm() - (w @ centre + b)) / w.norm() ** 2
    return centre + shift * w  # margin(x) = distances * ||w||


def test_pgd_finds_the_closed_form_worst_case_of_a_linear_model() -> None:
    layer = binary_linear()
    distances = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.4])
    x = points_at_distance(layer, distances)
    labels = torch.zeros(len(x), dtype=torch.long)
    w = (layer.weight[0] - layer.weight[1]).detach()
    margins = logit_margin(layer(x), labels).detach()
    assert torch.allclose(margins / w.norm(), distances, atol=1e-5)
    for eps in (0.15, 0.25):  # no coordinate gets near 0 or 1: the box is inactive
        for tol in (1e-3, -1e-3):  # just above / just below each point's distance
            eps_i = distances * (1 + tol)
            broken = torch.stack([pgd_l2(layer, x[i:i + 1], labels[i:i + 1], float(eps_i[i]), steps=40)[1][0]
                                  for i in range(len(x))])
            assert broken.tolist() == [tol > 0] * len(x), (tol, broken)
        x_adv, broken = pgd_l2(layer, x, labels, eps, steps=40)
        assert broken.tolist() == (distances < eps).tolist()
        # the unbroken points end on the sphere, moved straight along -w (the optimal direction)
        delta = (x_adv - x)[~broken]
        assert torch.allclose(delta.norm(dim=1), torch.full((int((~broken).sum()),), eps), atol=1e-5)
        cosine = (delta @ -w) / (delta.norm(dim=1) * w.norm())
        assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-5)


@pytest.mark.parametrize("eps", [0.1, 0.5, 3.0])
def test_every_iterate_stays_in_the_ball_and_the_box(eps: float, monkeypatch: pytest.MonkeyPatch) -> None:
    iterates: list[tuple[torch.Tensor, torch.Tensor]] = []  # (iterate, its clean point), every step

    def recording_projection(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
        out = project_l2_box(x_adv, x, eps)
        iterates.append((out.clone(), x.clone()))
        return out

    monkeypatch.setattr(robust, "project_l2_box", recording_projection)
    torch.manual_seed(0)
    model = Recorder(nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.ReLU(), nn.Linear(32, 5)))
    x = torch.rand(12, 1, 6, 6)
    x[:, :, :2] = torch.randint(0, 2, (12, 1, 2, 6)).float()  # pixels at 0 or 1: the clamp is active
    labels = torch.randint(0, 5, (12,))
    x_adv, broken = pgd_l2(model, x, labels, eps, steps=15)
    assert iterates and len(model.seen) == 1 + 2 * len(iterates)  # clean pass, then 2 forwards per step
    for seen, centre in [*iterates, (x_adv, x)]:
        assert float((seen - centre).flatten(1).norm(dim=1).max()) <= eps * (1 + 1e-5)
        assert float(seen.min()) >= 0 and float(seen.max()) <= 1
    with torch.no_grad():  # the reported adversarial points are misclassified exactly where broken
        assert torch.equal(logit_margin(model(x_adv), labels) <= 0, broken)
    assert model.training  # left as found


def test_projection_keeps_the_ball_after_the_clamp() -> None:
    x = torch.rand(50, 20)
    far = x + 3 * torch.randn(50, 20)
    for eps in (0.01, 0.3, 2.0):
        p = project_l2_box(far, x, eps)
        assert float((p - x).norm(dim=1).max()) <= eps * (1 + 1e-5)
        assert float(p.min()) >= 0 and float(p.max()) <= 1
    inside = x + 1e-3 * torch.randn(50, 20)
    assert torch.equal(project_l2_box(inside.clamp(0, 1), x, 1.0), inside.clamp(0, 1))


def test_certificate_of_a_linear_model_is_exact_and_below_pgd() -> None:
    layer = binary_linear()
    distances = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.4])
    x, labels = points_at_distance(layer, distances), torch.zeros(5, dtype=torch.long)
    lipschitz = float(torch.linalg.svdvals(layer.weight.detach())[0])  # exact L of the logit map
    margins = logit_margin(layer(x), labels).detach()
    # sqrt(2) L >= ||w_0 - w_1||: the certified radius is a valid (smaller) distance
    assert torch.all(certified_radius(margins, lipschitz) <= distances + 1e-6)
    for eps in (0.05, 0.15, 0.3):
        cert = certified_robust(layer, x, labels, eps, lipschitz)
        broken = pgd_l2(layer, x, labels, eps, steps=40)[1]
        assert not torch.any(cert & broken)
    report = robust_report(layer, x, labels, (0.0, 0.1, 0.25), lipschitz, steps=40)
    assert report.clean == 1.0 and report.empirical[0] == 1.0
    assert all(c <= e for c, e in zip(report.certified, report.empirical))
    assert report.as_metrics()["pgd_acc@0.25"] == pytest.approx(0.4)


def test_logit_margin_and_clear_errors() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.5], [0.0, 2.0, 1.0]])
    assert logit_margin(logits, torch.tensor([0, 0])).tolist() == [0.5, -2.0]
    model = nn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"inputs must lie in \[0, 1\]"):
        pgd_l2(model, torch.full((2, 4), 2.0), torch.tensor([0, 1]), 0.1)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        pgd_l2(model, torch.rand(2, 4), torch.tensor([0, 1]), -1.0)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        pgd_l2(model, torch.rand(2, 4), torch.tensor([0]), 0.1)
    with pytest.raises(ValueError, match="lipschitz must be a finite number > 0"):
        certified_radius(torch.ones(2), 0.0)
    assert math.isclose(SQRT2, 2 ** 0.5)
