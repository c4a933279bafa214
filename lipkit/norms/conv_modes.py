"""A conv's top modes read off its frequency symbol: start vectors that find the top singular
vector where power iteration alone would not.

Why: a conv's operator has a dense top spectrum (many frequencies with nearly the same
singular value), and a training step can move the top from one mode to another. Power
iteration from the previous update's vector then stays on the old mode for many updates
(benchmarks/sn_conv_lag.py: the true norm of an operator="conv" SN layer ran 38% above its
bound after 15 Adam steps), and a Krylov space grows only by the kernel's reach per step
(a conv is local), so it cannot build a mode spread over the whole image either. The
circular symbol (conv_symbol.py) says which frequencies are on top, and its top singular
vector there IS the circular conv's top mode, a plane wave. Restricted to the layer's real
input domain it is not the layer's exact top vector, but it overlaps it strongly, and
Rayleigh-Ritz over (previous vector, these waves) plus a few Krylov blocks finds the top.

Two steps: rank_modes computes each group's symbol (an FFT of the kernel, 8-40x the
kernel's memory) and ranks the (frequency, group) pairs by batched block Krylov spaces, warm-started
from the previous update's vectors (ranking only every 10 updates was measured too stale);
mode_vectors builds the waves from the few (frequency, amplitude) pairs it returned.

For a ConvTranspose the symbol is that of the conv it is the adjoint of, so the waves live
in the layer's OUTPUT space; callers map them back with the layer's adjoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .conv_symbol import circular_symbol, dense_kernel, symbol_plan
from .operators import ConvGeometry

# Each (frequency, group) pair's top singular value is estimated by Rayleigh-Ritz on a block
# Krylov space of its symbol's Gram (_krylov_ritz), of depth RANK_STEPS from a fixed random
# start or RANK_STEPS_WARM from the previous update's vectors. (Block power steps with
# Rayleigh-Ritz inside the block, before 2026-12-01, read the symbol as often and converge
# slower where a frequency's top singular values are close: a 64x64 DCGAN generator's
# ConvTranspose2d(128, 64, 4, 2, 1) at 128x16x16, seed 0, went 2.0e-3 over its bound at the
# first training step with 6 power steps, 1.9e-5 with 20; the Krylov space of depth 6: 1.9e-5.)
RANK_STEPS = 20
# 3 warm power steps (before 2026-12-01) missed a frequency whose top had moved: Conv2d(16, 32,
# 4, 2, 1) at 16x16x16 (seed 0) went 1.1e-2 over its bound at training step 4. Depth 6 with
# the Krylov ranking, the worst over every step (Lanczos or dense oracle; 30 steps unless
# said): the contract's 15 small geometries x 3 seeds x 40 steps 2.2e-4 (Conv2d(3, 8, 4, 2, 1)
# at 3x24x24), Conv2d(8, 16, 4, 2, 1) at 8x16x16 x 10 seeds 1.0e-5, the SN-GAN CIFAR critic's
# and the 64x64 DCGAN critic's conv layers at their real sizes (up to 64 -> 128 channels at
# 32x32) x 3 seeds 4.4e-5, 11 other layers (ConvTranspose2d of 8-128 channels, stride 2 up to
# 16 -> 32 at 32x32, circular padding, dilation 2, groups 4) x 3 seeds 1.5e-4 (Conv2d(16, 16,
# 3, 1, 2, dilation=2) at 16x16x16); reflect / replicate: conv_refresh.BORDER_RUNNERS_UP.
RANK_STEPS_WARM = 6
# Vectors per (frequency, group) in each Krylov block: a top that moves to the frequency's
# second vector is then already in the start. One vector (power steps, before 2026-12-01): the
# width-32 DCGAN critic's Conv2d(32, 64, 4, 2, 1) at 32x32x32 (seed 0) went 4.2e-3 over its
# bound at training step 2; 2: 6.3e-6. A 2-column product reads the (memory-bound) symbol as
# often as a 1-column one.
RANK_BLOCK = 2


def _gram_times(sym: Tensor, y: Tensor) -> Tensor:
    """sym^H y as the conjugate of the row y^H sym: 5x faster on a CPU than a product with a
    materialized sym^H (and no copy of the symbol)."""
    return (y.mH.resolve_conj() @ sym).mH.resolve_conj()


def _orthonormal_columns(block: Tensor) -> Tensor:
    """Q of block's QR, a column whose entries are all subnormal zeroed first. Complex
    Householder QR returns NaN for such a column (the real one copes): once a Krylov space is
    invariant, the next block is rounding noise that can be that small (ConvTranspose3d(3, 3,
    (3, 2, 2), (2, 3, 3), 1, dilation=3, groups=3) at 3x6x5x7: a rank-1 symbol). Other columns
    are left as they are (Q bit-identical to plain QR there). The test reads real and imaginary
    parts (no complex abs: 5-9% of a warm ranking against 12-22% with it)."""
    parts = torch.view_as_real(block) if block.is_complex() else block.unsqueeze(-1)
    largest = parts.abs().amax(dim=(-3, -1)).unsqueeze(-2)
    return torch.linalg.qr(torch.where(largest >= torch.finfo(largest.dtype).tiny, block, 0)).Q


def _krylov_ritz(sym: Tensor, start: Tensor, depth: int) -> tuple[Tensor, Tensor]:
    """(values, vectors): Rayleigh-Ritz of each pair's sym^H sym on its block Krylov space
    span{X, G X, ..., G^depth X} (G = sym^H sym, X = start (pairs, n, b)); values ascending
    (pairs, k), vectors (pairs, n, k), unit where their value is not 0. The same method as
    norms/krylov.py's, batched over the pairs and complex."""
    n, width = start.shape[1], start.shape[2]
    if n <= width * (depth + 1):  # the space would be all of C^n: the exact eigenpairs
        return torch.linalg.eigh(sym.mH @ sym)
    basis = _orthonormal_columns(start)
    images = sym @ basis
    for _ in range(depth):
        block = _gram_times(sym, images[..., -width:])
        for _ in range(2):  # Gram-Schmidt against the basis then QR, twice
            block = _orthonormal_columns(block - basis @ (basis.mH @ block))
        basis, images = torch.cat([basis, block], -1), torch.cat([images, sym @ block], -1)
    # The basis is whitened, not trusted to be orthonormal: once the space is invariant (a
    # symbol of few rows, G of low rank) each new block is rounding noise that no
    # re-orthogonalization keeps orthogonal, and the plain Ritz values came out up to 2.8x the
    # true top (Conv2d(64, 1, 4) at 64x4x4, depth 6: 1.7x). Directions below sqrt(eps) of the
    # largest are dropped (zero columns: no host sync), which bounds the rounding they amplify.
    gram_values, gram_vectors = torch.linalg.eigh(basis.mH @ basis)
    floor = gram_values[..., -1:] * torch.finfo(gram_values.dtype).eps ** 0.5
    whiten = gram_vectors * ((gram_values > floor) / gram_values.clamp_min(floor).sqrt()).unsqueeze(-2)
    values, ritz = torch.linalg.eigh(whiten.mH @ (images.mH @ images) @ whiten)
    return values, basis @ (whiten @ ritz)


