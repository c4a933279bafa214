"""Issue 11's table: the certified Gram bound (lk.operator_norm(..., "gram")) against the exact
norm (dense SVD) for every conv geometry of the SN contract test, at 16 per spatial side
(and 32 for 1-D layers and dilation 2; 8 for Conv3d). Measured once at 32 for every 2-D
geometry: reflect +95.7%, replicate +84.8%, circular 0, the others +0.27% to +0.99%. The bound
must never be below the exact norm, and the issue asks for <= 1% above it. Where lipkit is
not there yet the case is a strict xfail carrying the measured excess (a fix turns it red
and its mark must go): small domains (Conv3d at 8^3 +8.8%, stride 2 at 16 +1.3%), dilation
at 16 (its residue subgrids are 8x8: +3.7%), and reflect / replicate padding (the padding
map's norm, sqrt(2) per axis, multiplies the bound: +83% to +96%). Zero-padded 3x3 convs at
16x16 sit right at the line (conv2d +0.99%)."""
from __future__ import annotations

import pytest
import torch
from test_conv_sn_contract import GEOMETRIES

import lipkit as lk

TOL = 0.01
# (geometry, side): measured gram / exact - 1 with torch.manual_seed(0) weights
ABOVE_ONE_PERCENT = {
    ("conv3d", 8): "+8.76%", ("stride2", 16): "+1.31%", ("dilation2", 16): "+3.66%",
    ("reflect", 16): "+94.3%", ("replicate", 16): "+83.5%",
}


def cases():
    for name, (_, shape) in GEOMETRIES.items():
        spatial = len(shape) - 1
        # 32 per side only where it is cheap (1-D) or tells something (dilation is +0.99% there):
        # the 2-D 32x32 dense SVDs take 7-12 s each, and CI must stay under 30 minutes
        sides = (8,) if spatial == 3 else (16, 32) if spatial == 1 or name == "dilation2" else (16,)
        if name.startswith("transpose"):
            sides = (16,)
        for side in sides:
            marks = [pytest.mark.slow] if side == 32 else []
            if (name, side) in ABOVE_ONE_PERCENT:
                marks.append(pytest.mark.xfail(reason=f"Gram {ABOVE_ONE_PERCENT[name, side]} over exact", strict=True))
            yield pytest.param(name, side, marks=marks, id=f"{name}-{side}")


@pytest.mark.parametrize(("name", "side"), list(cases()))
def test_gram_bound_is_sound_and_within_one_percent(name: str, side: int) -> None:
    factory, shape = GEOMETRIES[name]
    torch.manual_seed(0)
    layer = factory().double()
    input_shape = (shape[0],) + (side,) * (len(shape) - 1)
    exact = lk.operator_norm(layer, input_shape, "exact")
    gram = lk.operator_norm(layer, input_shape, "gram")
    assert gram >= exact * (1 - 1e-9), f"{name} at {input_shape}: the certified bound {gram} is below the norm {exact}"
    assert gram <= exact * (1 + TOL), f"{name} at {input_shape}: gram / exact - 1 = {gram / exact - 1:+.4f}"
