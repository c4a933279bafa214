"""spectral_norm and operator_norm against independent oracles.

Oracle for a layer's operator norm: the largest singular value of its dense Jacobian,
built by torch.autograd.functional.jacobian (not by lipkit's own dense path).
"""
import itertools
import math

import pytest
import torch
import torch.nn as nn

import lipkit as lk
from lipkit.norms.linalg import certify_margin, gram_iteration_bound, max_top_singular_value


def jacobian_norm(layer: nn.Module, input_shape) -> float:
    layer = layer.double()
    x = torch.zeros(input_shape, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda z: layer(z.unsqueeze(0)).flatten(), x, vectorize=True)
    return float(torch.linalg.svdvals(jac.reshape(jac.shape[0], -1))[0])


def _seeded(make):
    torch.manual_seed(0)
    layer = make()
    with torch.no_grad():  # no bias: the Jacobian at 0 must not see it anyway
        for p in layer.parameters():
            p.normal_(0, 0.3)
    return layer


# (factory, input shape, max relative excess of "gram" over exact: what we measured x ~1.5)
LAYERS = {
    "linear": (lambda: nn.Linear(7, 5), (3, 7), 1e-4),
    "conv2d": (lambda: nn.Conv2d(4, 6, 3, padding=1), (4, 12, 12), 0.05),
    "conv2d_circular": (lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="circular"), (4, 12, 12), 0.01),
    "conv2d_circular_stride2": (
        lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, padding_mode="circular"), (4, 12, 12), 0.01),
    "conv2d_circular_5x5": (lambda: nn.Conv2d(3, 5, 5, padding=2, padding_mode="circular"), (3, 8, 8), 0.01),
    "conv2d_stride2_k4": (lambda: nn.Conv2d(4, 6, 4, stride=2, padding=1), (4, 12, 12), 0.05),
    "conv2d_stride2_odd": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1), (4, 11, 9), 0.05),
    "conv2d_same": (lambda: nn.Conv2d(4, 6, 3, padding="same"), (4, 12, 12), 0.05),
    "conv2d_valid": (lambda: nn.Conv2d(4, 6, 3), (4, 12, 12), 0.05),
    "conv2d_dilated_groups": (lambda: nn.Conv2d(4, 6, 3, dilation=2, padding=2, groups=2), (4, 16, 16), 0.05),
    "conv2d_reflect": (lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), (4, 10, 10), None),
    "conv2d_replicate": (lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="replicate"), (2, 8, 8), None),
    "conv1d_stride3": (lambda: nn.Conv1d(3, 5, 5, stride=3, padding=2), (3, 24), 0.05),
    "conv3d_stride2": (lambda: nn.Conv3d(2, 3, 3, stride=2, padding=1), (2, 6, 6, 6), None),
    "convT2d_stride2": (lambda: nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1), (6, 8, 8), 0.05),
    "convT2d_outpad_groups": (
        lambda: nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2), (6, 7, 7), 0.05),
    "convT1d_dilated": (lambda: nn.ConvTranspose1d(3, 2, 3, dilation=2), (3, 16), 0.05),
    # output_padding >= stride (allowed under dilation): the conv of the output is longer than
    # the input, so the adjoint must crop it ("gram" and "power" crashed on the shape).
    "convT2d_outpad_ge_stride": (
        lambda: nn.ConvTranspose2d(2, 3, 2, stride=(1, 2), dilation=3, output_padding=(1, 2)), (2, 8, 7), None),
    "convT3d": (lambda: nn.ConvTranspose3d(2, 3, 2, stride=2), (2, 3, 3, 3), 0.05),
    "avgpool2": (lambda: nn.AvgPool2d(2), (3, 8, 8), 1e-6),
    "avgpool3_s2_p1": (lambda: nn.AvgPool2d(3, stride=2, padding=1), (3, 12, 12), None),
    "avgpool_ceil_nopad": (
        lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (3, 9, 9), None),
    "avgpool1d": (lambda: nn.AvgPool1d(2), (3, 10), 1e-6),
    "flatten": (lambda: nn.Flatten(), (3, 4, 4), 0.0),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_operator_norm_matches_dense_jacobian(name):
    make, shape, gram_tol = LAYERS[name]
    layer = _seeded(make)
    ref = jacobian_norm(layer, shape)
    exact = lk.operator_norm(layer, shape, "exact")
    assert exact == pytest.approx(ref, rel=1e-4)
    gram = lk.operator_norm(layer, shape, "gram")
    assert gram >= ref * (1 - 1e-6), "the Gram bound must be certified (>= exact)"
    if gram_tol is not None:
        assert gram <= ref * (1 + gram_tol)
    power = lk.operator_norm(layer, shape, "power")
    assert power <= ref * (1 + 1e-6)
    assert power == pytest.approx(ref, rel=1e-3)


