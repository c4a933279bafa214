"""Maps that copy entries in lk.lipschitz_bound (bounds/copying.py): every padding module, F.pad
form, nearest upsampling and pixel / channel shuffle gets the EXACT constant of its map (dense
Jacobian oracle: these maps are affine, so the Jacobian's norm is the constant), models that
pad or upsample (CycleGAN's reflection padding, the option-A shortcut of CIFAR ResNets, a U-Net
padding to a skip's size) get bounds at or above the dense Jacobian, and a map that does not
copy, or a mode without a rule, is refused."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from bound_oracles import dense_norm

import lipkit as lk
from lipkit.bounds.copying import call_constant, copy_norm, module_constant

# (module, one sample's shape): every mode in 1d / 2d / 3d, asymmetric amounts, cropping
MODULES = [
    (nn.ZeroPad2d((1, 2, 0, 3)), (2, 5, 4)), (nn.ConstantPad1d((2, -1), 3.5), (2, 6)),
    (nn.ConstantPad3d((1, 0, -1, 1, 0, 2), 0.0), (1, 3, 4, 4)), (nn.ReflectionPad1d((3, 1)), (2, 5)),
    (nn.ReflectionPad2d((1, 2, 2, 1)), (2, 5, 6)), (nn.ReflectionPad3d(1), (1, 3, 4, 3)),
    (nn.ReplicationPad1d((4, 0)), (1, 4)), (nn.ReplicationPad2d((2, 2, 1, 3)), (2, 4, 5)),
    (nn.ReplicationPad3d((1, 1, 0, 2, 1, 0)), (1, 3, 3, 3)), (nn.CircularPad1d((2, 3)), (2, 4)),
    (nn.CircularPad2d((1, 1, 3, 0)), (1, 4, 4)), (nn.CircularPad3d(1), (1, 3, 3, 3)),
]


@pytest.mark.parametrize("layer,shape", MODULES, ids=lambda v: repr(v) if isinstance(v, nn.Module) else str(v))
def test_padding_modules_get_their_exact_constant(layer, shape):
    model = nn.Sequential(layer).double().eval()
    certified = lk.lipschitz_bound(model, shape).upper
    assert certified == pytest.approx(dense_norm(model, shape), rel=1e-12)
    if not isinstance(layer, (nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad3d)):
        assert certified > 1.0  # copies counted: a copying pad is not 1-Lipschitz


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_functional_pad_gets_its_exact_constant(mode):
    class Pads(nn.Module):
        def forward(self, x):
            return F.pad(x, (2, 1, 1, 3), mode=mode) if mode != "constant" else F.pad(x, (2, -1, 1, 3), value=2.0)

    model = Pads().double().eval()
    assert lk.lipschitz_bound(model, (2, 5, 5)).upper == pytest.approx(dense_norm(model, (2, 5, 5)), rel=1e-12)


class ToSkipSize(nn.Module):
    """A U-Net up step: pad the upsampled map to the skip's size, amounts from size()."""

    def __init__(self) -> None:
        super().__init__()
        self.down, self.up = nn.Conv2d(2, 3, 3, 2), nn.ConvTranspose2d(3, 2, 2, 2)

    def forward(self, x):
        y = self.up(torch.relu(self.down(x)))
        dy, dx = x.size(2) - y.size(2), x.size(3) - y.size(3)
        y = F.pad(y, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2], mode="replicate")
        return torch.cat([x, y], dim=1)


class OptionA(nn.Module):
    """CIFAR ResNet's parameter-free shortcut: subsample, then zero channels on both sides."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, 2, 1)

    def forward(self, x):
        return torch.relu(self.conv(x) + F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 1, 1), "constant", 0))


class CycleGANBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(2, 2, 3), nn.ReLU(), nn.ReflectionPad2d(1),
                                  nn.Conv2d(2, 2, 3))

    def forward(self, x):
        return x + self.body(x)


@pytest.mark.parametrize("model,shape", [(ToSkipSize(), (2, 7, 9)), (OptionA(), (2, 6, 6)), (CycleGANBlock(), (2, 6, 6))],
                         ids=["unet-pad-to-skip", "resnet-option-a", "cyclegan-block"])
def test_models_that_pad_get_sound_bounds(model, shape):
    torch.manual_seed(0)
    model = model.double().eval()
    dense = max(dense_norm(model, shape, seed) for seed in range(8))
    for method in ("gram", "exact"):
        assert lk.lipschitz_bound(model, shape, method).upper >= dense


def test_pad_amounts_that_follow_the_batch_size_are_refused():
    """(The output's sample shape then follows the batch size: refused as a batch-mixing value.)"""
    class ByBatch(nn.Module):
        def forward(self, x):
            return F.pad(x, (x.size(0), 0))

    with pytest.raises(ValueError, match="mixes the samples of a batch"):
        lk.lipschitz_bound(ByBatch(), (2, 4))


@pytest.mark.parametrize("layer,shape", [
    (nn.Upsample(scale_factor=2), (2, 3, 4)), (nn.Upsample(size=(7, 5), mode="nearest-exact"), (1, 3, 4)),
    (nn.Upsample(scale_factor=(1.5, 3)), (2, 4, 3)), (nn.UpsamplingNearest2d(scale_factor=3), (1, 2, 3)),
    (nn.Upsample(scale_factor=2), (2, 5)), (nn.PixelShuffle(2), (8, 2, 3)), (nn.PixelUnshuffle(2), (2, 4, 6)),
    (nn.ChannelShuffle(2), (6, 3, 3)),
], ids=lambda v: repr(v) if isinstance(v, nn.Module) else str(v))
def test_upsampling_and_shuffles_get_their_exact_constant(layer, shape):
    model = nn.Sequential(layer).double().eval()
    assert lk.lipschitz_bound(model, shape).upper == pytest.approx(dense_norm(model, shape), rel=1e-12)


def test_functional_nearest_interpolation_reads_sizes_from_the_input():
    class Up(nn.Module):
        def forward(self, x):
            return F.interpolate(x, size=(x.size(2) * 2 + 1, 7), mode="nearest-exact")

    model = Up().double()
    assert lk.lipschitz_bound(model, (2, 4, 3)).upper == pytest.approx(dense_norm(model, (2, 4, 3)), rel=1e-12)


def test_a_mode_without_a_rule_is_refused():
    """Every interpolation mode torch 2.13 has is bounded (weighted ones in
    tests/test_bounds_interpolation.py); a mode added later is refused, not guessed."""
    with pytest.raises(ValueError, match="interpolation mode 'no-such-mode' is not bounded"):
        call_constant(F.interpolate, (None, 2.0, "no-such-mode"), {}, (1, 3, 3))
    upsample = nn.Upsample(scale_factor=2)
    upsample.mode = "no-such-mode"
    with pytest.raises(ValueError, match="mode 'no-such-mode' is not bounded"):
        module_constant(upsample, (1, 3, 3))


def test_a_map_that_does_not_copy_is_not_counted_as_one():
    """copy_norm counts copies only after checking that every output is an input entry (or the
    map's constant): an average of neighbours would be counted as a selection otherwise."""
    assert copy_norm(lambda x: F.pad(x, (1, 1), value=3.0), (2, 4)) == 1.0
    with pytest.raises(ValueError, match="not copies of its inputs"):
        copy_norm(lambda x: F.interpolate(x, scale_factor=2, mode="linear"), (2, 4))
