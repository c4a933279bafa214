"""How operator="conv" spectral normalization finds the conv's top singular pair after an update.

Rayleigh-Ritz (norms/krylov.py) over a block Krylov space started from
- the carried vectors: v and the next RUNNERS_UP (BORDER_RUNNERS_UP) Ritz vectors of the previous refresh (an
  update can swap nearly equal top modes; the new top is then already in the space), and
- the top modes of the conv's frequency symbol (norms/conv_modes.py): a step can move the top
  to another frequency, which a space grown from the carried vectors (a conv is local) does
  not reach.
Every update gets the whole refresh, then update_rounds() - 1 thick restarts from its top Ritz
vectors (ritz_refresh from v and its runners-up alone, RESTART_EXTRA_DEPTH blocks deeper). Cheaper
schedules let the true norm exceed
bound * (1 + 1e-3) at some training step (benchmarks/conv_refresh_schedules.py, 40 Adam steps
at lr 1e-3, the contract test's geometries, seeds 0-1; results/conv_refresh_schedules_cpu.md):
the carried vectors alone with one Krylov block between full refreshes every 4th update
(0.41x the cost): up to 11% over (Conv2d 3 -> 16 at 16x16); with three blocks (0.53x): 7.7%
(circular padding); the symbol's modes every update at Krylov depth 1 (0.58x): 2.9%
(replicate padding).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..norms.conv_modes import ModeGrid, mode_vectors, rank_modes
from ..norms.krylov import krylov_top_pair
from ..norms.operators import ConvGeometry
from .base import as_dtype, check_finite, normal_tensors

# Symbol frequencies whose top modes join every refresh. Measured (benchmarks/
# conv_refresh_schedules.py plus Conv2d 3 -> 16 at 16x16, 60 steps, seeds 0-2, every step's
# weight): 3 let that layer reach 1.7e-3 over its bound (its zero-padded top mode came from a
# lower-ranked circular frequency; the contract test once checked only the end of training),
# 4 with one more Krylov block 8.5e-4 (4 alone, windowed waves: 1.9e-3, dilation 2), 6 <= 4.6e-4
# on all 15 geometries (3.8e-4 with PLAIN_WAVES; one refresh round per update). (Earlier: 2
# left groups=2 3e-3 over.) Ranking the 12 top frequencies by their waves' gain on the layer
# and keeping 3 did not help (1.5e-3).
MODE_COUNT = 6
# Carried Ritz vectors beside v, measured over 5 seeds x 12 geometries: none 2e-3..4e-3 over
# the bound (reflect, replicate, Conv3d), 2 carried 2.5e-3, 4 carried 2.0e-3 (one replicate
# seed), 6 carried <= 2.5e-5 everywhere (with MODE_COUNT 3; bigger layers at 16x16 <= 7e-6).
RUNNERS_UP = 6
# Reflect and replicate padding carry more: their top singular vectors sit at the image's
# corners and edges (Conv2d(8, 16, 3, 1, 1, padding_mode="replicate") at 8x24x24: the top 4
# have 97-99.8% of their energy in the last 4 rows), a family of nearly equal modes a step can
# reorder. With 6 that layer went 1.6e-3 over its bound at step 30 (seed 2; 3.1e-4 seed 5);
# with 10, 7.8e-5 and 2.1e-4, and <= 2.5e-5 on 34 other runs of 6 reflect / replicate layers
# x 6 seeds x 40 steps (8: 3.3e-5 / 2.1e-4; 12: 5.0e-5 / 5.0e-5). Mirror images of v at the
# other corners as extra starts did not help (1.3e-3 / 7.4e-4).
BORDER_RUNNERS_UP = 10
# Plane waves beside the windowed ones for zero padding too (other paddings always get them):
# measured a little better (worst 3.8e-4 against 4.6e-4, the sweep above) at ~1.6x the cost.
PLAIN_WAVES = False
# Refreshes per weight update: the full one, then restarts. One let the DCGAN critic's conv
# kind, Conv2d(8, 16, 4, 2, 1) at 8x16x16 (seed 1), reach 1.3e-2 over its bound at step 8 (the
# new top was found one update late; 12 frequencies: 1.2e-2; one refresh of Krylov depth
# n_iter + 6: 5.8e-4). Two full refreshes: 7.2e-4 (seed 1), <= 4.5e-4 over 9 more seeds; the
# 15 small geometries of the sweep above <= 6.0e-5 (3 seeds x 40 steps; one round: 4.6e-4).
# Still needed with the block ranking (conv_modes.RANK_BLOCK): one round let Conv2d(32, 64, 4,
# 2, 1) at 32x32x32 (seed 2) reach 1.3e-3 at step 2 (two: 1.3e-5). With the Krylov ranking
# (conv_modes.py, 2026-12-01) one round let replicate padding's Conv2d(8, 16, 3, 1, 1) at
# 8x24x24 (seed 2) reach 9.7e-3 by step 40 (two: 7.8e-5) and raised the worst of the zero-padded
# layers to 7.2e-4 (Conv2d(16, 16, 3, 1, 2, dilation=2) at 16x16x16, seed 1; two: 1.5e-4).
UPDATE_ROUNDS = 2
# Reflect and replicate padding get a third round (a second restart). With two, replicate
# padding's Conv2d(8, 16, 3, 1, 1) at 8x24x24 (seed 2) went 1.1e-3 over its bound at step 30
# when torch ran on 2 threads (7.8e-5 on 1: the trajectory depends on the float rounding), a
# right-edge mode (60% of its energy in the last column) that the start space held only 17%
# of. 6 reflect / replicate layers x 12 seeds x 40 steps (1 thread; every step's weight, the
# Lanczos oracle): two rounds worst 2.1e-4, three 5.8e-6, two with 14 runners-up 7.6e-5; border
# strips' top vectors as extra starts 2.1e-4 (2026-12-01); three rounds on 2 threads 6.3e-6. It
# costs such a layer's critic step 1.22-1.24x (benchmarks/border_rounds_cost.py).
BORDER_UPDATE_ROUNDS = 3
# The second round restarts from the first's top Ritz vectors (v and the RUNNERS_UP) alone,
# RESTART_EXTRA_DEPTH Krylov blocks deeper, instead of a second full refresh (which re-ranked
# the symbol and re-built the modes). Measured 2026-12-01 (30-40 Adam steps, every step's
# weight, with conv_modes.RANK_STEPS_WARM 6 and one ranking vector per frequency; two full
# refreshes with 3 warm ranking steps, the code before, in brackets): the 8 -> 16 stride-2 layer above, seeds 0-9, <= 2.4e-4 over
# (7.2e-4); the 15 small geometries <= 3.4e-5 (6.0e-5); 5 larger layers x 5 seeds <= 2.1e-4
# (1.8e-4); Conv2d(3, 16, 4, 2, 1) at 3x32x32, Conv2d(16, 32, 4, 2, 1) at 16x16x16 and
# Conv2d(8, 16, 3, 1, 1) at 8x16x16, 3 seeds each, <= 3.5e-5 (the 16 -> 32 layer, seed 0:
# 1.1e-2 at step 4, the warm ranking's fault: conv_modes.py). At 0.8x the refresh time of
# those layers; the critic step is unchanged within noise. Restarting at the first round's
# depth: 1.6e-3 (seed 2 of the 8 -> 16 layer).
# The restart takes ALL of round 1's runner-up vectors: restarting replicate padding's layer
# above (seed 5, 40 steps) from v and 6 of its 10 went 4.1e-3 over, from v and 2 5.9e-3, from v
# alone 3.6e-2 (2026-12-01; 10 zero-padded hard cases: within 1.5e-4 with v and 2, 5.0e-4 v alone).
RESTART_EXTRA_DEPTH = 3


def full_refresh(
    geometry: ConvGeometry, shape: tuple[int, ...], grid: ModeGrid, w: Tensor, carried: list[Tensor],
    freq_vectors: Tensor | None, depth: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(sigma, u, v, runners, freq_vectors) for weight w by Rayleigh-Ritz over `carried`
    (input-shaped blocks), the symbol's top modes (ranked from `freq_vectors`, complex, or
    from scratch when None) and depth Krylov blocks."""
    check_finite(w)
    with normal_tensors(), torch.no_grad():  # new vectors: normal tensors
        freqs, amps, freq_vectors = rank_modes(geometry, w, grid, MODE_COUNT, freq_vectors)
        modes = mode_vectors(grid, freqs, amps, w.dtype, plain=PLAIN_WAVES or geometry.padding_mode != "zeros")
        if geometry.transposed:  # the modes live in the layer's output space
            modes = geometry.adjoint(modes, w, shape)
        sigma, u, v, runners = ritz_refresh(geometry, shape, w, torch.cat([*carried, modes]), depth)
    return sigma, u, v, runners, freq_vectors


def ritz_refresh(
    geometry: ConvGeometry, shape: tuple[int, ...], w: Tensor, start: Tensor, depth: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(sigma, u, v, runners) by Rayleigh-Ritz over `start` (input-shaped rows) and depth
    Krylov blocks. The second round of an update calls it on the first round's v and runners
    with depth + RESTART_EXTRA_DEPTH: a thick restart."""
    with normal_tensors(), torch.no_grad():  # new vectors: normal tensors
        sigma, u, v, runners = krylov_top_pair(
            lambda x: geometry.forward(x, w), lambda y: geometry.adjoint(y, w, shape), start, depth,
            BORDER_RUNNERS_UP if _border_modes(geometry) else RUNNERS_UP,
        )
    return sigma, u, v, as_dtype(runners, w.dtype)


def update_rounds(geometry: ConvGeometry) -> int:
    """Refresh rounds per weight update for this geometry (the full refresh, then restarts)."""
    return BORDER_UPDATE_ROUNDS if _border_modes(geometry) else UPDATE_ROUNDS


def _border_modes(geometry: ConvGeometry) -> bool:
    """Reflect / replicate padding: top modes at the corners and edges (see BORDER_RUNNERS_UP)."""
    return geometry.padding_mode in ("reflect", "replicate")
