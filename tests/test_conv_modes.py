"""rank_modes: the symbol's frequencies ranked by their top singular value, and each one's top
right singular vector, by batched power steps (lipkit/norms/conv_modes.py). Oracle:
torch.linalg.svd of the symbol's per-frequency matrices (conv_symbol.circular_symbol, itself
checked against dense Jacobians in tests/test_conv_symbol*.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from lipkit.norms.conv_modes import _krylov_ritz, mode_grid, mode_vectors, rank_modes
from lipkit.norms.conv_symbol import circular_symbol, dense_kernel
from lipkit.norms.operators import ConvGeometry


# Factories, called after seeding: a layer built at collection took torch's start-up seed,
# which torch 2.13 draws at random, and s2's weights gave fewer than 4 well-separated
# frequencies in 25 of 300 draws (the test failed ~8% of runs).
@pytest.mark.parametrize("make", [lambda: nn.Conv2d(3, 4, 3, 1, 1), lambda: nn.Conv2d(2, 5, 4, 2, 1)], ids=["s1", "s2"])
def test_rank_modes_finds_the_top_frequencies_and_their_vectors(make) -> None:
    torch.manual_seed(0)
    layer = make()
    shape = (layer.in_channels, 10, 10)
    geometry, w = ConvGeometry.of(layer), layer.weight.detach().double()
    grid = mode_grid(geometry, shape, tuple(w.shape))
    sym = circular_symbol(dense_kernel(w, 1, geometry.dilation), grid.stride, grid.sizes)
    _, s, vh = torch.linalg.svd(sym)
    freqs, _, vectors = rank_modes(geometry, w, grid, 3)
    flat = [int(torch.tensor(f.tolist()) @ torch.tensor([grid.freq_shape[1], 1])) for f in freqs]
    # the returned frequencies carry the 3 largest top singular values (to 1e-3)
    assert torch.allclose(s[flat, 0], s[:, 0].topk(3).values, rtol=1e-3)
    # and each frequency's vector is its top right singular vector (up to a complex phase)
    overlap = (vh[:, 0] * vectors[..., -1]).sum(-1).abs()  # Vh rows are the conjugated right vectors
    clear = s[:, 0] > s[:, 1] * 1.3  # a well-separated top: a depth-20 Krylov space converges
    assert clear.sum() > 3 and bool((overlap[clear] > 0.99).all()), overlap[clear].min()


def test_mode_vectors_plain_waves_only_when_asked() -> None:
    layer = nn.Conv2d(2, 3, 3, 1, 1)
    geometry, w = ConvGeometry.of(layer), layer.weight.detach()
    grid = mode_grid(geometry, (2, 8, 8), tuple(w.shape))
    freqs, amps, _ = rank_modes(geometry, w, grid, 2)
    both = mode_vectors(grid, freqs, amps, torch.float32)
    windowed = mode_vectors(grid, freqs, amps, torch.float32, plain=False)
    assert both.shape[0] == 8 and windowed.shape[0] == 4  # cos, sin (plain, windowed) x 2 frequencies
    assert torch.allclose(both[4:], windowed)  # plain waves first, then the windowed ones
    def edge_share(v):  # the first row's share of each vector's energy
        return v[..., 0, :].pow(2).sum((1, 2)) / v.pow(2).sum((1, 2, 3))
    assert bool((edge_share(windowed) < 0.5 * edge_share(both[:4])).all())  # fades toward the edge


# A symbol of few rows makes each frequency's Gram low-rank: its Krylov space turns invariant
# within a few blocks, and Ritz values over the raw basis came out up to 2.8x the true top
# (before the whitening in _krylov_ritz); a wide one checks the converged top at depth 20.
@pytest.mark.parametrize("layer, shape", [(nn.Conv2d(64, 1, 4), (64, 4, 4)), (nn.Conv2d(16, 8, 4, 2, 1), (16, 10, 10)),
                                          (nn.Conv2d(32, 64, 4, 2, 1), (32, 16, 16))], ids=["1-row", "8-rows", "wide"])
def test_krylov_ranking_never_overestimates_a_frequency_s_top(layer: nn.Conv2d, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    geometry, w = ConvGeometry.of(layer), layer.weight.detach()
    grid = mode_grid(geometry, shape, tuple(w.shape))
    sym = circular_symbol(dense_kernel(w, 1, geometry.dilation), grid.stride, grid.sizes).contiguous()
    top = torch.linalg.svdvals(sym.to(torch.complex128))[:, 0]
    start = torch.randn(sym.shape[0], sym.shape[2], 2, dtype=torch.float64).to(sym.dtype)
    for depth in (6, 20):
        values, vectors = _krylov_ritz(sym, start, depth)
        ritz = values[:, -1].clamp_min(0).sqrt().double()
        assert bool((ritz <= top * (1 + 1e-5)).all()), (depth, float((ritz / top).max()))
    assert torch.allclose(ritz, top, rtol=1e-3)  # depth 20 has converged (float32: enough to rank)
    assert torch.allclose(vectors[..., -1].norm(dim=1).double(), torch.ones(len(top), dtype=torch.float64), atol=1e-5)


def test_krylov_ranking_survives_subnormal_blocks() -> None:
    """A block whose columns are all subnormal (the rounding noise of an invariant Krylov space)
    made complex QR return NaN, and the ranking's eigh then failed: conv SN could not even be
    registered on ConvTranspose3d(3, 3, (3, 2, 2), (2, 3, 3), 1, dilation=3, groups=3) at 3x6x5x7."""
    torch.manual_seed(0)
    sym = torch.randn(4, 1, 18, dtype=torch.complex64)  # one row per frequency: a rank-1 Gram
    start = torch.randn(4, 18, 2, dtype=torch.complex64)
    start[..., 0] = 0
    start[:, 9, 0] = complex(1.4013e-45, 1.4013e-45)  # the smallest subnormal float32
    values, vectors = _krylov_ritz(sym, start, 6)
    assert bool(torch.isfinite(values).all() and torch.isfinite(vectors).all())
    top = torch.linalg.svdvals(sym.to(torch.complex128))[:, 0]
    assert torch.allclose(values[:, -1].clamp_min(0).sqrt().double(), top, rtol=1e-5)
