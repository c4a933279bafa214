"""Norms and refreshes at full float32 precision whatever torch's reduced-precision switches say
(lipkit/norms/full_precision.py): TF32 / bf16 convs and matmuls made the conv-SN refresh wrong by
factors. No GPU here, so the switches are read where the work happens: inside the refresh's
convs and matmuls they must say IEEE; in the user's own forward they keep the user's value."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import lipkit as lk
from lipkit.constraints import spectral_batch
from lipkit.norms import full_precision as precision
from lipkit.norms import operators
from lipkit.norms.full_precision import full_precision

pytestmark = pytest.mark.skipif(not precision.NEW_API, reason="torch < 2.9 has no fp32_precision switches")
BACKENDS = torch.backends
SWITCHES = {"cuda.matmul": BACKENDS.cuda.matmul, "cudnn.conv": BACKENDS.cudnn.conv,
            "mkldnn.matmul": BACKENDS.mkldnn.matmul, "mkldnn.conv": BACKENDS.mkldnn.conv,
            "mkldnn": BACKENDS.mkldnn, "root": BACKENDS}


@pytest.fixture
def lowered():
    """Every reduced-precision switch of both devices on (TF32), restored after the test."""
    saved = {name: obj.fp32_precision for name, obj in SWITCHES.items()}
    for name in ("cuda.matmul", "cudnn.conv", "mkldnn.matmul", "mkldnn.conv"):
        SWITCHES[name].fp32_precision = "tf32"
    yield
    for name, obj in SWITCHES.items():
        obj.fp32_precision = saved[name]


def now() -> dict[str, str]:
    return {name: SWITCHES[name].fp32_precision for name in ("cuda.matmul", "cudnn.conv", "mkldnn.matmul", "mkldnn.conv")}


def test_full_precision_switches_the_device_s_settings_and_restores_them(lowered):
    with full_precision("cuda"):
        assert now() == {"cuda.matmul": "ieee", "cudnn.conv": "ieee", "mkldnn.matmul": "tf32", "mkldnn.conv": "tf32"}
    with full_precision("cpu"):
        assert now() == {"cuda.matmul": "tf32", "cudnn.conv": "tf32", "mkldnn.matmul": "ieee", "mkldnn.conv": "ieee"}
    assert set(now().values()) == {"tf32"}


def test_a_setting_inherited_from_a_parent_is_switched_too(lowered):
    BACKENDS.mkldnn.matmul.fp32_precision = BACKENDS.mkldnn.conv.fp32_precision = "none"
    BACKENDS.mkldnn.fp32_precision = "bf16"  # the leaves inherit it
    before = now()
    with full_precision("cpu"):
        assert now()["mkldnn.matmul"] == now()["mkldnn.conv"] == "ieee"
    assert now() == before and BACKENDS.mkldnn.fp32_precision == "bf16"


def test_the_legacy_switches_of_older_torch(monkeypatch):
    monkeypatch.setattr(precision, "NEW_API", False)
    saved = BACKENDS.cudnn.allow_tf32
    try:
        BACKENDS.cudnn.allow_tf32 = True
        with full_precision("cuda"):
            assert BACKENDS.cudnn.allow_tf32 is False
        assert BACKENDS.cudnn.allow_tf32 is True
    finally:
        BACKENDS.cudnn.allow_tf32 = saved


def test_refreshes_run_at_full_precision_and_the_model_at_the_user_s(lowered, monkeypatch):
    from lipkit.constraints import aol, spectral
    from lipkit.constraints import conv as conv_sn
    seen: dict[str, set[str]] = {}

    def recorder(name, fn, switch=BACKENDS.mkldnn.matmul):
        def record(*args, **kwargs):
            seen.setdefault(name, set()).add(switch.fp32_precision)
            return fn(*args, **kwargs)
        return record
    geometry_forward = operators.ConvGeometry.forward

    def recording_forward(self, x, weight):
        if x.device.type != "meta":  # (a shape query computes nothing)
            seen.setdefault("conv refresh", set()).add(BACKENDS.mkldnn.conv.fp32_precision)
        return geometry_forward(self, x, weight)
    monkeypatch.setattr(operators.ConvGeometry, "forward", recording_forward)
    monkeypatch.setattr(spectral_batch, "exact_top_pairs", recorder("batched eigh", spectral_batch.exact_top_pairs))
    monkeypatch.setattr(spectral, "exact_top_pair", recorder("one layer's eigh", spectral.exact_top_pair))
    for cls, method, name in ((spectral.SpectralNormalization, "_gram_bound", "certified reshape"),
                              (conv_sn.ConvSpectralNormalization, "_gram_bound", "certified conv"),
                              (aol.AOLRescaling, "constrained", "aol")):
        monkeypatch.setattr(cls, method, recorder(name, getattr(cls, method)))
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, 1, 1)
    conv.register_forward_hook(lambda *_: seen.setdefault("model conv", set()).add(BACKENDS.mkldnn.conv.fp32_precision))
    critic = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(4, 4, 3, 2, 1), nn.Flatten(), nn.Linear(64, 3), nn.Linear(3, 1))
    lk.constrain(critic, "spectral", where=nn.Linear)  # two reshape-SN layers: refreshed in one batch
    lk.constrain(critic, "spectral", where=nn.Conv2d, operator="conv")
    others = nn.Sequential(nn.Linear(5, 4), nn.Conv2d(1, 2, 3), nn.Linear(4, 3), nn.Conv2d(2, 2, 3))
    lk.constrain(others[0], "spectral")  # alone: its own refresh
    lk.constrain(others[1], "spectral", operator="conv", certified=True, input_shape=(1, 6, 6))
    lk.constrain(others[2], "spectral", certified=True)
    lk.constrain(others[3], "aol")
    params = [*critic.parameters(), *others.parameters()]
    opt = torch.optim.SGD(params, lr=0.1)
    for _ in range(2):  # the warm-up at the first forward, then an update's refreshes
        loss = critic(torch.randn(4, 2, 8, 8)).mean() + others[0](torch.randn(2, 5)).sum()
        loss = loss + others[2](others[0](torch.randn(2, 5))).sum() + others[3](others[1](torch.randn(2, 1, 6, 6))).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert seen == {"conv refresh": {"ieee"}, "batched eigh": {"ieee"}, "one layer's eigh": {"ieee"}, "certified reshape":
                    {"ieee"}, "certified conv": {"ieee"}, "aol": {"ieee"}, "model conv": {"tf32"}}
    assert set(now().values()) == {"tf32"}


def test_public_norms_and_bounds_run_at_full_precision(lowered, monkeypatch):
    from lipkit.bounds import layer_rules
    from lipkit.norms import measure
    seen, calling = {}, [""]

    def recorder(fn):
        def record(*args, **kwargs):
            seen.setdefault(calling[0], set()).add((BACKENDS.mkldnn.matmul.fp32_precision, BACKENDS.mkldnn.conv.fp32_precision))
            return fn(*args, **kwargs)
        return record
    # each recorder sits inside the public function it checks, outside any other guarded call
    monkeypatch.setattr(measure, "power_iteration", recorder(measure.power_iteration))
    monkeypatch.setattr(layer_rules, "conv_gram_norm", recorder(layer_rules.conv_gram_norm))

    class RecordingReLU(nn.ReLU):
        def forward(self, x):
            return recorder(super().forward)(x)
    # (an overridden forward inherits no rule: lipschitz_bound needs one said for it)
    lk.register_layer_bound(RecordingReLU)(lambda layer, shape, method: lk.LayerRule(1.0, "relu"))
    conv = nn.Conv2d(2, 3, 3, 1, 1)
    model = nn.Sequential(conv, RecordingReLU(), nn.Conv2d(3, 1, 3))
    for name, call in [("spectral_norm", lambda: lk.spectral_norm(conv.weight, n_iter=3)),
                       ("operator_norm", lambda: lk.operator_norm(conv, (2, 8, 8), "power", n_iter=3)),
                       ("lipschitz_bound", lambda: lk.lipschitz_bound(model.eval(), (2, 8, 8))),
                       ("lipschitz_lower_bound", lambda: lk.lipschitz_lower_bound(model, torch.randn(2, 2, 8, 8), steps=2))]:
        calling[0] = name
        call()
    assert seen == {name: {("ieee", "ieee")} for name in
                    ("spectral_norm", "operator_norm", "lipschitz_bound", "lipschitz_lower_bound")}
    assert set(now().values()) == {"tf32"}
