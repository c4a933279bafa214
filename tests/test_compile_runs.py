"""--compile on train-gan / train-clf (issue 12, item 2): a compiled run logs the eager run's
losses (the oracle: the same config without --compile), and what cannot compile is refused
in one line before training (a gradient penalty; a torch that cannot compile here)."""
from __future__ import annotations

import pytest
import torch
from small_runs import metric_rows, tiny_gan
from torch._dynamo.utils import counters

from lipkit.train import compiling
from lipkit.train.classify import fit as fit_clf
from lipkit.train.clf_config import ClfConfig
from lipkit.train.gan import fit as fit_gan

TRAINED = ("loss_critic", "loss_generator", "w1_critic")


@pytest.fixture
def aot_eager(monkeypatch):
    """nn.Module.compile with the aot_eager backend: the runs' compile path (dynamo + AOTAutograd)
    without inductor's C++ build, tens of seconds per cold graph in CI (tests/test_compile.py
    runs one critic through inductor end to end)."""
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_module(self, backend="aot_eager"))


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