@dataclass(frozen=True)
class ModeGrid:
    """Where a conv's circular modes live: the padded cyclic domain and the data inside it."""

    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    sizes: tuple[int, ...]  # the padded cyclic domain (symbol_plan)
    blocks: tuple[int, ...]  # polyphase blocks per axis (the symbol's FFT size)
    spatial: tuple[int, ...]  # the conv's input extent (the layer's output for a ConvTranspose)
    offsets: tuple[int, ...]  # where that data starts inside the padded domain
    channels: int  # the conv's input channels

    @property
    def freq_shape(self) -> tuple[int, ...]:
        return (*self.blocks[:-1], self.blocks[-1] // 2 + 1)  # rfftn's half spectrum


def mode_grid(geometry: ConvGeometry, in_shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> ModeGrid:
    """The ModeGrid of a layer at `in_shape` (no batch dim)."""
    sizes, _, _ = symbol_plan(geometry, in_shape, tuple(weight_shape[2:]))
    if geometry.transposed:
        spatial, offsets = [n - p for n, p in zip(sizes, geometry.padding)], list(geometry.padding)
        channels = weight_shape[1] * geometry.groups
    else:
        spatial, offsets = list(in_shape[1:]), [lo for lo, _ in geometry.axis_pads]
        channels = in_shape[0]
    blocks = tuple(math.ceil(n / s) for n, s in zip(sizes, geometry.stride))
    return ModeGrid(tuple(geometry.stride), tuple(geometry.dilation), tuple(sizes), blocks, tuple(spatial),
                    tuple(offsets), channels)


def rank_modes(geometry: ConvGeometry, weight: Tensor, grid: ModeGrid, count: int,
               start: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(frequencies (k, nd) long, amplitudes (k, channels * prod(stride)) complex, vectors
    (groups * n_freq, channels / groups * prod(stride), RANK_BLOCK) complex) for the k top (frequency,
    group) pairs by top singular value. Each group is ranked on its own symbol: a grouped
    conv is a direct sum over its groups, and a vector carried across updates on the
    block-diagonal symbol loses the other groups' components, so it could not see another
    group overtake (measured: groups=2 stayed 3e-3 over its bound). Every pair's top right
    singular vector is approximated by Rayleigh-Ritz on a batched block Krylov space (blocks of
    RANK_BLOCK vectors): of depth RANK_STEPS from a fixed start, or RANK_STEPS_WARM from
    `start` (the blocks returned for the previous weight); the amplitudes are those of the
    top k, zero outside their group: a start the Krylov space refines."""
    groups = geometry.groups
    with torch.no_grad():
        syms = [circular_symbol(dense_kernel(part, 1, geometry.dilation), grid.stride, grid.sizes)
                for part in weight.detach().chunk(groups)]  # rows of group g: its output channels
        sym = (syms[0] if groups == 1 else torch.cat(syms)).contiguous()  # (groups * n_freq, out / groups, in / groups * S)
        pairs, _, n = sym.shape
        block = min(RANK_BLOCK, n)
        if start is not None and tuple(start.shape) == (pairs, n, block):
            x, steps = start.to(sym.dtype), RANK_STEPS_WARM
        else:
            gen = torch.Generator().manual_seed(1)
            x = torch.randn(pairs, n, block, generator=gen, dtype=torch.float64).to(sym.device, sym.dtype)
            steps = RANK_STEPS
        values, x = _krylov_ritz(sym, x, steps)
        x = x[..., -block:]  # the top `block` Ritz vectors, the best last: the next update's start
        scores = values[:, -1].clamp_min(0).sqrt()
        index = torch.topk(scores, min(count, pairs)).indices
        n_freq = pairs // groups
        freqs = torch.stack(torch.unravel_index(index % n_freq, grid.freq_shape), dim=1)
        amps = sym.new_zeros(len(index), groups, n)  # polyphase channel c * S + r: groups are contiguous
        amps[torch.arange(len(index), device=sym.device), index // n_freq] = x[index, :, -1]
        return freqs, amps.flatten(1), x


def mode_vectors(grid: ModeGrid, freqs: Tensor, amps: Tensor, dtype: torch.dtype, plain: bool = True) -> Tensor:
    """Real start vectors (n, channels, *spatial), each of unit norm: the cosine and sine
    parts of the circular mode of each (frequency, amplitude), restricted to the input
    domain (only if `plain`: a circular, reflect or replicate padded layer's top mode is
    such a wave); then the same waves under a sine window (the edges of a zero-padded domain
    pull the top mode's envelope down to zero: measured, windowed waves lower the tracking
    error 10x); and with dilation, each of those on every residue subgrid (a stride-1 dilated
    conv is a direct sum over them, so its top vector lives on one). Rows: residue, then
    kind (cos, sin; plain before windowed), then frequency."""
    nd, spatial, device = len(grid.spatial), list(grid.spatial), freqs.device
    # Input position i sits at p = offset + i in the padded domain: polyphase block t = p // s,
    # phase r = p % s. The mode is a[c, r] * exp(-2 pi i sum_d f_d t_d / B_d) (rfftn's sign).
    phase = torch.zeros(len(freqs), *spatial, dtype=torch.float64, device=device)
    flat_r = torch.zeros(spatial, dtype=torch.long, device=device)
    for d in range(nd):
        p = torch.arange(spatial[d], device=device) + grid.offsets[d]
        view = [1] * nd
        view[d] = spatial[d]
        t = (p // grid.stride[d]).to(torch.float64).view(view)
        phase = phase + freqs[:, d].to(torch.float64).view(-1, *[1] * nd) * t / grid.blocks[d]
        flat_r = flat_r * grid.stride[d] + (p % grid.stride[d]).view(view)
    wave = torch.exp(-2j * math.pi * phase)  # (k, *spatial)
    amp = amps.to(torch.complex128).view(len(freqs), grid.channels, math.prod(grid.stride))
    amp = amp[:, :, flat_r.flatten()].view(len(freqs), grid.channels, *spatial)
    modes = amp * wave.unsqueeze(1)
    real = torch.cat([modes.real, modes.imag])
    windowed = real * _sine_window(spatial, real)
    real = torch.cat([real, windowed]) if plain else windowed
    if any(d > 1 for d in grid.dilation):
        real = torch.cat([real * mask for mask in _residue_masks(spatial, grid.dilation, real)])
    norms = torch.linalg.vector_norm(real.flatten(1), dim=1).clamp_min(1e-30)
    return (real / norms.view(-1, *[1] * (real.dim() - 1))).to(dtype)


def _sine_window(spatial: list[int], like: Tensor) -> Tensor:
    """prod_d sin(pi (i_d + 1) / (n_d + 1)): the lowest standing wave of each axis."""
    window = torch.ones(spatial, dtype=like.dtype, device=like.device)
    for d, n in enumerate(spatial):
        view = [1] * len(spatial)
        view[d] = n
        i = torch.arange(n, dtype=like.dtype, device=like.device)
        window = window * torch.sin(math.pi * (i + 1) / (n + 1)).view(view)
    return window


def _residue_masks(spatial: list[int], dilation, like: Tensor) -> list[Tensor]:
    """Indicator of each residue class (i_d mod dilation_d for every axis d)."""
    masks = []
    for residues in torch.cartesian_prod(*[torch.arange(d) for d in dilation]).view(-1, len(spatial)).tolist():
        mask = torch.ones(spatial, dtype=like.dtype, device=like.device)
        for d, (n, r) in enumerate(zip(spatial, residues)):
            view = [1] * len(spatial)
            view[d] = n
            mask = mask * (torch.arange(n, device=like.device) % dilation[d] == r).to(like.dtype).view(view)
        masks.append(mask)
    return masks
