"""The verdict rule of claim (b)'s optimizer grid (optimizer_grid.py), from numbers alone.

Kept apart from the runs so that it can be read, and tested on synthetic curves, before any
run exists. Inputs: per setting, per method, one list of (step, seconds, quality) points per
seed; quality lower is better, infinity for a diverged run.
"""
from __future__ import annotations

import math
import statistics
from typing import Any

from .common import first_reach as common_first_reach
from .common import verdict_of

BETTER_MARGIN = 0.05  # 'better final quality': a median lower than the other's by more than this fraction
THRESHOLD_SLACK = 1.25  # a setting's threshold = this x the best median final quality in it
FINAL_EVALS = 3  # a run's final quality = mean of its last this many evaluations
RULE = (f"Per optimizer setting (SN-GAN's A-F): a run's final quality is the mean of its last {FINAL_EVALS} FID "
        "evaluations (lower is better; a diverged run counts as infinitely bad); a method's final quality is the "
        f"median over seeds; the setting's threshold is {THRESHOLD_SLACK:g} x the best method's; a method's steps "
        "to threshold are the median over seeds of the first evaluated step at or below it (never = infinity). "
        "The setting supports the claim when sn is both faster (fewer median steps to the threshold than gp) and "
        f"better (median final FID more than {BETTER_MARGIN:.0%} lower than gp's), refutes it when it is neither, "
        "and is mixed otherwise. The grid supports the claim when more than half of its settings do, refutes it "
        "when more than half refute it, and is mixed otherwise.")


Points = list[tuple[int, float, float]]  # (step, training seconds, quality) at each evaluation


def final_quality(points: Points) -> float:
    """Mean of the last FINAL_EVALS qualities (infinity if any is, or if there are none)."""
    tail = [v for _, _, v in points[-FINAL_EVALS:]]
    return sum(tail) / len(tail) if tail else math.inf


def first_reach(points: Points, threshold: float) -> tuple[float, float]:
    """common.first_reach with never = (inf, inf), so that medians over seeds can include it."""
    step, seconds = common_first_reach(points, threshold)
    return (math.inf, math.inf) if step is None else (float(step), seconds)


def summarize_setting(runs: dict[str, list[Points]]) -> dict[str, Any]:
    """Every number the rule reads for one setting; runs: {method: one Points per seed}."""
    finals = {m: [final_quality(p) for p in per_seed] for m, per_seed in runs.items()}
    final = {m: statistics.median(v) for m, v in finals.items()}
    best = min(final.values())
    threshold = THRESHOLD_SLACK * best if math.isfinite(best) else math.nan  # all diverged: nothing to reach
    reach = {m: [first_reach(p, threshold) for p in per_seed] for m, per_seed in runs.items()}
    return {"final": final, "final_min": {m: min(v) for m, v in finals.items()},
            "final_max": {m: max(v) for m, v in finals.items()}, "finals": finals, "threshold": threshold,
            "steps_to_threshold": {m: statistics.median(s for s, _ in r) for m, r in reach.items()},
            "seconds_to_threshold": {m: statistics.median(t for _, t in r) for m, r in reach.items()},
            "diverged": {m: sum(not math.isfinite(v) for v in f) for m, f in finals.items()}}


def decide_setting(summary: dict[str, Any]) -> tuple[str, str]:
    """One setting's verdict (RULE) and the numbers it read, in words."""
    steps, final = summary["steps_to_threshold"], summary["final"]
    faster = steps["sn"] < steps["gp"]
    better = final["sn"] < (1 - BETTER_MARGIN) * final["gp"]
    said = (f"final sn {word(final['sn'], 'diverged')} vs gp {word(final['gp'], 'diverged')}, steps sn "
            f"{word(steps['sn'], 'never')} vs gp {word(steps['gp'], 'never')}")
    return verdict_of(faster and better, not faster and not better), said


def decide_grid(per_setting: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """The grid's verdict from its settings' verdicts (RULE), and the numbers in words."""
    verdicts = {s: decide_setting(summary) for s, summary in per_setting.items()}
    count = {v: sum(1 for w, _ in verdicts.values() if w == v) for v in ("supported", "not supported")}
    half = len(verdicts) / 2
    refuted = count["not supported"] > half
    verdict = verdict_of(count["supported"] > half, refuted)
    said = "; ".join(f"{s}: {v} ({said})" for s, (v, said) in verdicts.items())
    return verdict, (f"{count['supported']} of {len(verdicts)} settings support, {count['not supported']} refute "
                     f"[{said}]")


def word(value: float, infinite: str) -> str:
    """A number of the rule for a report: 4 significant digits, `infinite` for infinity."""
    if math.isnan(value):
        return "-"
    return f"{value:.4g}" if math.isfinite(value) else infinite