def test_batchnorm_eval_closed_form_and_train_mode_error():
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(-2, 2)
    bn.eval()
    expected = float((bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps)).max())
    assert lk.operator_norm(bn, (3, 4, 4)) == pytest.approx(expected, rel=1e-6)
    assert lk.operator_norm(bn, (3, 4, 4)) == pytest.approx(jacobian_norm(bn, (3, 4, 4)), rel=1e-6)
    bn.train()
    with pytest.raises(ValueError, match="eval"):
        lk.operator_norm(bn, (3, 4, 4))


def test_reshaped_sigma_is_not_the_conv_norm():
    """The ANCHORS.md case: a random 4->6 3x3 conv on 12x12 inputs."""
    conv = _seeded(lambda: nn.Conv2d(4, 6, 3, padding=1))
    reshaped = float(lk.spectral_norm(conv.weight.detach()))
    true = lk.operator_norm(conv, (4, 12, 12))
    assert true > 1.3 * reshaped


WEIGHTS = {
    "tall": (9, 4),
    "wide": (3, 11),
    "square": (6, 6),
    "conv": (6, 4, 3, 3),
}


@pytest.mark.parametrize("shape", sorted(WEIGHTS))
def test_spectral_norm_matches_svdvals(shape):
    torch.manual_seed(1)
    w = torch.randn(WEIGHTS[shape])
    ref = torch.linalg.svdvals(w.flatten(1))[0]
    assert float(lk.spectral_norm(w)) == pytest.approx(float(ref), rel=1e-5)
    assert float(lk.spectral_norm(w, n_iter=200)) == pytest.approx(float(ref), rel=1e-4)
    assert float(lk.spectral_norm(w, n_iter=1)) <= float(ref) * (1 + 1e-5)


def test_spectral_norm_rank1_and_conv_transpose():
    a, b = torch.randn(5, 1), torch.randn(1, 7)
    w = a @ b
    assert float(lk.spectral_norm(w, n_iter=2)) == pytest.approx(float(a.norm() * b.norm()), rel=1e-5)
    wt = nn.ConvTranspose2d(4, 6, 3).weight  # (in=4, out=6, 3, 3): dim 1 is the output
    ref = torch.linalg.svdvals(wt.detach().transpose(0, 1).flatten(1))[0]
    assert float(lk.spectral_norm(wt.detach(), dim=1)) == pytest.approx(float(ref), rel=1e-5)


def test_spectral_norm_zero_weight_and_gradient():
    assert float(lk.spectral_norm(torch.zeros(3, 4), n_iter=3)) == 0.0
    w = torch.randn(4, 5, requires_grad=True)
    lk.spectral_norm(w, n_iter=50).backward()
    u, s, vh = torch.linalg.svd(w.detach())
    assert torch.allclose(w.grad, torch.outer(u[:, 0], vh[0]).abs() * torch.sign(w.grad), atol=1e-4)


