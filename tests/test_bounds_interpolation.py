"""Weighted interpolation in lk.lipschitz_bound (bounds/interpolation.py): linear, bilinear,
bicubic, trilinear and area modes, with and without align_corners, up and down, modules and
F.interpolate, get their EXACT norm (dense Jacobian oracle: the map is linear), a U-Net (the
common bilinear decoder: MaxPool down, Upsample(align_corners=True) up, F.pad to the skip's
size, cat, conv-BN-ReLU) gets a bound at or above its dense Jacobian, and a map that is not a
product of per-axis maps is refused."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from bound_oracles import Applies, dense_norm

import lipkit as lk
from lipkit.bounds.interpolation import separable_norm


@pytest.mark.parametrize("layer,shape", [
    (nn.Upsample(scale_factor=2, mode="bilinear"), (2, 4, 5)),
    (nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), (2, 4, 5)),
    (nn.UpsamplingBilinear2d(scale_factor=2), (1, 3, 3)), (nn.Upsample(size=(7, 3), mode="bicubic"), (1, 4, 5)),
    (nn.Upsample(scale_factor=1.7, mode="linear"), (2, 6)), (nn.Upsample(scale_factor=0.5, mode="bilinear"), (1, 6, 8)),
    (nn.Upsample(scale_factor=(2, 1, 3), mode="trilinear", align_corners=True), (1, 2, 3, 2)),
    (nn.Upsample(size=(3, 3), mode="area"), (1, 7, 5)),
], ids=lambda v: repr(v) if isinstance(v, nn.Module) else str(v))
def test_interpolation_modules_get_their_exact_norm(layer, shape):
    model = nn.Sequential(layer).double().eval()
    certified = lk.lipschitz_bound(model, shape).upper
    assert dense_norm(model, shape) <= certified <= dense_norm(model, shape) * (1 + 1e-9)




@pytest.mark.parametrize("fn,shape", [
    (lambda x: F.interpolate(x, size=(x.size(2) // 2, 3), mode="bilinear", antialias=True), (1, 8, 8)),
    (lambda x: F.interpolate(x, scale_factor=2, mode="lanczos", antialias=True), (1, 5, 6)),
    (lambda x: F.interpolate(x, scale_factor=(1.5, 2), mode="bicubic", align_corners=True), (2, 4, 4)),
], ids=["bilinear-antialias-down", "lanczos", "bicubic-corners"])
def test_functional_interpolation_gets_its_exact_norm(fn, shape):
    model = Applies(fn).double()
    certified = lk.lipschitz_bound(model, shape).upper
    assert dense_norm(model, shape) <= certified <= dense_norm(model, shape) * (1 + 1e-9)


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    bn = nn.BatchNorm2d(cout)
    bn.running_var.uniform_(0.5, 2.0)
    bn.running_mean.normal_()
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), bn, nn.ReLU())


class TinyUNet(nn.Module):
    """Two levels of the usual bilinear U-Net decoder, at a size that needs the pad to the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.inc, self.down = conv_bn_relu(1, 3), nn.Sequential(nn.MaxPool2d(2), conv_bn_relu(3, 3))
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.dec, self.out = conv_bn_relu(6, 3), nn.Conv2d(3, 1, 1)

    def forward(self, x):
        skip = self.inc(x)
        y = self.up(self.down(skip))
        dy, dx = skip.size(2) - y.size(2), skip.size(3) - y.size(3)
        y = F.pad(y, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.out(self.dec(torch.cat([skip, y], dim=1)))


def test_a_unet_gets_a_bound_above_its_dense_jacobian():
    torch.manual_seed(0)
    model = TinyUNet().double().eval()
    dense = max(dense_norm(model, (1, 7, 9), seed) for seed in range(8))
    for method in ("gram", "exact"):
        assert lk.lipschitz_bound(model, (1, 7, 9), method).upper >= dense


def test_a_map_that_is_not_separable_is_refused():
    """The product of per-axis norms is exact only for a product of per-axis maps: a linear map
    that mixes the axes (x plus its transpose) is checked and refused, not bounded wrongly."""
    assert separable_norm(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear"), (1, 3, 3)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="not separable"):
        separable_norm(lambda x: x + x.transpose(-1, -2), (1, 3, 3))
