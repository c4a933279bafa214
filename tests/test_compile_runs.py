"""--compile on train-gan / train-clf (issue 12, item 2): a compiled run logs the eager run's
losses (the oracle: the same config without --compile), and what cannot compile is refused
in one line before training (a gradient penalty; a torch that cannot compile here)."""
from __future__ import annotations

import pytest
import torch
from small_runs import metric_rows, tiny_gan
from torch._dynamo.utils import counters

import lipkit as lk
from lipkit.constraints import spectral_batch
from lipkit.train import compiling
from lipkit.train.classify import fit as fit_clf
from lipkit.train.clf_config import ClfConfig
from lipkit.train.gan import fit as fit_gan

TRAINED = ("loss_critic", "loss_generator", "w1_critic")


@pytest.fixture
def aot_eager(monkeypatch):
    """The runs' compile path with the aot_eager backend (dynamo + AOTAutograd) without
    inductor's C++ build, tens of seconds per cold graph in CI (tests/test_compile.py runs one
    critic through inductor end to end)."""
    monkeypatch.setattr(compiling, "BACKEND", "aot_eager")


def count_calls_per_graph(monkeypatch, name: str) -> list[int]:
    """--compile's backend swapped for one that runs each dynamo graph as traced and appends,
    per graph, how many of its calls are to a function whose name contains `name`."""
    graphs: list[int] = []

    def backend(gm, example_inputs):
        graphs.append(sum(node.op == "call_function" and name in getattr(node.target, "__name__", "")
                          for node in gm.graph.nodes))
        return gm.forward

    monkeypatch.setattr(compiling, "BACKEND", backend)
    return graphs


def test_compile_models_puts_a_whole_sequential_in_one_graph(monkeypatch):
    """nn.Module.compile() compiles nothing of an nn.Sequential on torch 2.13 (its frames are on
    dynamo's skip list), so --compile ran eagerly; compile_models must capture every layer,
    in place: the same state_dict keys and the eager output."""
    graphs = count_calls_per_graph(monkeypatch, "linear")
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 1))
    x = torch.randn(5, 3)
    eager, keys = model(x), list(model.state_dict())
    compiling.compile_models(model)
    torch.testing.assert_close(model(x), eager)
    assert graphs == [3]  # one graph holding all three Linear layers
    assert list(model.state_dict()) == keys


def test_every_compiled_model_has_its_own_graph_budget(monkeypatch):
    """dynamo keeps graphs, and its recompile limit of 8, per code object: with one function
    shared by every model compiled in place, the 9th model of a process (or the 9th variant of
    a critic, a generator and their eval / no_grad calls together) ran eagerly. Twelve models
    compiled and called in train and eval mode (12 widths: no two can share a graph): each of
    the 24 variants gets its graph."""
    graphs = count_calls_per_graph(monkeypatch, "linear")
    torch._dynamo.reset()
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.Dropout(0.5), torch.nn.Linear(width, 1))
              for width in range(2, 14)]
    compiling.compile_models(*models)
    for model in models:
        model(torch.randn(2, 3))
        model.eval()
        model(torch.randn(2, 3))
    assert graphs == [2] * 24


def test_a_compiled_model_keeps_its_own_keywords(aot_eager):
    """The compiled call takes the SN layers to refresh as a positional-only first argument, so
    a model whose forward has a keyword of the same name still receives it."""

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)

        def forward(self, x, sn_refresh=1.0):
            return self.b(torch.relu(self.a(x))) * sn_refresh

    model = lk.constrain(Scaled(), "spectral")
    x = torch.randn(2, 3)
    eager = model(x, sn_refresh=3.0)
    compiling.compile_models(model)
    torch.testing.assert_close(model(x, sn_refresh=3.0), eager)


def graphs_compiled(fit, config) -> int:
    """Run fit(config); how many graphs dynamo compiled meanwhile beyond the one-line probe of
    the compiler (0: the models were not compiled, so equal losses would prove nothing)."""
    torch._dynamo.reset()
    counters.clear()
    fit(config)
    return max(counters["stats"]["unique_graphs"] - 1, 0)