def test_gram_iteration_is_monotone_certified_bound():
    torch.manual_seed(2)
    mats = torch.randn(5, 20, 30, dtype=torch.float64)
    exact = torch.linalg.matrix_norm(mats, 2)
    for t in range(1, 8):
        bound = gram_iteration_bound(mats, n_iter=t)
        assert (bound >= exact * (1 - 1e-12)).all()
        assert (bound <= exact * 30 ** (1 / 2 ** (t + 1)) * (1 + 1e-12)).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("shape", [(7, 20, 30), (7, 30, 20), (9, 6, 6)])
def test_max_top_singular_value_is_the_exact_max_from_above(shape, dtype):
    torch.manual_seed(0)
    mats = torch.randn(*shape, dtype=dtype)
    mats[3] = 0  # a zero matrix and a rank-1 one change nothing
    mats[4] = mats[4, :, :1] @ mats[4, :1, :]
    exact = float(torch.linalg.matrix_norm(mats, 2).max())
    bound = max_top_singular_value(mats)
    assert exact <= bound <= exact * (1 + certify_margin(min(shape[-2:]), max(shape[-2:])))


def test_max_top_singular_value_finds_a_max_hidden_behind_larger_frobenius_norms():
    # six near-identities have the largest Frobenius norms (the candidates tried first) but
    # sigma 1; the spiky matrix has a small Frobenius norm and the largest sigma: only the
    # Cholesky test can find it
    mats = torch.eye(8, dtype=torch.float64).repeat(7, 1, 1)
    mats[6] = 0
    mats[6, 0, 0] = 1.5
    assert max_top_singular_value(mats) == pytest.approx(1.5, rel=certify_margin(8, 8))
    assert max_top_singular_value(torch.zeros(3, 4, 5)) == 0.0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: lk.spectral_norm(torch.randn(5)), "at least 2 dims"),
        (lambda: lk.spectral_norm(torch.tensor([[1.0, float("nan")]])), "NaN"),
        (lambda: lk.spectral_norm(torch.randn(3, 3), n_iter=0), "n_iter"),
        (lambda: lk.operator_norm(nn.Conv2d(4, 6, 3), (3, 8, 8)), "C=4"),
        (lambda: lk.operator_norm(nn.Conv2d(4, 6, 3), (4, 8)), "does not fit"),
        (lambda: lk.operator_norm(nn.Conv2d(4, 6, 5), (4, 2, 2)), "does not fit"),
        (lambda: lk.operator_norm(nn.Linear(3, 2), (4,)), "does not fit"),
        (lambda: lk.operator_norm(nn.Linear(3, 2), (3,), "svd"), "not one of"),
        (lambda: lk.operator_norm(nn.LSTM(3, 2), (3,)), "does not support LSTM"),
        (lambda: lk.operator_norm(nn.Conv2d(64, 64, 3, padding=1), (64, 64, 64)), "method='gram'"),
    ],
)
def test_clear_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_nonfinite_layer_weight_is_named():
    conv = nn.Conv2d(2, 2, 3)
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = math.inf
    with pytest.raises(ValueError, match="Conv2d.weight"):
        lk.operator_norm(conv, (2, 5, 5), "gram")


@pytest.mark.parametrize("layer,method", [
    (nn.Conv2d(2, 3, 3, padding=1), "gram"),
    (nn.Conv2d(2, 3, 3, padding=1), "exact"),  # zero padding: symbol, then the dense operator
    (nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), "exact"),
    (nn.Conv2d(2, 3, 3), "power"),
    (nn.Linear(6 * 6 * 2, 4), "exact"),
    (nn.Flatten(), "exact"),
])
def test_operator_norm_checks_the_input_shape_once(monkeypatch, layer, method) -> None:
    """One public call, one check of its input shape (the helpers trust it), and a bad shape
    is a one-line error naming the value."""
    import lipkit.norms.conv_symbol as symbols
    import lipkit.norms.measure as measure
    import lipkit.norms.operators as operators

    calls = []
    original = operators.check_input_shape

    def counting(layer, shape):
        calls.append(shape)
        return original(layer, shape)

    for module in (measure, operators, symbols):
        monkeypatch.setattr(module, "check_input_shape", counting)
    shape = (6 * 6 * 2,) if isinstance(layer, nn.Linear) else (2, 6, 6)
    assert lk.operator_norm(layer, shape, method) > 0
    assert calls == [shape]
    for bad in ((2, 0, 6), (2, 6.5, 6), "2,6,6", ()):
        with pytest.raises(ValueError, match="input_shape="):
            lk.operator_norm(layer, bad, method)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(40, 70), (70, 40), (128, 128), (1, 9), (9, 1)])
