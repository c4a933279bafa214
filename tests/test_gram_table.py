"""Issue 11's table: the certified Gram bound (lk.operator_norm(..., "gram")) against the exact
norm (dense SVD) for every conv geometry of the SN contract test, at 16 per spatial side
(and 32 for 1-D layers, dilation 2 and the reflect / replicate paddings; 8 for Conv3d). The
bound must never be below the exact norm, and the issue asks for <= 1% above it.

The frequency-symbol bound alone was above that line on small domains (Conv3d at 8^3 +8.8%,
stride 2 at 16 +1.3%, dilation 2 at 16 +3.7%) and for reflect / replicate padding (+83% to
+96%: the padding map's norm multiplies it); "gram" now takes the Cholesky-certified dense
norm there (lipkit/norms/dense_gram.py), so those cases sit within float64 rounding (< 2e-8) of exact. Measured
once at 32 with the symbol alone for the other 2-D geometries: circular 0, the others +0.27%
to +0.99%; zero-padded 3x3 convs at 16x16 take the dense path too (the symbol gave +0.99%)."""
from __future__ import annotations

import pytest
import torch
from test_conv_sn_contract import GEOMETRIES

import lipkit as lk

TOL = 0.01


def cases():
    for name, (_, shape) in GEOMETRIES.items():
        spatial = len(shape) - 1
        # 32 per side only where it is cheap (1-D) or tells something (dilation: +0.99% there;
        # reflect / replicate: the dense path at its size limit, 4096 = 4 x 32 x 32):
        # the 2-D 32x32 dense SVDs take 7-12 s each, and CI must stay under 30 minutes
        wide = spatial == 1 or name in ("dilation2", "reflect", "replicate")
        sides = (8,) if spatial == 3 else (16, 32) if wide else (16,)
        if name.startswith("transpose"):
            sides = (16,)
        for side in sides:
            marks = [pytest.mark.slow] if side == 32 else []
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
