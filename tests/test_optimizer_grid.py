"""Claim (b)'s optimizer grid (SN-GAN Table 1 settings A-F): the settings reach the training
code unchanged (config.json and the optimizers' own state), a diverged run is a result, and
the verdict rule decides each outcome on synthetic curves."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lipkit.experiments import convergence, grid_rule
from lipkit.experiments import optimizer_grid as og
from lipkit.experiments.common import Context
from lipkit.experiments.reproduce import parse_panels
from lipkit.train.checkpoint import load_latest
from lipkit.train.run import NonFiniteLossError

TINY = dict(steps=2, width=4, eval_every=2, eval_samples=20, image_metrics=False, seeds=(0,))


def test_the_settings_are_sn_gans_table_1():
    assert og.OPTIMIZER_SETTINGS["A"] == dict(lr=1e-4, betas=(0.5, 0.9), n_critic=5)
    assert [s["n_critic"] for s in og.OPTIMIZER_SETTINGS.values()] == [5, 1, 1, 5, 5, 5]
    assert [s["lr"] for s in og.OPTIMIZER_SETTINGS.values()] == [1e-4, 1e-4, 2e-4, 1e-3, 1e-3, 1e-3]
    assert og.OPTIMIZER_SETTINGS["F"]["betas"] == (0.9, 0.999)
    assert {r["critic"] for r in og.ROWS.values()} >= {"sn", "sn-conv", "gp", "gp1", "clip", "lipnet"}
    assert og.ROWS["sn-hinge"] == dict(critic="sn", loss="hinge")
    for size in convergence.SETTINGS["full"]["grid"].values():
        assert len(size["seeds"]) >= 3


def test_grid_settings_reach_the_training_code(tmp_path):
    ctx = Context(out=tmp_path, profile="full", progress=False)
    runs = [r for r in og.grid_runs(ctx, "digits", TINY) if r.row == "sn" or (r.setting == "D" and r.row in
                                                                               ("clip", "sn-hinge"))]
    assert len(runs) == 8
    for run in runs:
        og.train_grid_run(run.config)
        want = og.OPTIMIZER_SETTINGS[run.setting]
        saved = json.loads((Path(run.config.out) / "config.json").read_text())
        assert (saved["lr"], saved["g_lr"], tuple(saved["betas"]), saved["n_critic"]) == (
            want["lr"], want["lr"], want["betas"], want["n_critic"]), run
        assert (saved["optimizer"], saved["warmup_n_critic"], saved["critic"], saved["loss"]) == (
            "adam", 0, og.ROWS[run.row]["critic"], og.ROWS[run.row]["loss"])
        task = load_latest(Path(run.config.out))[0]["task"]
        for name, updates in (("opt_critic", TINY["steps"] * want["n_critic"]), ("opt_generator", TINY["steps"])):
            group = task[name]["param_groups"][0]
            assert group["lr"] == want["lr"] and tuple(group["betas"]) == want["betas"]
            steps = {int(s["step"]) for s in task[name]["state"].values()}
            assert steps == {updates}, (run, name)  # n_dis critic updates per generator step, warm-up off


def test_a_diverged_run_is_recorded_once_and_counts_as_infinitely_bad(tmp_path, monkeypatch):
    ctx = Context(out=tmp_path, profile="full", progress=False)
    config = og.grid_runs(ctx, "digits", TINY)[0].config
    calls = []

    def diverge(c):
        calls.append(c)
        Path(c.out).mkdir(parents=True)
        (Path(c.out) / "metrics.jsonl").write_text(json.dumps({"step": 1, "wall_seconds": 0.5, "fid": 80.0}) + "\n")
        raise NonFiniteLossError("non-finite loss_critic=nan at step 2")

    monkeypatch.setattr("lipkit.train.reuse.train_or_reuse", diverge)
    assert og.train_grid_run(config) is None and og.train_grid_run(config) is None
    assert len(calls) == 1  # the rerun reads the marker instead of training again
    assert "step 2" in og.diverged_at(config)
    points = og.run_points(config, "fid")
    assert points == [(1, 0.5, 80.0), (2, 0.5, math.inf)]
    assert grid_rule.final_quality(points) == math.inf
    changed = og.grid_runs(ctx, "digits", {**TINY, "width": 8})[0].config
    assert og.diverged_at(changed) is None  # a marker holds only for the config that diverged


def _runs(per_method: dict[str, list[list[float]]], every: int = 10) -> dict[str, list]:
    return {m: [[(every * (i + 1), float(i + 1), v) for i, v in enumerate(seed)] for seed in seeds]
            for m, seeds in per_method.items()}


GOOD = [[50, 20, 10, 10, 10]] * 3  # reaches 12.5 at step 30, ends at 10
SLOW = [[50, 40, 30, 20, 20]] * 3


def test_setting_rule_supported_not_supported_mixed():
    s = grid_rule.summarize_setting(_runs({"sn": GOOD, "gp": SLOW, "clip": SLOW}))
    assert s["threshold"] == pytest.approx(grid_rule.THRESHOLD_SLACK * 10)
    assert s["steps_to_threshold"] == {"sn": 30, "gp": math.inf, "clip": math.inf}
    assert grid_rule.decide_setting(s)[0] == "supported"
    assert grid_rule.decide_setting(grid_rule.summarize_setting(_runs({"sn": SLOW, "gp": GOOD})))[0] == "not supported"
    late_but_better = [[50, 40, 30, 9, 9, 9]] * 3  # ends best, reaches the threshold after gp
    assert grid_rule.decide_setting(grid_rule.summarize_setting(
        _runs({"sn": late_but_better, "gp": [[50, 20, 10, 10, 10, 10]] * 3})))[0] == "mixed"


def test_median_over_seeds_and_divergence():
    one_bad_seed = [[50, 20, 10, 10, 10], [50, 20, 10, 10, 10], [50, 90, math.inf]]
    s = grid_rule.summarize_setting(_runs({"sn": one_bad_seed, "gp": SLOW}))
    assert s["final"]["sn"] == 10 and s["final_max"]["sn"] == math.inf and s["diverged"] == {"sn": 1, "gp": 0}
    assert grid_rule.decide_setting(s)[0] == "supported"  # one diverged seed of three does not decide
    gp_diverges = [[50, 90, math.inf]] * 2 + [[50, 20, 10, 10, 10]]
    s = grid_rule.summarize_setting(_runs({"sn": SLOW, "gp": gp_diverges}))
    assert s["final"]["gp"] == math.inf and grid_rule.decide_setting(s)[0] == "supported"
    all_diverge = grid_rule.summarize_setting(_runs({"sn": [[math.inf]] * 3, "gp": [[math.inf]] * 3}))
    assert math.isnan(all_diverge["threshold"]) and grid_rule.decide_setting(all_diverge)[0] == "not supported"


def test_grid_verdict_is_a_majority_of_settings():
    support = grid_rule.summarize_setting(_runs({"sn": GOOD, "gp": SLOW}))
    refute = grid_rule.summarize_setting(_runs({"sn": SLOW, "gp": GOOD}))
    assert grid_rule.decide_grid(dict(zip("ABCDEF", [support] * 4 + [refute] * 2)))[0] == "supported"
    assert grid_rule.decide_grid(dict(zip("ABCDEF", [refute] * 4 + [support] * 2)))[0] == "not supported"
    verdict, said = grid_rule.decide_grid(dict(zip("ABCDEF", [refute] * 3 + [support] * 3)))
    assert verdict == "mixed" and said.startswith("3 of 6 settings support, 3 refute")


def test_data_option_names_claim_b_panels():
    assert parse_panels("digits", ["b"], "full") == ("digits",)
    assert parse_panels(None, ["a"], "full") is None
    with pytest.raises(ValueError, match="digitz.*gaussians25, digits, fashion-mnist"):
        parse_panels("digitz", ["b"], "full")
    with pytest.raises(ValueError, match="include b in --claims"):
        parse_panels("digits", ["a"], "full")


def test_expected_time_counts_every_run(tmp_path):
    ctx = Context(out=tmp_path, profile="full")
    said = og.grid_expected_time(ctx, "digits", {**TINY, "seeds": (0, 1, 2), "steps": 400}, workers=2)
    assert said.startswith(f"digits grid: {6 * len(og.ROWS) * 3} runs of 400 steps, about ")
    assert "no time measured" in og.grid_expected_time(ctx, "rings", TINY, workers=1)
