"""Claim (c)'s step-cost experiment: every mode's step is a real update, the SN modes
normalize what they claim (oracles: torch.linalg.svdvals and an autograd power iteration),
the rule's verdicts on crafted numbers, and the plumbing (measure, run, `lipkit bench`).
No timing is asserted: timings here are only checked to be positive."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lipkit.cli import main
from lipkit.experiments import step_cost, step_timing
from lipkit.experiments.common import Context
from lipkit.methods import method_names

WIDTH = 4  # tiny critic: 7 convs of 4..32 channels


def batches(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=gen), torch.randn(n, 3, 32, 32, generator=gen)


def built(mode: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A critic of `mode` after one step of `mode`."""
    real, fake = batches()
    critic_and_method = step_timing.build(mode, WIDTH, "cpu", real)
    step_timing.make_step(mode, critic_and_method, real, fake)()
    return critic_and_method[0], real, fake


def layers(critic: nn.Module) -> list[nn.Module]:
    return [m for m in critic.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("mode", method_names("critic"))
def test_every_mode_builds_and_one_step_changes_the_parameters(mode):
    real, fake = batches()
    critic_and_method = step_timing.build(mode, WIDTH, "cpu", real)
    critic = critic_and_method[0]
    before = [p.detach().clone() for p in critic.parameters()]
    step_timing.make_step(mode, critic_and_method, real, fake)()
    after = list(critic.parameters())
    assert len(before) == len(after) > 0
    assert any(not torch.equal(b, a) for b, a in zip(before, after)), f"{mode}: the step changed nothing"
    assert torch.isfinite(critic(real)).all()


@pytest.mark.parametrize("mode", ["torch-sn", "sn", "torch-sn+gp", "sn+gp"])
def test_reshape_sn_modes_have_unit_reshaped_sigma_after_a_step(mode):
    critic, _, _ = built(mode)
    for layer in layers(critic):
        weight = layer.weight.detach()  # the normalized weight (train mode: vectors refreshed)
        sigma = torch.linalg.svdvals(weight.reshape(weight.shape[0], -1))[0]
        assert sigma == pytest.approx(1.0, abs=0.02), f"{mode}: {layer} has reshaped sigma {sigma:.4f}"


def conv_operator_norm(layer: nn.Conv2d, shape: tuple[int, ...], iters: int = 100) -> float:
    """sigma of the bias-free conv map at input `shape`, by power iteration on J^T J through
    autograd (an oracle independent of lipkit; converges from below)."""
    weight = layer.weight.detach()
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    norm = 0.0
    for _ in range(iters):
        x = (x / x.norm()).requires_grad_(True)
        y = F.conv2d(x, weight.double(), stride=layer.stride, padding=layer.padding)
        (x,) = torch.autograd.grad(y, x, y)  # J^T J x
        norm = float(x.norm()) ** 0.5
    return norm


def test_sn_conv_mode_has_unit_operator_norm_after_a_step():
    critic, real, _ = built("sn-conv")
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(layer: nn.Module, args: tuple) -> None:  # returns None: the input is left as is
        shapes[layer] = tuple(args[0].shape[1:])

    hooks = [m.register_forward_pre_hook(record) for m in layers(critic) if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        critic(real[:1])
    for hook in hooks:
        hook.remove()
    for layer, shape in shapes.items():
        assert 0.98 <= conv_operator_norm(layer, shape) <= 1.01, layer  # reshape SN: up to 1.75 here


def test_measure_gives_plain_ratio_one_and_positive_times():
    result = step_timing.measure(WIDTH, [4], steps=1, warmup=0, repeats=1, modes=["none", "gp"], device="cpu")
    rows = result["per_batch"]["4"]
    assert rows["none"]["x_plain"] == 1.0
    assert all(r["seconds"] > 0 and r["x_plain"] > 0 and len(r["repeats_s"]) == 1 for r in rows.values())
    assert result["width"] == WIDTH and result["torch"] == torch.__version__
    assert json.loads(json.dumps(result)) == result  # JSON-able as is (string batch keys)
    assert "| gp |" in step_timing.format_tables(result)


def test_measure_rejects_bad_sizes():
    with pytest.raises(ValueError, match="unknown mode"):
        step_timing.measure(WIDTH, [4], 1, 0, 1, ["none", "nope"])
    with pytest.raises(ValueError, match="steps, repeats >= 1"):
        step_timing.measure(WIDTH, [4], 0, 0, 1, ["none"])
    with pytest.raises(ValueError, match="not a device"):
        step_timing.measure(WIDTH, [4], 1, 0, 1, ["none"], device="nonsense")


def costs(gp: float, lipkit_sn: float, torch_sn: float) -> dict[str, float]:
    return {"none": 1.0, "gp": gp, "sn": lipkit_sn, "torch-sn": torch_sn}


def test_decide_gives_each_verdict():
    verdict, why = step_cost.decide({"64": costs(2.2, 1.05, 1.1), "256": costs(2.6, 1.0, 1.3)})
    assert verdict == "supported"
    assert "GP/lipkit-SN 2.10x" in why and "GP/torch-SN 2.00x" in why and "B=256" in why
    assert step_cost.decide({"64": costs(2.0, 2.0, 3.0)})[0] == "not supported"
    # the H200 anchor's shape: GP slower than lipkit's SN, faster than torch's
    assert step_cost.decide({"64": costs(2.1, 1.2, 3.0)})[0] == "mixed"
    # true at one batch size, false at the other
    assert step_cost.decide({"64": costs(2.0, 2.5, 2.5), "256": costs(2.6, 1.0, 1.0)})[0] == "mixed"
    # slower, but by less than the 1.2x margin
    assert step_cost.decide({"64": costs(1.1, 1.0, 1.0)})[0] == "mixed"
    with pytest.raises(ValueError, match="needs the modes"):
        step_cost.decide({"64": {"none": 1.0, "gp": 2.0}})


def test_settings_follow_the_device():
    assert step_cost.settings_for("full", "cuda")["width"] == 64
    cpu = step_cost.settings_for("full", "cpu")
    assert cpu["width"] == 32 and "cpu" not in cpu and cpu["repeats"] == 3 and cpu["threads"] == 1
    assert step_cost.settings_for("quick", "cuda")["threads"] is None
    with pytest.raises(ValueError, match="profile"):
        step_cost.settings_for("huge", "cpu")


def test_measure_restores_the_thread_count():
    before = torch.get_num_threads()
    result = step_timing.measure(WIDTH, [2], steps=1, warmup=0, repeats=1, modes=["none"], threads=1)
    assert "(1 thread)" in result["device"] and torch.get_num_threads() == before


def test_run_writes_numbers_table_and_figure(tmp_path: Path, monkeypatch):
    tiny = {"width": WIDTH, "batches": [4], "steps": 1, "warmup": 0, "repeats": 1,
            "modes": ["none", "gp", "sn", "torch-sn"], "threads": None}
    monkeypatch.setitem(step_cost.SETTINGS, "quick", tiny)
    claim = step_cost.run(Context(tmp_path, "quick", progress=False))
    assert claim.key == "c" and claim.rule == step_cost.RULE
    assert claim.verdict == step_cost.decide({"4": {m: r["seconds"] for m, r in
                                                    claim.numbers["per_batch"]["4"].items()}})[0]
    assert (tmp_path / claim.figures[0].path).stat().st_size > 0
    assert "B=4 x plain" in claim.tables[0] and "| torch-sn |" in claim.tables[0]
    saved = json.loads((tmp_path / "runs" / "c" / "step_cost.json").read_text())
    assert saved["ratios"]["4"]["gp/plain"] == pytest.approx(claim.numbers["ratios"]["4"]["gp/plain"])
    json.dumps(claim.to_json())


def test_lipkit_bench_cli_runs(capsys, tmp_path):
    out = tmp_path / "b.json"
    args = ["bench", "--width", "4", "--batch", "4", "--steps", "1", "--repeats", "1", "--modes", "none", "gp"]
    assert main(args + ["--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| mode (B=4) | ms/step | x plain |" in printed and "| gp |" in printed
    assert set(json.loads(out.read_text())["ms"]) == {"B4_none", "B4_gp"}
    with pytest.raises(SystemExit) as usage:  # refused by the flag's type, before any timing
        main(["bench", "--width", "4", "--batch", "0", "--modes", "none"])
    assert usage.value.code == 2


def test_bench_and_claim_c_time_the_update_train_gan_runs(monkeypatch, tmp_path):
    """`lipkit bench`, claim (c) (both step_timing.measure) and train-gan's critic step all go
    through lipkit.train.gan.critic_update: replace it once and every one of them calls the
    replacement."""
    from lipkit.train import GanConfig, GanTask, gan, resolve_config

    calls: list[str] = []
    original = gan.critic_update

    def counting(critic, optimizer, method, *args, **kwargs):
        calls.append(method.name)
        return original(critic, optimizer, method, *args, **kwargs)

    monkeypatch.setattr(gan, "critic_update", counting)
    step_timing.measure(WIDTH, [2], steps=1, warmup=0, repeats=1, modes=["none", "sn+gp"])
    assert calls == ["none", "sn+gp"]
    calls.clear()
    task = GanTask(resolve_config(GanConfig(out=str(tmp_path), critic="sn+gp", data="gaussians8", width=8,
                                            batch_size=8, eval_samples=8, n_critic=2, progress=False)))
    task.train_step(1)
    assert calls == ["sn+gp", "sn+gp"]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_bench_precision_runs_each_step_as_train_gan_would(monkeypatch, capsys, precision):
    """--precision reaches critic_update as train-gan passes it (a Precision; fp32: none, the plain
    fp32 path), for every mode, the plain one included, and the printout names it."""
    from lipkit.train import gan

    seen: list[str | None] = []
    original = gan.critic_update

    def recording(*args, precision=None, **kwargs):
        seen.append(None if precision is None else precision.name)
        return original(*args, precision=precision, **kwargs)

    monkeypatch.setattr(gan, "critic_update", recording)
    args = ["bench", "--width", "4", "--batch", "4", "--steps", "1", "--warmup", "0", "--repeats", "1",
            "--modes", "none", "sn", "--device", "cpu", "--precision", precision]
    assert main(args) == 0
    assert seen == [None if precision == "fp32" else precision] * 2
    assert f"; {precision}; critic width 4" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        main(["bench", "--modes", "none", "--precision", "fp8"])
    assert usage.value.code == 2
