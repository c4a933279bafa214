"""rank_modes: the symbol's frequencies ranked by their top singular value, and each one's top
right singular vector, by batched power steps (lipkit/norms/conv_modes.py). Oracle:
torch.linalg.svd of the symbol's per-frequency matrices (conv_symbol.circular_symbol, itself
checked against dense Jacobians in tests/test_conv_symbol*.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from lipkit.norms.conv_modes import mode_grid, mode_vectors, rank_modes
from lipkit.norms.conv_symbol import circular_symbol, dense_kernel
from lipkit.norms.operators import ConvGeometry


@pytest.mark.parametrize("layer", [nn.Conv2d(3, 4, 3, 1, 1), nn.Conv2d(2, 5, 4, 2, 1)], ids=["s1", "s2"])
def test_rank_modes_finds_the_top_frequencies_and_their_vectors(layer: nn.Conv2d) -> None:
    torch.manual_seed(0)
    shape = (layer.in_channels, 10, 10)
    geometry, w = ConvGeometry.of(layer), layer.weight.detach().double()
    grid = mode_grid(geometry, shape, tuple(w.shape))
    sym = circular_symbol(dense_kernel(w, 1, geometry.dilation), grid.stride, grid.sizes)
    _, s, vh = torch.linalg.svd(sym)
    freqs, _, vectors = rank_modes(geometry, w, grid, 3)
    flat = [int(torch.tensor(f.tolist()) @ torch.tensor([grid.freq_shape[1], 1])) for f in freqs]
    # the returned frequencies carry the 3 largest top singular values (power steps: to 1e-3)
    assert torch.allclose(s[flat, 0], s[:, 0].topk(3).values, rtol=1e-3)
    # and each frequency's vector is its top right singular vector (up to a complex phase)
    overlap = (vh[:, 0] * vectors[..., -1]).sum(-1).abs()  # Vh rows are the conjugated right vectors
    clear = s[:, 0] > s[:, 1] * 1.3  # a well-separated top: 20 power steps converge (1.3^-40)
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
