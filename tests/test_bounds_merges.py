"""Merged linear layers (bounds/merges.py): each pattern's bound is certified (>= the dense
Jacobian's norm of the model, which is linear here: BatchNorm in eval mode, no activations)
and tight (equal to it where the merge is exact; within 1% where the folded conv is bounded
by Gram iteration), and never above the plain product (merge=False)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import lipkit as lk
from lipkit.bounds.merges import linear_chains
from lipkit.bounds.network import _trace


def true_constant(model: nn.Module, shape: tuple[int, ...]) -> float:
    """||J||_2 of an affine model: its columns are f(e_i) - f(0) (one batched forward)."""
    with torch.no_grad():
        basis = torch.eye(torch.Size(shape).numel(), dtype=torch.float64).view(-1, *shape)
        jac = (model(basis) - model(torch.zeros_like(basis[:1]))).flatten(1)
    gram = jac.T @ jac if jac.shape[0] >= jac.shape[1] else jac @ jac.T
    return float(torch.linalg.eigvalsh(gram)[-1]) ** 0.5


def bn(kind, channels: int, seed: int) -> nn.Module:
    """An eval BatchNorm with spread-out scales (gamma of both signs), as after training."""
    gen = torch.Generator().manual_seed(seed)
    layer = kind(channels)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(channels, generator=gen) * 4 - 2)
        layer.running_var.copy_(torch.rand(channels, generator=gen) * 2 + 0.1)
        layer.running_mean.copy_(torch.randn(channels, generator=gen))
    return layer


class Residual(nn.Module):
    """x + BN(conv(x)), where conv's output is read twice: the chain must stop there."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), bn(nn.BatchNorm2d, 3, 5)

    def forward(self, x):
        y = self.conv(x)
        return x + self.bn(y) + 0.5 * y


class ScaledConv(nn.Conv2d):
    """A Conv2d subclass whose forward is not a conv's map (x3): never merged as a conv."""

    def forward(self, x):
        return 3 * super().forward(x)


# name: (model factory, input shape, how many layers merge into one row, tolerance above the truth)
PATTERNS = {
    "conv-bn": (lambda: nn.Sequential(nn.Conv2d(3, 6, 3, 1, 1), bn(nn.BatchNorm2d, 6, 1)), (3, 12, 12), 2, 1e-9),
    "conv-bn-gram": (lambda: nn.Sequential(nn.Conv2d(4, 4, 3, 1, 1), bn(nn.BatchNorm2d, 4, 2)), (4, 24, 24), 2, 1e-2),
    "convT-groups-bn": (lambda: nn.Sequential(nn.ConvTranspose2d(4, 6, 4, 2, 1, groups=2), bn(nn.BatchNorm2d, 6, 3)),
                        (4, 5, 5), 2, 1e-9),
    "bn-conv-groups": (lambda: nn.Sequential(bn(nn.BatchNorm2d, 4, 4), nn.Conv2d(4, 6, 3, 1, 1, groups=2)),
                       (4, 8, 8), 2, 1e-9),
    "bn-convT": (lambda: nn.Sequential(bn(nn.BatchNorm1d, 3, 6), nn.ConvTranspose1d(3, 2, 4, 2, 1)), (3, 9), 2, 1e-9),
    "linear-bn": (lambda: nn.Sequential(nn.Linear(10, 7), bn(nn.BatchNorm1d, 7, 7)), (10,), 2, 1e-9),
    "bn-linear": (lambda: nn.Sequential(bn(nn.BatchNorm1d, 10, 8), nn.Linear(10, 7)), (10,), 2, 1e-9),
    "linear-linear-linear": (lambda: nn.Sequential(nn.Linear(10, 30), nn.Linear(30, 20), nn.Linear(20, 4)), (10,), 3,
                             1e-9),
    "conv-avgpool": (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, 1, 1), nn.AvgPool2d(2)), (2, 8, 8), 2, 1e-9),
    "conv-bn-conv": (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, 1, 1), bn(nn.BatchNorm2d, 4, 9), nn.Conv2d(4, 3, 3, 2, 1)),
                     (2, 8, 8), 3, 1e-9),
    "conv-bn-flatten-linear": (lambda: nn.Sequential(nn.Conv2d(2, 3, 3), bn(nn.BatchNorm2d, 3, 10), nn.Flatten(),
                                                     nn.Linear(3 * 4 * 4, 5)), (2, 6, 6), 4, 1e-9),
    # BN1d on (C, L) scales dim C while the Linear acts on L: not foldable, kept as a layer
    "bn1d-on-sequences-linear": (lambda: nn.Sequential(bn(nn.BatchNorm1d, 3, 11), nn.Linear(5, 4)), (3, 5), 2, 1e-9),
    "two-bns-conv": (lambda: nn.Sequential(bn(nn.BatchNorm2d, 3, 12), bn(nn.BatchNorm2d, 3, 13), nn.Conv2d(3, 2, 3)),
                     (3, 6, 6), 3, 1e-9),
}


