"""WGAN training: every critic preset keeps its constraint, resume is exact, a truncated
checkpoint falls back to the previous one, a NaN never reaches a checkpoint, conditional
runs work, and the CLI writes a complete run folder. Tiny models: seconds per test."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import lipkit as lk
from lipkit.cli import main
from lipkit.constraints.base import raw_tensor
from lipkit.methods import method_names
from lipkit.train import GanConfig, GanTask, NonFiniteLossError, fit, gan, load_config, resolve_config
from lipkit.train import checkpoint as ckpt

LOSSES = ("loss_critic", "w1_critic", "penalty", "loss_generator")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # The digits classifier (FID features) is trained once per session, never in ~/.cache.
    monkeypatch.setenv("LIPKIT_CACHE", str(tmp_path_factory.getbasetemp() / "lipkit-cache"))


def tiny(out: Path, data: str = "gaussians8", critic: str = "gp", **kw) -> GanConfig:
    base = dict(out=str(out), data=data, critic=critic, steps=3, width=8, g_width=8, depth=2, batch_size=32,
                noise_dim=4, n_critic=2, warmup_n_critic=0, eval_every=0, eval_samples=200,
                lower_bound_steps=2, image_metrics=False, certify=False, progress=False)
    return GanConfig(**{**base, **kw})


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def losses(out: Path) -> list[tuple]:
    return [(r["step"], *(r[k] for k in LOSSES)) for r in rows(out)]


def check_constraint(task: GanTask) -> None:
    c, critic = task.config, task.critic
    layers = [m for m in critic.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if c.critic == "clip":
        for p in critic.parameters():  # biases included (WGAN clips ALL parameters)
            assert p.abs().max() <= c.clip_c + 1e-7
    elif c.critic == "frobenius":
        for layer in layers:
            assert torch.linalg.matrix_norm(layer.weight.flatten(1)) <= c.max_norm * (1 + 1e-5)
    elif c.critic in ("sn", "sn+gp", "sn-conv", "torch-sn", "torch-sn+gp"):
        critic.eval()  # read the constrained weights without advancing the power iteration
        for layer in layers:
            if c.critic == "sn-conv" and isinstance(layer, nn.Conv2d):
                shape = tuple(int(s) for s in layer.parametrizations.weight[0].input_shape)
                sigma = lk.operator_norm(layer, shape)  # the TRUE conv norm
            else:
                sigma = float(torch.linalg.svdvals(layer.weight.detach().flatten(1))[0])
            assert 0.9 <= sigma <= 1.05, (layer, sigma)
    elif c.critic == "sn-project":  # the raw weights themselves, normalized after every step
        for layer in layers:
            sigma = float(torch.linalg.svdvals(layer.weight.detach().flatten(1))[0])
            assert 1 - 1e-5 <= sigma <= 1 + 1e-3, (layer, sigma)


@pytest.mark.parametrize("data", ["gaussians8", "digits"])
@pytest.mark.parametrize("critic", method_names("critic"))
def test_every_preset_trains_and_keeps_its_constraint(tmp_path: Path, data: str, critic: str) -> None:
    task = GanTask(resolve_config(tiny(tmp_path, data, critic)))
    with torch.no_grad():  # every raw weight x3: three small steps alone would leave a missing
        for layer in task.critic.modules():  # constraint within check_constraint's tolerances
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                raw_tensor(layer, "weight").mul_(3.0)
    stats = [task.train_step(step) for step in (1, 2, 3)]
    assert all(math.isfinite(v) for s in stats for v in s.values())
    if critic in ("gp", "gp1", "sn+gp", "frobenius-penalty"):
        assert task.method.terms
    check_constraint(task)


def test_presets_carry_the_published_defaults() -> None:
    clip = resolve_config(GanConfig(data="digits", critic="clip"))
    assert (clip.optimizer, clip.lr, clip.clip_c, clip.n_critic, clip.warmup_n_critic) == ("rmsprop", 5e-5, 0.01, 5, 100)
    gp = resolve_config(GanConfig(data="digits", critic="gp"))
    assert (gp.lr, gp.betas, gp.gp_lambda, gp.n_critic, gp.batch_size) == (1e-4, (0.0, 0.9), 10.0, 5, 64)
    toy = resolve_config(GanConfig(data="gaussians8", critic="gp"))
    assert (toy.betas, toy.gp_lambda, toy.batch_size, toy.width) == ((0.5, 0.9), 0.1, 256, 512)
    sn = resolve_config(GanConfig(data="digits", critic="sn", lr=1e-3))
    assert (sn.lr, sn.g_lr, sn.betas) == (1e-3, 1e-3, (0.0, 0.9))  # overrides win
    with pytest.raises(ValueError, match="'wgan' is not a critic method"):
        resolve_config(GanConfig(critic="wgan"))
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got -1"):
        resolve_config(GanConfig(lr=-1.0))
    # lipnet critics keep AOL convs unless --lipnet-conv says otherwise; a bad kind is named
    assert resolve_config(GanConfig(data="digits", critic="lipnet")).lipnet_conv == "aol"
    assert resolve_config(GanConfig(data="digits", critic="lipnet", lipnet_conv="sn-conv")).lipnet_conv == "sn-conv"
    with pytest.raises(ValueError, match=r"lipnet_conv='orthogonal' is not allowed; choose one of"):
        resolve_config(GanConfig(critic="lipnet", lipnet_conv="orthogonal"))


@pytest.mark.parametrize("data,critic", [("gaussians8", "gp"), ("gaussians8", "sn"), ("digits", "sn-conv"),
                                         ("gaussians8", "sn-project")])
def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, data: str, critic: str) -> None:
    fit(tiny(tmp_path / "full", data, critic, steps=6, checkpoint_every=3))
    fit(tiny(tmp_path / "cut", data, critic, steps=3, checkpoint_every=3))
    fit(tiny(tmp_path / "cut", data, critic, steps=6, checkpoint_every=3), resume=True)
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    fit(tiny(tmp_path / "full", steps=6, checkpoint_every=2))
    out = tmp_path / "cut"
    fit(tiny(out, steps=4, checkpoint_every=2))
    newest = out / "ckpt-00000004.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a kill mid-copy
    with pytest.warns(RuntimeWarning, match=r"ckpt-00000004\.pt is unreadable \(truncated or corrupt"):
        summary = fit(tiny(out, steps=6, checkpoint_every=2), resume=True)
    assert summary["resumed_from"] == 2
    assert losses(out) == losses(tmp_path / "full")


def test_no_usable_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "ckpt-00000002.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="no usable checkpoint"), pytest.warns(RuntimeWarning):
        ckpt.load_latest(tmp_path)


def test_non_finite_loss_stops_without_touching_the_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real_score = gan.score

    def score(critic, x, labels):  # 3 calls per step (n_critic=1): NaN from step 4 on
        calls["n"] += 1
        out = real_score(critic, x, labels)
        return out * float("nan") if calls["n"] > 9 else out

    monkeypatch.setattr(gan, "score", score)
    with pytest.raises(NonFiniteLossError, match=r"at step 4: run stopped without saving; last good checkpoint: step 2"):
        fit(tiny(tmp_path, "gaussians8", "none", steps=6, n_critic=1, checkpoint_every=2))
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-00000002.pt"]
    state, _ = ckpt.load_latest(tmp_path)
    assert state["step"] == 2 and ckpt.first_non_finite(state["task"]) is None
    with pytest.raises(ckpt.CheckpointError, match="refusing to save checkpoint at step 9: w is not finite"):
        ckpt.save_checkpoint(tmp_path, 9, {"w": torch.tensor([1.0, float("inf")])})


def test_huge_learning_rate_is_caught(tmp_path: Path) -> None:
    # The first update already makes the weights inf: the checkpoint after it is refused.
    with pytest.raises(NonFiniteLossError, match=r"(non-finite .* at step|refusing to save checkpoint at step)"):
        fit(tiny(tmp_path, "gaussians8", "none", steps=50, lr=1e30, checkpoint_every=1))
    for path in ckpt.list_checkpoints(tmp_path):
        assert ckpt.first_non_finite(ckpt.load_checkpoint(path)["task"]) is None


def test_conditional_rings_with_ten_classes(tmp_path: Path) -> None:
    summary = fit(tiny(tmp_path, "rings", "sn", conditional=True, classes=10, eval_every=3))
    final = summary["final"]
    assert {"w1", "modes_covered", "hq_percent", "class_accuracy", "w1_class_mean", "critic_lower_bound"} <= set(final)
    assert 0 <= final["class_accuracy"] <= 1
    assert list(tmp_path.glob("samples-*.png"))


def test_conditional_digits_with_image_metrics(tmp_path: Path) -> None:
    summary = fit(tiny(tmp_path, "digits", "gp", conditional=True, image_metrics=True, eval_every=3))
    assert {"fid", "kid", "class_accuracy", "critic_lower_bound"} <= set(summary["final"])
    assert (tmp_path / "samples-00000003.png").is_file()


def test_cli_end_to_end_and_config_json_reproduces_the_run(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["train-gan", "--data", "gaussians8", "--critic", "sn", "--steps", "4", "--out", str(out),
            "--width", "8", "--g-width", "8", "--depth", "2", "--batch-size", "32", "--n-critic", "2",
            "--eval-samples", "200", "--eval-every", "2", "--lower-bound-steps", "2", "--no-progress"]
    assert main(args) == 0
    assert "done: 4 steps" in capsys.readouterr().out
    for name in ("config.json", "metrics.jsonl", "summary.json", "samples-00000004.png", "ckpt-00000004.pt"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finish"]["critic_certified_bound"] > 0
    config = load_config(GanConfig, out / "config.json")
    assert config == resolve_config(config)  # complete: nothing left to resolve
    again = tmp_path / "again"
    assert main(["train-gan", "--config", str(out / "config.json"), "--out", str(again)]) == 0
    assert losses(again) == losses(out)
    assert main(["train-gan", "--out", str(out), "--resume", "--steps", "5"]) == 0
    assert [r["step"] for r in rows(out)] == [1, 2, 3, 4, 5]


def test_cli_errors_are_clear(tmp_path: Path, capsys) -> None:
    assert main(["train-gan", "--data", "nowhere", "--out", str(tmp_path)]) == 1
    assert "unknown data set 'nowhere'" in capsys.readouterr().err
    assert main(["train-gan", "--out", str(tmp_path / "empty"), "--resume"]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train-gan", "--critic", "wgan"])