@pytest.mark.parametrize("scale", [1.0, 1e-30, 1e30])
def test_exact_top_pair_gives_the_top_singular_value(dtype, shape, scale):
    """u^T W v of the pair against svdvals (float64), with the top two singular values 1e-3
    apart (the eigenvector is then hardest to resolve), at tiny and huge scales (a float32
    Gram of 1e30 entries overflows unless the matrix is scaled first)."""
    from lipkit.norms.linalg import exact_top_pair

    g = torch.Generator().manual_seed(sum(shape))
    q1 = torch.linalg.qr(torch.randn(shape[0], shape[0], generator=g, dtype=torch.float64)).Q
    q2 = torch.linalg.qr(torch.randn(shape[1], shape[1], generator=g, dtype=torch.float64)).Q
    k = min(shape)
    values = torch.linspace(1.0, 0.1, k, dtype=torch.float64)
    if k > 1:
        values[1] = 1.0 - 1e-3
    w64 = (q1[:, :k] * values) @ q2[:, :k].T
    w = (w64 * scale).to(dtype)
    u, v = exact_top_pair(w)
    assert u.dtype == v.dtype == dtype and u.shape == (shape[0],) and v.shape == (shape[1],)
    assert float(u.norm()) == pytest.approx(1, rel=1e-5) and float(v.norm()) == pytest.approx(1, rel=1e-5)
    sigma = float(u.double() @ w.double() @ v.double())
    ref = float(torch.linalg.svdvals(w.double())[0])
    assert sigma == pytest.approx(ref, rel=1e-6 if dtype == torch.float32 else 1e-12)


def test_exact_top_pair_of_a_zero_matrix_is_a_unit_pair():
    from lipkit.norms.linalg import exact_top_pair

    for dtype, shape in itertools.product((torch.float32, torch.float64), ((3, 5), (1, 5), (5, 1), (1, 1))):
        u, v = exact_top_pair(torch.zeros(*shape, dtype=dtype))
        assert u.shape == shape[:1] and v.shape == shape[1:]
        assert torch.isfinite(u).all() and torch.isfinite(v).all()
        assert float(u.norm()) == pytest.approx(1) and float(v.norm()) == pytest.approx(1)


@pytest.mark.parametrize("kernel_shape, stride, sizes", [
    ((4, 3, 3, 3), (1, 1), (10, 10)),
    ((4, 3, 7, 7), (2, 2), (20, 21)),  # polyphase
    ((2, 2, 5), (1,), (6,)),  # 1-D
    ((2, 2, 3, 3, 3), (1, 1, 1), (4, 5, 6)),  # 3-D, odd and even sizes
    ((2, 2, 9, 9), (1, 1), (4, 4)),  # a kernel folded onto a smaller domain
])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_circular_symbol_by_direct_dft_equals_rfftn(kernel_shape, stride, sizes, dtype, monkeypatch):
    from lipkit.norms import conv_symbol as cs

    torch.manual_seed(0)
    kernel = torch.randn(*kernel_shape, dtype=dtype)
    monkeypatch.setattr(cs, "use_direct_dft", lambda taps, blocks: True)
    direct = cs.circular_symbol(kernel, stride, sizes)
    monkeypatch.setattr(cs, "use_direct_dft", lambda taps, blocks: False)
    by_fft = cs.circular_symbol(kernel, stride, sizes)
    assert direct.shape == by_fft.shape and direct.dtype == by_fft.dtype
    assert torch.allclose(direct, by_fft, atol=1e-12 if dtype == torch.float64 else 1e-4)
