"""Issue 15 item 1: torchvision's classifiers (random weights, eval mode) get a finite certified
bound that is never below the truth. Oracles: the exact Jacobian norm (torch.func.jacrev,
10 classes so the Jacobian is small) at 16 random inputs, and lk.lipschitz_lower_bound. The
models built from squeeze-and-excitation gating are refused in one error that says why."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision_models import require_torchvision_models

import lipkit as lk

models = require_torchvision_models()  # a test dependency: missing is a failure, never a skip
SHAPE = (3, 16, 16)
SMALLEST = {"squeezenet1_0": (3, 32, 32)}  # its pools need more than 16x16
# resnet50 and densenet121 are in the benchmark table (benchmarks/bound_zoo.py) but not here
# (CI time: ~30 s and ~50 s, mostly the bound itself): resnet18 and mobilenet_v2's bottlenecks
# cover resnet50's structure, and concatenation + BatchNorm + pooling, densenet's pieces, have
# their own soundness tests (tests/test_bounds.py, tests/test_bounds_soundness.py).
SUPPORTED = [("squeezenet1_0", False), ("shufflenet_v2_x0_5", False), ("resnet18", True), ("mobilenet_v2", True)]


def jacobian_norms(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    jac = torch.func.vmap(torch.func.jacrev(lambda v: model(v[None])[0]))(x)  # (B, classes, *SHAPE)
    return torch.linalg.matrix_norm(jac.flatten(2), ord=2)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if slow else n for n, slow in SUPPORTED])
def test_zoo_model_bound_is_finite_and_above_the_truth(name):
    torch.manual_seed(0)
    model = getattr(models, name)(num_classes=10).eval()
    shape = SMALLEST.get(name, SHAPE)
    upper = lk.lipschitz_bound(model, shape).upper
    assert math.isfinite(upper) and upper > 0
    x = torch.randn(16, *shape)
    with torch.no_grad():
        assert float(jacobian_norms(model, x).max()) <= upper
    assert lk.lipschitz_lower_bound(model, x[:4], steps=3) <= upper


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_small", "regnet_y_400mf"])
def test_squeeze_and_excitation_models_are_refused_saying_why(name):
    model = getattr(models, name)(num_classes=10).eval()
    with pytest.raises(lk.UnsupportedLayerError, match="squeeze-and-excitation, gating"):
        lk.lipschitz_bound(model, SHAPE)
