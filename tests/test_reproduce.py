"""lipkit reproduce: claim parsing, the verdict rules of claims (a) and (b) on crafted numbers,
the report writer, and (slow) the whole --quick run, checked against the files it trained."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest

from lipkit.cli import main
from lipkit.experiments import convergence, generalization
from lipkit.experiments.common import VERDICTS, ClaimResult, Figure
from lipkit.experiments.report import write_report
from lipkit.experiments.reproduce import CLAIMS, parse_claims


def test_parse_claims_orders_and_rejects():
    assert parse_claims("trap,a") == ["a", "trap"]
    assert parse_claims(["b"]) == ["b"]
    with pytest.raises(ValueError, match="unknown claim.*'e'.*choose from a, b, c, d, trap"):
        parse_claims("a,e")


def test_cli_rejects_unknown_claim(capsys, tmp_path):
    assert main(["reproduce", "--claims", "x", "--out", str(tmp_path)]) == 2
    assert "--claims" in capsys.readouterr().err
    assert not (tmp_path / "REPORT.md").exists()


def _row(test_acc, test_std, gap, gap_std):
    return {"test_acc": test_acc, "test_acc_std": test_std, "gap_acc": gap, "gap_acc_std": gap_std}


@pytest.mark.parametrize("snr, l2, expected", [
    (_row(0.90, 0.01, 0.05, 0.01), _row(0.85, 0.01, 0.06, 0.01), "supported"),  # +5 points, SE 0.0045
    (_row(0.85, 0.01, 0.06, 0.01), _row(0.85, 0.01, 0.06, 0.01), "not supported"),  # identical
    (_row(0.80, 0.01, 0.06, 0.01), _row(0.85, 0.01, 0.06, 0.01), "not supported"),  # worse
    (_row(0.85, 0.01, 0.02, 0.01), _row(0.85, 0.01, 0.08, 0.01), "mixed"),  # smaller gap only
    (_row(0.90, 0.01, 0.15, 0.01), _row(0.85, 0.01, 0.05, 0.01), "mixed"),  # better acc, larger gap
])
def test_claim_a_rule(snr, l2, expected):
    verdict, said = generalization.decide({"snr": snr, "l2": l2}, n_seeds=5)
    assert verdict == expected
    assert "snr - l2" in said


def test_claim_a_rule_needs_more_than_noise():
    # +1 point of accuracy with 3 points of seed spread is within 2 SE: not supported.
    verdict, _ = generalization.decide({"snr": _row(0.86, 0.03, 0.05, 0.01), "l2": _row(0.85, 0.03, 0.05, 0.01)}, 3)
    assert verdict == "not supported"


def _curve(values, every=10):
    return [(every * (i + 1), float(i + 1), v) for i, v in enumerate(values)]


def test_claim_b_threshold_and_first_reach():
    curves = {"sn": _curve([5, 2, 1.0, 1.0, 1.0]), "gp": _curve([5, 4, 3, 2, 2]),
              "gp1": _curve([5, 5, 5, 5, 5]), "clip": _curve([9, 9, 9, 9, 9])}
    s = convergence.summarize(curves)
    assert s["final"]["sn"] == pytest.approx(1.0) and s["final"]["gp"] == pytest.approx(7 / 3)
    assert s["threshold"] == pytest.approx(convergence.THRESHOLD_SLACK * 1.0)
    assert s["steps_to_threshold"] == {"sn": 30, "gp": None, "gp1": None, "clip": None}
    assert convergence.decide_one(s)[0] == "supported"
    flipped = {"sn": curves["gp"], "gp": curves["sn"], "gp1": curves["gp1"], "clip": curves["clip"]}
    assert convergence.decide_one(convergence.summarize(flipped))[0] == "not supported"


def test_claim_b_mixed_when_data_sets_disagree():
    good = {"final": {"sn": 1.0, "gp": 2.0}, "threshold": 1.25, "steps_to_threshold": {"sn": 10, "gp": None}}
    bad = {"final": {"sn": 2.0, "gp": 1.0}, "threshold": 1.25, "steps_to_threshold": {"sn": None, "gp": 10}}
    good, bad = convergence.decide_one(good), convergence.decide_one(bad)
    assert convergence.decide({"toy": good, "images": good})[0] == "supported"
    assert convergence.decide({"toy": good, "images": bad})[0] == "mixed"
    assert convergence.decide({"toy": bad, "digits grid": bad})[0] == "not supported"


def test_report_lists_every_claim_error_and_figure(tmp_path):
    claim = ClaimResult(key="c", title="(c) GP is slower per step than SN.", verdict="mixed", rule="a rule",
                        decided_by="gp/sn = 1.3", numbers={"x": 1.0}, tables=["| a |\n|---|\n| 1 |\n"],
                        figures=[Figure("figures/c.png", "bars of cost")], settings={"width": 4})
    results = {"command": "lipkit reproduce --quick", "profile": "quick", "machine": "test", "started": "now",
               "seconds": 3.0, "claims": {"c": claim.to_json()},
               "errors": {"d": {"error": "RuntimeError: boom", "traceback": "Traceback ... boom"}}}
    text = write_report(tmp_path, results).read_text()
    assert "(c) GP is slower per step than SN." in text and "mixed" in text and "gp/sn = 1.3" in text
    assert "![c](figures/c.png)" in text and "*bars of cost*" in text
    assert "RuntimeError: boom" in text and "Traceback ... boom" in text
    assert "reused" not in text
    rerun = write_report(tmp_path, {**results, "runs_planned": 12, "runs_reused": 12}).read_text()
    assert "12 of the 12 planned training runs were already finished" in rerun  # not "trained in 0 s"
    with pytest.raises(ValueError, match="verdict must be one of"):
        ClaimResult(key="a", title="t", verdict="maybe", rule="r", decided_by="d", numbers={})


def test_a_claim_that_cannot_plan_or_a_failed_pool_loses_no_other_claim(tmp_path, monkeypatch, capsys):
    """Planning and the run pool sit outside the per-claim error boundary: a claim whose
    planned_jobs raises, or a pool that fails, is one printed line; every claim still runs
    (a planned job reaches the pool; the broken claim's own run() error is in the report)."""
    from types import SimpleNamespace

    from lipkit.experiments import reproduce as rep
    from lipkit.experiments.run_pool import Job

    def result(key):
        return ClaimResult(key=key, title=f"claim {key}", verdict="mixed", rule="r", decided_by="d", numbers={})

    def broken_run(ctx):
        raise RuntimeError("cannot run either")

    modules = {
        "a": SimpleNamespace(planned_jobs=lambda ctx: [Job("runs/x", 1.0, print, ())], run=lambda ctx: result("a")),
        "b": SimpleNamespace(planned_jobs=lambda ctx: 1 / 0, run=broken_run),
        "c": SimpleNamespace(run=lambda ctx: result("c")),
    }
    monkeypatch.setattr(rep, "claim_module", lambda key: modules[key])
    seen: list[list[str]] = []

    def failing_pool(jobs, workers):
        seen.append([j.label for j in jobs])
        raise OSError("no processes here")

    monkeypatch.setattr(rep, "run_jobs", failing_pool)
    results = rep.reproduce(tmp_path / "out", claims="a,b,c", workers=2)
    out = capsys.readouterr().out
    assert seen == [["runs/x"]]
    assert "claim b: its runs could not be planned (ZeroDivisionError" in out
    assert "run pool failed (OSError: no processes here); each claim trains its own runs" in out
    assert list(results["claims"]) == ["a", "c"] and "cannot run either" in results["errors"]["b"]["error"]


@pytest.mark.slow
def test_reproduce_quick_end_to_end(tmp_path):
    """The README's main job: every claim runs, every number comes from runs made now."""
    start = time.time()
    out = tmp_path / "rep"
    assert main(["reproduce", "--quick", "--out", str(out), "--no-progress"]) == 0
    check_report(out, start)


def check_report(out: Path, start: float) -> None:
    """What a --quick report in `out`, started at time `start`, must satisfy."""
    results = json.loads((out / "results.json").read_text())
    report = (out / "REPORT.md").read_text()
    assert not results["errors"]
    assert list(results["claims"]) == list(CLAIMS)
    for claim in results["claims"].values():
        assert claim["verdict"] in VERDICTS
        assert claim["title"] in report and claim["decided_by"] in report and claim["rule"] in report
        for fig in claim["figures"]:
            png = out / fig["path"]
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
            assert png.stat().st_mtime >= start and fig["caption"] in report
        for run in claim["runs"]:  # made by this command, in this folder: nothing cached
            files = [p for p in (out / run).rglob("*") if p.is_file()]
            assert files and all(p.stat().st_mtime >= start for p in files), run
            if (out / run / "config.json").is_file():  # a training run (claim c's folder holds timings)
                assert (out / run / "metrics.jsonl").read_text().strip(), run
    # (a): the table's means are the means of the runs' own summaries.
    rows = {r["reg"]: r for r in results["claims"]["a"]["numbers"]["table"]}
    for reg, row in rows.items():
        finals = [json.loads(p.read_text())["final"]["test_acc"] for p in (out / "runs/a" / reg).glob("*/summary.json")]
        assert len(finals) == len(generalization.SETTINGS["quick"]["seeds"])
        assert row["test_acc"] == pytest.approx(statistics.fmean(finals))
    # (b): final qualities recomputed from the metrics.jsonl files of the runs.
    per_data = results["claims"]["b"]["numbers"]["per_data"]
    for data, summary in per_data.items():
        metric = convergence.metric_of(data)
        folders = {m: sorted(str(p) for p in (out / "runs/b").glob(f"{data}-{m}-seed*")) for m in convergence.METHODS}
        again = convergence.summarize({m: convergence.curve(f, metric) for m, f in folders.items()})
        assert again["final"] == pytest.approx(summary["final"])
    # (c): ratios are to the plain step of the same run.
    assert "c" in results["claims"] and results["claims"]["c"]["numbers"]