def test_a_compiled_gan_run_logs_the_eager_losses(tmp_path, aot_eager):
    critic = "sn"  # (lipnet's maps compile too: tests/test_compile.py; each case here costs a cold compile)
    for compiled in (False, True):
        graphs = graphs_compiled(fit_gan, tiny_gan(tmp_path / str(compiled), critic, steps=6, compile=compiled))
        assert (graphs > 0) == compiled, graphs
    for eager, compiled in zip(metric_rows(tmp_path / "False"), metric_rows(tmp_path / "True"), strict=True):
        for key in TRAINED:
            assert compiled[key] == pytest.approx(eager[key], rel=1e-4, abs=1e-5), (critic, eager["step"], key)


def test_a_compiled_classifier_run_logs_the_eager_losses(tmp_path, aot_eager):
    def config(compiled: bool) -> ClfConfig:
        return ClfConfig(out=str(tmp_path / str(compiled)), data="digits", model="mlp", width=32, depth=1,
                         reg="sn", steps=6, batch_size=16, eval_every=0, log_every=1, robust_eval=False,
                         progress=False, train_size=200, val_size=50, test_size=50, compile=compiled)
    for compiled in (False, True):
        assert (graphs_compiled(fit_clf, config(compiled)) > 0) == compiled
    for eager, compiled in zip(metric_rows(tmp_path / "False"), metric_rows(tmp_path / "True"), strict=True):
        assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-4, abs=1e-5), eager["step"]


def test_what_cannot_compile_is_refused_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"--compile cannot train method 'sn\+gp': its penalty gp differentiates"):
        fit_gan(tiny_gan(tmp_path / "gp", "sn+gp", compile=True))
    assert not (tmp_path / "gp" / "metrics.jsonl").exists()

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nlong details")
    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(ValueError, match=r"--compile: torch .* cannot compile on cpu \(RuntimeError: no C\+\+ "
                                         r"compiler found\); run without --compile"):
        compiling.probe_compiler(torch.device("cpu"))


def test_bench_times_compiled_modes_beside_eager_ones(aot_eager):
    from lipkit.experiments.step_timing import COMPILED, measure

    with pytest.raises(ValueError, match=r"mode 'gp \[compiled\]': its penalty differentiates a gradient"):
        measure(1, [2], 1, 0, 1, ["none", "gp" + COMPILED])
    torch._dynamo.reset()
    counters.clear()
    result = measure(1, [2], 1, 1, 1, ["none", "sn" + COMPILED])
    assert set(result["per_batch"]["2"]) == {"none", "sn [compiled]"}
    assert counters["stats"]["unique_graphs"] > 0  # the compiled row really ran compiled


