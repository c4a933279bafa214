"""Claim (b): WGAN with spectral normalization (no gradient penalty) reaches the same quality
in fewer epochs than WGAN-GP, and better final quality.

Two kinds of panel, each decided by a rule fixed before any run:
- a curve panel (quick: gaussians25 and digits; full: gaussians25): the critic presets sn, gp,
  gp1 and clip, each with its own published optimizer, the same seeds and budget; quality is
  W1 to held-out points on 2-D data, FID in lipkit's classifier feature space on images
  (lower is better), logged against generator steps and wall-clock seconds. Rule: RULE.
- an optimizer-grid panel (full: digits and Fashion-MNIST): SN-GAN's own protocol, every
  critic method under each of its settings A-F, 3 seeds (optimizer_grid.py; rule grid_rule.RULE).

Curve-panel numbers, fixed before any run:
- the curve of a method: its quality metric at each evaluation, averaged over seeds;
- its final quality: the mean of the last FINAL_EVALS evaluations of that curve (late-stage
  training, less noisy than the last point);
- the common threshold: THRESHOLD_SLACK x the best final quality of any method; each
  method's step (and second) of first reaching it, or never.

The claim's verdict: the panels' verdicts when they all agree, mixed otherwise.

Expected time: quick ~4-9 min on the 2-core CPU this was built on. Full: the digits grid
(126 runs of 400 steps) ~1 h on that CPU with two workers; the Fashion-MNIST grid (126 runs of
2,000 steps at width 32) a few hours on an H200 and far too long for a CPU; `--data` picks
panels (e.g. `lipkit reproduce --full --claims b --data digits`), and reproduce prints the
estimate before training.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ..train.gan import GanConfig, fit, resolve_config
from ..train.run_summary import read_metrics
from .common import ClaimResult, Context, Figure, first_reach, fmt, markdown_table, metric_of, run_or_reuse, verdict_of
from .grid_rule import RULE as GRID_RULE
from .optimizer_grid import grid_expected_time, grid_jobs, grid_panel
from .plots import plot_convergence
from .run_pool import Job, gan_job

TITLE = ("(b) WGAN with spectral normalization and no gradient penalty reaches the same quality in fewer "
         "epochs than WGAN-GP, and better final quality.")
METHODS = ("sn", "gp", "gp1", "clip")
FINAL_EVALS = 3  # final quality = mean of the last this many evaluations
BETTER_MARGIN = 0.05  # 'better final quality': lower than the other's by more than this fraction
THRESHOLD_SLACK = 1.25  # common threshold = this x the best final quality
SETTINGS: dict[str, dict[str, Any]] = {
    "quick": dict(seeds=(0,), data={
        "gaussians25": dict(steps=600, width=128, eval_every=50, eval_samples=1000),
        "digits": dict(steps=400, width=16, eval_every=50, eval_samples=500),
    }),
    "full": dict(seeds=(0, 1), data={
        "gaussians25": dict(steps=5000, width=512, eval_every=250, eval_samples=2500),
    }, grid={
        "digits": dict(steps=400, width=16, eval_every=50, eval_samples=500, seeds=(0, 1, 2)),
        "fashion-mnist": dict(steps=2000, width=32, eval_every=250, eval_samples=1000, seeds=(0, 1, 2)),
    }),
}
RULE = (f"Per data set: final quality = mean of the last {FINAL_EVALS} evaluations (W1 on 2-D data, FID on "
        f"images; lower is better) of the seed-averaged curve; threshold = {THRESHOLD_SLACK:g} x the best final "
        "quality of any method. 'Faster': sn reaches the threshold at an earlier generator step than gp (gp "
        "never reaching it counts as later). 'Better final': sn's final quality is more than "
        f"{BETTER_MARGIN:.0%} lower than gp's. A data set "
        "supports the claim when both hold, refutes it when neither holds, and is mixed otherwise; the verdict "
        "is supported / not supported when every data set says so, mixed otherwise.")


def curve(folders: list[str], metric: str) -> list[tuple[int, float, float]]:
    """(step, seconds, value) at every evaluation, averaged over the runs (seeds)."""
    per_run = []
    for folder in folders:
        rows = read_metrics(folder)
        per_run.append({r["step"]: (r["wall_seconds"], r[metric]) for r in rows if metric in r})
    steps = sorted(set.intersection(*(set(p) for p in per_run)))
    return [(s, statistics.fmean(p[s][0] for p in per_run), statistics.fmean(p[s][1] for p in per_run))
            for s in steps]


def summarize(curves: dict[str, list[tuple[int, float, float]]]) -> dict[str, Any]:
    """Final quality, the threshold and time-to-threshold of every method of one data set."""
    final = {m: statistics.fmean(v for _, _, v in c[-FINAL_EVALS:]) for m, c in curves.items()}
    threshold = THRESHOLD_SLACK * min(final.values())
    reach = {m: first_reach(c, threshold) for m, c in curves.items()}
    return {"final": final, "threshold": threshold,
            "steps_to_threshold": {m: r[0] for m, r in reach.items()},
            "seconds_to_threshold": {m: r[1] for m, r in reach.items()}}


def decide_one(summary: dict[str, Any]) -> tuple[str, str]:
    """One data set's verdict (RULE) and its numbers."""
    sn_step, gp_step = summary["steps_to_threshold"]["sn"], summary["steps_to_threshold"]["gp"]
    faster = sn_step is not None and (gp_step is None or sn_step < gp_step)
    better = summary["final"]["sn"] < (1 - BETTER_MARGIN) * summary["final"]["gp"]
    said = (f"final sn {summary['final']['sn']:.4g} vs gp {summary['final']['gp']:.4g}; steps to threshold "
            f"{summary['threshold']:.4g}: sn {sn_step if sn_step is not None else 'never'}, gp "
            f"{gp_step if gp_step is not None else 'never'}")
    return verdict_of(faster and better, not faster and not better), said


