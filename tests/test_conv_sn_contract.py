"""The contract of spectral normalization (issue 11): after registration and at every training
step, every constrained layer's norm is <= bound * (1 + 1e-3).

Checked against the dense Jacobian (lk.operator_norm(..., "exact") materializes the layer's
map at its input shape), for every spectral variant: operator="conv" (its TRUE norm, power
estimate and certified Gram bound) and operator="reshape" (the reshaped kernel's sigma, its
own promise: torch.linalg.svdvals). The training is the one that broke the promise before
(issue 11): 30 Adam steps at lr 1e-3, betas (0, 0.9), on a WGAN critic loss. At every step
the weight the next forward uses (a training-mode read: it refreshes as that forward would)
is measured too: the export after training refreshes fully in eval mode, so checking only the
end would not see a refresh that lags between updates.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

import lipkit as lk
from lipkit.norms.linalg import dense_matrix
from lipkit.norms.operators import CONV_TRANSPOSE, ConvGeometry

TOL = 1e-3
STEPS = 30

GEOMETRIES = {  # name: (layer factory, input shape)
    "conv1d": (lambda: nn.Conv1d(2, 4, 3, 1, 1), (2, 16)),
    "conv2d": (lambda: nn.Conv2d(3, 8, 3, 1, 1), (3, 12, 12)),
    "conv3d": (lambda: nn.Conv3d(2, 3, 3, 1, 1), (2, 6, 6, 6)),
    "stride2": (lambda: nn.Conv2d(3, 8, 4, 2, 1), (3, 12, 12)),
    "dilation2": (lambda: nn.Conv2d(3, 8, 3, 1, 2, dilation=2), (3, 12, 12)),
    "groups2": (lambda: nn.Conv2d(4, 8, 3, 1, 1, groups=2), (4, 12, 12)),
    "circular": (lambda: nn.Conv2d(3, 8, 3, 1, 1, padding_mode="circular"), (3, 12, 12)),
    "reflect": (lambda: nn.Conv2d(3, 8, 3, 1, 1, padding_mode="reflect"), (3, 12, 12)),
    "replicate": (lambda: nn.Conv2d(3, 8, 3, 1, 1, padding_mode="replicate"), (3, 12, 12)),
    "transpose1d": (lambda: nn.ConvTranspose1d(2, 3, 4, 2, 1), (2, 8)),
    "transpose2d": (lambda: nn.ConvTranspose2d(3, 8, 4, 2, 1), (3, 6, 6)),
    "transpose-groups": (lambda: nn.ConvTranspose2d(4, 6, 4, 2, 1, groups=2), (4, 6, 6)),
}
# A dense top spectrum: 3 -> 16 channels at 16x16 (top two singular values 0.45% apart). Seed
# 2 crosses the bound at step 18 (1.3e-3 over) when a refresh holds the symbol's top 3
# frequencies (MODE_COUNT 3, before this test): the zero-padded layer's top mode came from a
# lower-ranked circular frequency. benchmarks/conv_refresh_schedules.py measures more.
DENSE_SPECTRUM = {"conv2d-16x16": (lambda: nn.Conv2d(3, 16, 3, 1, 1), (3, 16, 16))}
# The cases below record the breaches that set the refresh's constants. With the symbol's
# Krylov ranking (conv_modes._krylov_ritz, 2026-12-01) they all pass even with RANK_BLOCK 1,
# RANK_STEPS_WARM 3, RESTART_EXTRA_DEPTH 0 or MODE_COUNT 3 (each checked alone): those are kept
# for margin measured at other sizes (benchmarks/conv_sn_sizes.py). RANK_STEPS_WARM 1 turns the
# transposed case red; BORDER_UPDATE_ROUNDS 2 or 1 and BORDER_RUNNERS_UP 6 the replicate case.
# The DCGAN critic's conv kind, 8 -> 16 channels, 4x4 stride 2 at 16x16, seed 1, went 1.3e-2
# over its bound at step 8 with one refresh per update (the new top found one update late);
# two refresh rounds per update (conv_refresh.UPDATE_ROUNDS): 7.2e-4; seed 2 needs the second
# round deeper than the first (below).
JUMPING_TOP = {"stride2-8ch-16x16": (lambda: nn.Conv2d(8, 16, 4, 2, 1), (8, 16, 16)),
               # The top moves to another vector WITHIN a frequency, which 3 warm ranking steps
               # (norms/conv_modes.RANK_STEPS_WARM) missed: 16 -> 32 at 16x16 (the DCGAN
               # critic's second layer at 32x32 inputs), seed 0, 1.1e-2 over at step 4 (the
               # code before 2026-12-01, two full refreshes); 3 -> 8 at 24x24, seed 4, 3.9e-3
               # at step 9 (with the thick restart). 6 steps: 2.0e-5 and 1.6e-5. (Red with 3
               # power steps of one vector, the ranking before the Krylov one.)
               "stride2-16ch-16x16": (lambda: nn.Conv2d(16, 32, 4, 2, 1), (16, 16, 16)),
               "stride2-3ch-24x24": (lambda: nn.Conv2d(3, 8, 4, 2, 1), (3, 24, 24))}
# The width-32 DCGAN critic's second layer at its real size (32768 input dims: checked with
# lanczos_norm), seed 0: 4.2e-3 over its bound at training step 2 with one vector per
# frequency in the symbol's warm ranking (conv_modes.RANK_BLOCK 1, 6 steps); a block of 2: 6.3e-6.
# A 64x64 DCGAN generator's second layer, ConvTranspose2d(128, 64, 4, 2, 1) at 128x16x16, seed
# 0: 2.0e-3 over at training step 1 with the ranking's 6 block power steps per frequency (its
# frequencies' top two singular values are close, so power steps converge slowly); a block
# Krylov space of the same depth (conv_modes._krylov_ritz): 1.9e-5.
LARGE = {"stride2-32ch-32x32": (lambda: nn.Conv2d(32, 64, 4, 2, 1), (32, 32, 32)),
         "transpose-128ch-16x16": (lambda: nn.ConvTranspose2d(128, 64, 4, 2, 1), (128, 16, 16)),
         # replicate padding's top modes sit at corners and edges (conv_refresh.BORDER_RUNNERS_UP):
         # seed 2 went 1.6e-3 over at step 30 with 6 carried runner-up vectors, 9.7e-3 by step 40
         # with one refresh round per update; 10 runners and two rounds: 7.8e-5 on 1 thread but
         # 1.1e-3 on 2 (an edge mode, CI's run); three rounds (BORDER_UPDATE_ROUNDS): 6e-6
         "replicate-8ch-24x24": (lambda: nn.Conv2d(8, 16, 3, 1, 1, padding_mode="replicate"), (8, 24, 24))}
VARIANTS = {
    "conv": {"operator": "conv"},
    "conv-certified": {"operator": "conv", "certified": True},
    "reshape": {"operator": "reshape"},
}


def layer_norm(layer: nn.Module, shape: tuple[int, ...], operator: str) -> float:
    """The norm the variant promises to bound, from the exported (plain) layer."""
    if operator == "conv":
        return lk.operator_norm(layer, shape, "exact")
    dim = 1 if isinstance(layer, CONV_TRANSPOSE) else 0
    return float(torch.linalg.svdvals(layer.weight.detach().double().movedim(dim, 0).flatten(1))[0])


def training_norm(layer: nn.Module, shape: tuple[int, ...], operator: str) -> float:
    """The norm of the weight a training forward of the constrained `layer` uses now."""
    weight = layer.weight.detach().double()
    if operator == "conv":
        geometry = ConvGeometry.of(layer)
        matrix = dense_matrix(lambda x: geometry.forward(x, weight), shape, torch.float64, "cpu")
        # the top eigenvalue of the Gram: svdvals' value to ~1e-15 relative, several times faster
        return float(torch.linalg.eigvalsh(matrix @ matrix.mT)[-1].sqrt())  # rows: input side
    dim = 1 if isinstance(layer, CONV_TRANSPOSE) else 0
    return float(torch.linalg.svdvals(weight.movedim(dim, 0).flatten(1))[0])


def lanczos_norm(layer: nn.Module, shape: tuple[int, ...], operator: str = "conv") -> float:
    """The true norm of a conv layer (Conv1d/2d/3d with any padding, ConvTranspose1d/2d/3d) too
    large for a dense Jacobian: ARPACK's Lanczos (scipy) on A^T A, A the layer's map in float64
    (torch.nn.functional, padding by F.pad) and A^T by autograd (nothing of lipkit's). A Ritz
    value is never above the top eigenvalue, so a norm over the bound here is a real breach."""
    assert isinstance(layer, nn.modules.conv._ConvNd) and operator == "conv"
    w, n, dims = layer.weight.detach().double(), int(np.prod(shape)), len(shape) - 1
    options = dict(stride=layer.stride, dilation=layer.dilation, groups=layer.groups)
    if isinstance(layer, CONV_TRANSPOSE):
        transpose = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[dims - 1]

        def conv(x: Tensor) -> Tensor:
            return transpose(x, w, padding=layer.padding, output_padding=layer.output_padding, **options)
    else:
        forward = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
        pads, mode = layer._reversed_padding_repeated_twice, layer.padding_mode  # torch's own

        def conv(x: Tensor) -> Tensor:
            if mode == "zeros":
                return forward(x, w, padding=layer.padding, **options)
            return forward(F.pad(x, pads, mode=mode), w, **options)

    def gram_times(x: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).view(1, *shape).requires_grad_(True)
        y = conv(x)
        return torch.autograd.grad(y, x, y.detach())[0].reshape(-1).numpy()

    start = np.random.default_rng(0).standard_normal(n)
    gram = scipy.sparse.linalg.LinearOperator((n, n), matvec=gram_times, dtype=np.float64)
    return float(np.sqrt(scipy.sparse.linalg.eigsh(gram, k=3, which="LA", tol=1e-12, ncv=40, v0=start)[0].max()))


def train_and_measure(
    name: str, variant: str, bound: float, seed: int = 0, steps: int = STEPS,
    prepare: Callable[[nn.Module], None] | None = None, norm: Callable[..., float] | None = None,
) -> tuple[float, float, float]:
    """(norm / bound) right after registration, the largest over the STEPS Adam steps (the
    weight each next forward uses) and after training (the exported layer). `prepare(layer)`
    runs after the first forward (benchmarks/conv_refresh_schedules.py swaps the refresh there);
    `norm(layer, shape, operator)` replaces the dense oracles (for layers too large for them)."""
    factory, shape = {**GEOMETRIES, **DENSE_SPECTRUM, **JUMPING_TOP, **LARGE}[name]
    torch.manual_seed(seed)
    layer = factory()
    probe = layer(torch.zeros(1, *shape))
    critic = nn.Sequential(layer, nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(probe[0].numel(), 1))
    options = VARIANTS[variant]
    lk.constrain(critic, "spectral", where=type(layer), bound=bound, **options)
    gen = torch.Generator().manual_seed(seed)
    real = torch.randn(32, *shape, generator=gen) * 0.5 + 1.0
    critic(real[:2])  # the conv operator learns its input shape
    if prepare is not None:
        prepare(layer)
    before = (norm or layer_norm)(lk.export(critic)[0], shape, options["operator"]) / bound
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.0, 0.9))
    during = 0.0
    for _ in range(steps):
        fake = torch.randn(32, *shape, generator=gen)
        loss = critic(fake).mean() - critic(real).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        during = max(during, (norm or training_norm)(layer, shape, options["operator"]) / bound)
    after = (norm or layer_norm)(lk.export(critic)[0], shape, options["operator"]) / bound
    return before, during, after


CASES = [(name, variant, bound) for name in GEOMETRIES for variant in VARIANTS for bound in (1.0, 2.5)]


@pytest.mark.parametrize(("name", "variant", "bound"), CASES)
def test_spectral_norm_stays_within_its_bound(name: str, variant: str, bound: float) -> None:
    before, during, after = train_and_measure(name, variant, bound)
    assert before <= 1 + TOL, f"{name} {variant}: norm / bound {before:.5f} right after registration"
    assert during <= 1 + TOL, f"{name} {variant}: norm / bound {during:.5f} at a training step"
    assert after <= 1 + TOL, f"{name} {variant}: norm / bound {after:.5f} after {STEPS} Adam steps"
    if not VARIANTS[variant].get("certified"):
        # not a trivially small layer either: an estimate from below normalizes to ~bound
        assert after >= 1 - 0.05, f"{name} {variant}: norm / bound {after:.5f}, far below the bound"


def test_stride2_plateau_warm_up_finds_the_top() -> None:
    """Conv2d(1, 3, 3, stride=2) at 1x10x10, seed 0: the fixed start overlaps the top singular
    vector by 8e-4 and the top two singular values are 0.82344 and 0.81894, so a warm-up that
    stops when sigma changes by < 1e-6 stopped on the SECOND one (true norm 1.0055 after
    registration, issue 11)."""
    torch.manual_seed(0)
    layer = lk.constrain(nn.Conv2d(1, 3, 3, stride=2), "spectral", operator="conv", input_shape=(1, 10, 10))
    assert lk.operator_norm(lk.export(layer), (1, 10, 10), "exact") <= 1 + 1e-5


def test_reading_a_conv_weight_before_any_input_is_a_one_line_error() -> None:
    layer = lk.constrain(nn.Conv2d(2, 3, 3), "spectral", operator="conv")
    with pytest.raises(RuntimeError, match=r"not known yet: run one forward pass") as err:
        layer.weight  # noqa: B018  (the read is the test)
    assert "\n" not in str(err.value) and "input_shape=(C, H, W)" in str(err.value)


def test_dense_spectrum_top_that_moves_to_another_frequency_is_found() -> None:
    before, during, after = train_and_measure("conv2d-16x16", "conv", 1.0, seed=2, steps=20)
    assert max(before, during, after) <= 1 + TOL, f"norm / bound {before:.5f} / {during:.5f} / {after:.5f}"


# seed 1: red with one refresh round per update (1.3e-2); seed 2: red with the second round's
# restart at the first's Krylov depth (conv_refresh.RESTART_EXTRA_DEPTH 0: 1.6e-3 at step 5).
# Both with one ranking vector per frequency and power steps (the code before 2026-12-01).
@pytest.mark.parametrize("seed, steps", [(1, 8), (2, 5)])
def test_stride2_top_that_jumps_is_found_in_the_same_update(seed: int, steps: int) -> None:
    _, during, _ = train_and_measure("stride2-8ch-16x16", "conv", 1.0, seed=seed, steps=steps)
    assert during <= 1 + TOL, f"norm / bound {during:.5f} at a training step"


@pytest.mark.parametrize("name, seed, steps", [("stride2-16ch-16x16", 0, 5), ("stride2-3ch-24x24", 4, 9)])
def test_a_frequency_whose_top_vector_moved_is_ranked_on_it(name: str, seed: int, steps: int) -> None:
    _, during, _ = train_and_measure(name, "conv", 1.0, seed=seed, steps=steps)
    assert during <= 1 + TOL, f"norm / bound {during:.5f} at a training step"


# With power-step ranking (before 2026-12-01): seed 0 red with one ranking vector per frequency
# (4.2e-3 at step 2); seed 2 red with one refresh round per update (1.3e-3 at step 2).
@pytest.mark.parametrize("seed", [0, 2])
def test_a_large_layer_s_top_is_tracked(seed: int) -> None:
    before, during, after = train_and_measure("stride2-32ch-32x32", "conv", 1.0, seed=seed, steps=3, norm=lanczos_norm)
    assert max(before, during, after) <= 1 + TOL, f"norm / bound {before:.5f} / {during:.5f} / {after:.5f}"


def test_a_large_transposed_layer_s_ranking_converges() -> None:
    _, during, _ = train_and_measure("transpose-128ch-16x16", "conv", 1.0, seed=0, steps=1, norm=lanczos_norm)
    assert during <= 1 + TOL, f"norm / bound {during:.5f} at the first training step"


def test_replicate_padding_s_border_modes_are_tracked() -> None:
    # On 2 threads: the trajectory depends on the float rounding, and the breach of two refresh
    # rounds per update (1.1e-3 at step 30) showed on 2 threads only (CI's default here).
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _, during, _ = train_and_measure("replicate-8ch-24x24", "conv", 1.0, seed=2, steps=40, norm=lanczos_norm)
    finally:
        torch.set_num_threads(threads)
    assert during <= 1 + TOL, f"norm / bound {during:.5f} at a training step"


@pytest.mark.parametrize("layer, shape", [
    *((nn.Conv2d(3, 4, 3, 1, 1, padding_mode=mode), (3, 7, 7)) for mode in ("zeros", "reflect", "replicate", "circular")),
    (nn.ConvTranspose2d(4, 3, 4, 2, 1), (4, 7, 7)), (nn.Conv1d(2, 4, 5, 2, 2, groups=2), (2, 15)),
    (nn.Conv3d(2, 3, 3, 2, 1, padding_mode="reflect"), (2, 5, 5, 5)), (nn.ConvTranspose1d(2, 3, 4, 2, 1), (2, 9)),
], ids=["zeros", "reflect", "replicate", "circular", "transpose2d", "conv1d-groups", "conv3d-reflect", "transpose1d"])
def test_the_lanczos_oracle_agrees_with_the_dense_jacobian(layer: nn.Module, shape: tuple[int, ...]) -> None:
    jacobian = torch.autograd.functional.jacobian(
        lambda x: layer.double()(x.view(1, *shape)).flatten(), torch.zeros(int(np.prod(shape)), dtype=torch.float64))
    assert lanczos_norm(layer, shape) == pytest.approx(float(torch.linalg.svdvals(jacobian)[0]), rel=1e-10)