def train_sn(compiled: bool) -> tuple[torch.Tensor, torch.nn.Module]:
    """10 WGAN-style Adam steps of a 4-layer SN critic (each step then one more call, of the
    updated weights), checking after every step that each stored pair is current for its weight
    and that the exact ones normalize to 1 (svdvals)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16),
                                torch.nn.ReLU(), torch.nn.Linear(16, 130), torch.nn.ReLU(),
                                torch.nn.Linear(130, 130))  # 130x130: above EXACT_SIDE, a Krylov refresh
    lk.constrain(model, "spectral")
    if compiled:
        compiling.compile_models(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    real, fake = torch.randn(2, 8, 6, generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(10):
        loss = model(fake).mean() - model(real).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        model(real)  # a call after the step: the pairs of the new weights
        for layer in model[::2]:  # the stored pair, as the graph read it
            sn, raw = layer.parametrizations.weight[0], layer.parametrizations.weight.original
            assert not sn.weight_changed(raw)  # refreshed for this update, the big layer too
            if min(raw.shape) <= 128:  # exact pairs (the 130x130 one is a Krylov estimate, as eagerly)
                sigma = (sn.sigma_grad * raw.detach()).sum()  # (reading layer.weight would refresh)
                assert torch.linalg.svdvals(raw.detach() / sigma).max() == pytest.approx(1.0, abs=1e-5)
    return torch.stack(losses), model


def test_compiled_sn_refreshes_each_pair_once_per_update(monkeypatch):
    """--compile refreshes spectral normalization's pairs once per update, not at every read:
    the first call after an update runs a graph that starts by refreshing the exact pairs (the
    three layers with a side <= EXACT_SIDE in one batch: one eigh; the Krylov layer is
    refreshed eagerly before it), every other call a graph that reads the stored pairs (no
    eigh). Two graphs for 30 calls, the bound after every update (svdvals), the eager losses."""
    graphs = count_calls_per_graph(monkeypatch, "eigh")
    torch._dynamo.reset()
    eager, _ = train_sn(False)
    compiled, _ = train_sn(True)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    assert graphs == [0, 1]  # reads the stored pairs (registration computed them); refreshes the 3 exact ones


@pytest.mark.parametrize("options", [{}, {"soft": True, "bound": 0.5}], ids=["sn", "soft-bound"])
def test_compiled_sn_batch_in_every_weight_layout_under_autocast(aot_eager, options):
    """The in-graph batch (refresh_in_graph) on the layouts it turns or moves: a ConvTranspose
    (dim=1), a tall Linear (its matrix turned), a row Linear (a critic's last), under bf16
    autocast (the refresh runs in float32): after every update each pair is current and
    sigma = <u v^T, W> is the weight's top singular value (svdvals)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.ConvTranspose2d(3, 4, 3, 2, 1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 9 * 9, 3), torch.nn.ReLU(), torch.nn.Linear(3, 30),
                                torch.nn.ReLU(), torch.nn.Linear(30, 1))
    lk.constrain(model, "spectral", **options)
    compiling.compile_models(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(4):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(torch.randn(4, 3, 5, 5)).float().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(torch.randn(4, 3, 5, 5))  # the first call after the update refreshes in its graph
        for layer in (model[0], model[3], model[5], model[7]):
            sn, raw = layer.parametrizations.weight[0], layer.parametrizations.weight.original.detach()
            assert not sn.weight_changed(raw) and sn.sigma_grad.dtype == torch.float32
            sigma = float((sn.sigma_grad * raw).sum())
            top = float(torch.linalg.svdvals(raw.movedim(sn.dim, 0).flatten(1).double())[0])
            assert sigma == pytest.approx(top, rel=1e-5)


def test_a_compiled_sn_run_resumes_exactly(tmp_path, aot_eager):
    """A --compile sn run stopped at a checkpoint and resumed logs the uninterrupted compiled
    run's numbers: the pairs refreshed in the graph are the ones saved (current for the saved
    weights), so the resumed run refreshes exactly when the uninterrupted one did."""
    fit_gan(tiny_gan(tmp_path / "whole", "sn", steps=8, compile=True))
    fit_gan(tiny_gan(tmp_path / "split", "sn", steps=4, compile=True, checkpoint_every=4))
    fit_gan(tiny_gan(tmp_path / "split", "sn", steps=8, compile=True, checkpoint_every=4), resume=True)
    for a, b in zip(metric_rows(tmp_path / "whole"), metric_rows(tmp_path / "split"), strict=True):
        assert {k: a[k] for k in ("step", *TRAINED)} == {k: b[k] for k in ("step", *TRAINED)}


def test_compiled_sn_refreshes_outside_the_graph_at_reduced_precision(monkeypatch):
    """With float32 matmuls at reduced precision (TF32 / bf16), which a graph cannot switch off,
    --compile refreshes every pair eagerly at full precision before the call: one graph, no eigh."""
    graphs = count_calls_per_graph(monkeypatch, "eigh")
    monkeypatch.setattr(spectral_batch, "reduced_precision", lambda device_type: True)
    torch._dynamo.reset()
    train_sn(True)
    assert graphs == [0]


def test_a_copy_of_a_compiled_model_is_its_own_eager_model(aot_eager):
    """The compiled call belongs to the model it was made for: a deepcopy (the float64 copy of
    lk.lipschitz_lower_bound) runs its own eager forward, and torch.save of the whole model works."""
    import copy
    import io

    torch.manual_seed(0)
    model = lk.constrain(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)),
                         "spectral")
    compiling.compile_models(model)
    x = torch.randn(5, 3)
    out = model(x)
    twin = copy.deepcopy(model).double()
    assert twin._compiled_call_impl is None
    torch.testing.assert_close(twin(x.double()), out.double())  # float64 through its own eager forward
    assert lk.lipschitz_lower_bound(model.eval(), x, steps=2) > 0
    plain = torch.nn.Sequential(torch.nn.Linear(3, 1))  # (a parametrized model is saved by state_dict only)
    compiling.compile_models(plain)
    buffer = io.BytesIO()
    torch.save(plain, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=False)._compiled_call_impl is None