def decide(panels: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """The claim's verdict from its panels' (verdict, numbers in words): theirs when all agree."""
    kinds = {v for v, _ in panels.values()}
    verdict = kinds.pop() if len(kinds) == 1 else "mixed"
    return verdict, "; ".join(f"{d}: {v} ({said})" for d, (v, said) in panels.items())


def panels(ctx: Context) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(curve panels, grid panels) of the profile, {data set: sizes}, kept to ctx.data if set."""
    s = SETTINGS[ctx.profile]
    keep = (lambda d: True) if ctx.data is None else (lambda d: d in ctx.data)
    return ({d: v for d, v in s["data"].items() if keep(d)}, {d: v for d, v in s.get("grid", {}).items() if keep(d)})


def panel_names(profile: str) -> list[str]:
    """Every data set a panel of this profile uses (what --data may name)."""
    return list(SETTINGS[profile]["data"]) + list(SETTINGS[profile].get("grid", {}))


def run_config(ctx: Context, data: str, method: str, seed: int) -> GanConfig:
    """The train-gan run of one (data set, critic method, seed) of a curve panel."""
    size = SETTINGS[ctx.profile]["data"][data]
    return GanConfig(out=str(ctx.runs_dir("b") / f"{data}-{method}-seed{seed}"), data=data, critic=method,
                     seed=seed, device=ctx.device, progress=ctx.progress, certify=False, lower_bound_steps=5,
                     checkpoint_every=size["eval_every"], **size)


def planned_jobs(ctx: Context) -> list[Job]:
    """Every training run of this claim, for reproduce's run pool."""
    curves, grids = panels(ctx)
    seeds = SETTINGS[ctx.profile]["seeds"]
    jobs = [gan_job(ctx, run_config(ctx, data, m, seed)) for data in curves for m in METHODS for seed in seeds]
    return jobs + [job for data, size in grids.items() for job in grid_jobs(ctx, data, size)]


def expected_time(ctx: Context, workers: int) -> str | None:
    """The grid panels' expected training time on this device, said before they start."""
    _, grids = panels(ctx)
    lines = [grid_expected_time(ctx, data, size, workers) for data, size in grids.items()]
    return "; ".join(lines) if lines else None


def run(ctx: Context) -> ClaimResult:
    curves, grids = panels(ctx)
    verdicts, numbers, tables, figures, runs, notes = {}, {}, [], [], [], []
    (ctx.out / "figures").mkdir(parents=True, exist_ok=True)
    for data in curves:
        panel = curve_panel(ctx, data)
        verdicts[data] = panel["verdict"], panel["said"]
        numbers[data] = panel["summary"]
        tables += panel["tables"]
        figures += panel["figures"]
        runs += panel["runs"]
        notes.append(f"{data}: sn costs {fmt(panel['summary']['seconds_per_step']['sn'])} s per generator step vs "
                     f"gp {fmt(panel['summary']['seconds_per_step']['gp'])} s here, so the seconds axis can differ "
                     "from the steps axis.")
    for data, size in grids.items():
        panel = grid_panel(ctx, data, size)
        verdicts[f"{data} grid"] = panel["verdict"], panel["said"]
        numbers[f"{data} grid"] = panel["per_setting"]
        tables += panel["tables"]
        figures += panel["figures"]
        runs += panel["runs"]
        notes += panel["notes"]
    if not verdicts:
        raise ValueError(f"--data {','.join(ctx.data or ())} names no panel of claim (b) at --{ctx.profile}; its "
                         f"panels: {', '.join(panel_names(ctx.profile))}")
    verdict, said = decide(verdicts)
    rule = " ".join(([f"Curve panels: {RULE}"] if curves else []) + ([f"Optimizer-grid panels: {GRID_RULE}"] if grids
                    else []) + ["The claim: the panels' verdict when they all agree, mixed otherwise."])
    return ClaimResult(key="b", title=TITLE, verdict=verdict, rule=rule, decided_by=said,
                       numbers={"per_data": numbers}, tables=tables, figures=figures, runs=runs,
                       settings={**SETTINGS[ctx.profile], "data": curves, "grid": grids}, notes=notes)


def curve_panel(ctx: Context, data: str) -> dict[str, Any]:
    """One curve panel trained (or reused) and decided: {verdict, said, summary, tables, figures, runs}."""
    s = SETTINGS[ctx.profile]
    size, metric = s["data"][data], metric_of(data)
    folders: dict[str, list[str]] = {}
    seconds_per_step: dict[str, float] = {}
    runs = []
    for method in METHODS:
        folders[method] = []
        for seed in s["seeds"]:
            config = run_config(ctx, data, method, seed)
            out = Path(config.out)
            summary = run_or_reuse(config, resolve_config, fit)
            folders[method].append(str(out))
            runs.append(str(out.relative_to(ctx.out)))
            seconds_per_step.setdefault(method, 0.0)
            seconds_per_step[method] += summary["train_seconds"] / summary["steps"] / len(s["seeds"])
    curves = {m: curve(f, metric) for m, f in folders.items()}
    summary = summarize(curves)
    summary["seconds_per_step"] = seconds_per_step
    rows = [[m, summary["final"][m], summary["steps_to_threshold"][m] or "never",
             summary["seconds_to_threshold"][m] if summary["seconds_to_threshold"][m] is not None else "never",
             seconds_per_step[m]] for m in METHODS]
    tables = [f"**{data}** ({metric.upper()}, lower is better; threshold {summary['threshold']:.4g} = "
              f"{THRESHOLD_SLACK:g} x best final; {size['steps']} generator steps, {len(s['seeds'])} "
              "seed(s))\n\n" + markdown_table(
                  ["critic", f"final {metric.upper()}", "steps to threshold", "seconds to threshold",
                   "train s / generator step"], rows)]
    path = ctx.out / "figures" / f"b_{data}.png"
    plot_convergence(path, data, metric, curves, summary, len(s["seeds"]), threshold_slack=THRESHOLD_SLACK)
    verdict, said = decide_one(summary)
    figures = [Figure(str(path.relative_to(ctx.out)), (
        f"{data}: {metric.upper()} of each critic method against generator steps (left) and training seconds "
        f"(right), log scale; the dashed line is the common threshold. Where sn's curve crosses it before gp's "
        f"and ends below it, this data set supports claim (b). Here: {verdict}."))]
    sample_pngs = {m: sorted((ctx.runs_dir("b") / f"{data}-{m}-seed{s['seeds'][0]}").glob("samples-*.png"))
                   for m in METHODS}
    final_pngs = " ".join(f"{m}: [final samples]({p[-1].relative_to(ctx.out)})" for m, p in sample_pngs.items() if p)
    if final_pngs:
        tables.append(f"Final samples ({data}, seed {s['seeds'][0]}): {final_pngs}\n")
    return {"verdict": verdict, "said": said, "summary": summary, "tables": tables, "figures": figures, "runs": runs}