def double(model: nn.Module) -> nn.Module:
    return model.double().eval()


@pytest.mark.parametrize("name", PATTERNS)
def test_merged_pattern_is_certified_and_tight(name: str) -> None:
    factory, shape, merged, tol = PATTERNS[name]
    torch.manual_seed(0)
    model = double(factory())
    truth = true_constant(model, shape)
    result = lk.lipschitz_bound(model, shape)
    product = lk.lipschitz_bound(model, shape, merge=False).upper
    assert truth * (1 - 1e-9) <= result.upper <= truth * (1 + tol), (name, result.upper, truth)
    assert result.upper <= product * (1 + 1e-9)
    assert len(result.layers) == 1 and result.layers[0].name.count("+") == merged - 1, result.table()
    assert ("Gram" in result.layers[0].how) == (tol > 1e-9), result.layers[0].how  # the path the case is for


def test_folding_gains_what_the_issue_measured() -> None:
    """Conv2d(3, 6, 3, 1, 1) -> BatchNorm2d(6) at 12x12: the product is well above the pair."""
    torch.manual_seed(0)
    model = double(PATTERNS["conv-bn"][0]())
    merged, product = (lk.lipschitz_bound(model, (3, 12, 12), merge=m).upper for m in (True, False))
    assert merged < 0.8 * product


def test_a_value_read_twice_ends_the_chain() -> None:
    model = double(Residual())
    gm = _trace(model)
    assert not linear_chains(gm)  # conv's output feeds bn AND the scaled sum
    assert lk.lipschitz_bound(model, (3, 6, 6)).upper >= true_constant(model, (3, 6, 6)) * (1 - 1e-9)


def test_a_subclass_with_its_own_forward_is_not_merged() -> None:
    torch.manual_seed(0)
    model = double(nn.Sequential(ScaledConv(2, 3, 3), bn(nn.BatchNorm2d, 3, 14)))
    lk.register_layer_bound(ScaledConv)(
        lambda layer, shape, method: lk.LayerRule(3 * lk.operator_norm(layer, shape, "exact"), "3 x conv"))
    result = lk.lipschitz_bound(model, (2, 6, 6))
    assert [row.name for row in result.layers] == ["0", "1"]
    assert result.upper >= true_constant(model, (2, 6, 6)) * (1 - 1e-9)


def test_resnet_basic_block_folds_every_conv_bn_pair() -> None:
    """torchvision's BasicBlock: conv1+bn1, conv2+bn2 and the downsample conv+bn are rows."""
    from torchvision_models import require_torchvision_models

    block = require_torchvision_models().resnet.BasicBlock(4, 8, stride=2, downsample=nn.Sequential(
        nn.Conv2d(4, 8, 1, 2, bias=False), nn.BatchNorm2d(8)))
    for layer in block.modules():
        if isinstance(layer, nn.BatchNorm2d):
            with torch.no_grad():
                layer.weight.uniform_(-2, 2)
                layer.running_var.uniform_(0.1, 2)
    block = double(block)
    result = lk.lipschitz_bound(block, (4, 8, 8))
    names = [row.name for row in result.layers]
    assert {"conv1+bn1", "conv2+bn2", "downsample.0+downsample.1"} <= set(names), names
    assert result.upper >= true_constant(nn.Sequential(block.conv1, block.bn1), (4, 8, 8)) - 1e-9


def test_dense_matrix_from_the_smaller_side_has_the_same_singular_values():
    from lipkit.norms.linalg import dense_matrix, dense_matrix_small_side

    torch.manual_seed(0)
    conv, linear = nn.Conv2d(2, 4, 3, 2, 1).double(), nn.Linear(4 * 3 * 3, 5, bias=False).double()

    def composite(x):  # 2x6x6 = 72 inputs -> 5 outputs: built from the 5 outputs
        return linear(nn.functional.conv2d(x, conv.weight, None, 2, 1).flatten(1))

    by_inputs = dense_matrix(composite, (2, 6, 6), torch.float64, "cpu")
    by_outputs = dense_matrix_small_side(composite, (2, 6, 6), 5, torch.float64, "cpu")
    assert by_inputs.shape == (72, 5) and by_outputs.shape == (5, 72)
    assert torch.allclose(by_outputs, by_inputs.T, atol=1e-12)
