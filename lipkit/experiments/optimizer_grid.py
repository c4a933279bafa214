"""Claim (b) on SN-GAN's own protocol: every critic method under each optimizer setting of
Miyato et al. 2018 (Table 1, settings A-F), several seeds, on image data.

Why: a single hyperparameter setting and one seed decide nothing (Kurach et al. 2019: seed
variance is large). SN-GAN's central evidence for (b) is this grid: WGAN-GP degrades at the
aggressive settings (lr 1e-3 with momentum, D-F) while SN does not.

What lipkit changes from the paper, and why:
- every critic trains with the WGAN loss (lipkit's GAN is a WGAN), except the row `sn-hinge`
  (SN with the hinge loss, which the SN-GAN authors use with SN: ANCHORS.md);
- the generator uses the same optimizer setting as the critic (as in the paper);
- WGAN's critic warm-up (100 critic steps early on) is off for every row, weight clipping
  included, so that each setting's n_dis is what every method gets;
- lipkit's small conv nets (width and steps in convergence.SETTINGS), not the paper's CNN.

The verdict rule, fixed before any run, is grid_rule.RULE: per setting, sn against gp on the
seed-median final FID and steps to a common threshold; the grid by majority of settings. A run
that diverges (NaN loss) is a result, not an error: it counts as infinitely bad.
"""
from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..train.gan import GanConfig
from ..train.reuse import IGNORED_ON_REUSE
from ..train.run import NonFiniteLossError
from ..train.run_summary import read_metrics
from .common import Context, Figure, markdown_table, metric_of
from .grid_rule import THRESHOLD_SLACK, decide_grid, decide_setting, summarize_setting, word
from .plots import plot_optimizer_grid
from .run_pool import Job, gan_job

# SN-GAN (arXiv 1802.05957) Table 1: learning rate, Adam (beta1, beta2), critic steps per
# generator step. A: WGAN-GP's setting; B, C: the standard-GAN settings; D-F: aggressive.
OPTIMIZER_SETTINGS: dict[str, dict[str, Any]] = {
    "A": dict(lr=1e-4, betas=(0.5, 0.9), n_critic=5),
    "B": dict(lr=1e-4, betas=(0.5, 0.999), n_critic=1),
    "C": dict(lr=2e-4, betas=(0.5, 0.999), n_critic=1),
    "D": dict(lr=1e-3, betas=(0.5, 0.9), n_critic=5),
    "E": dict(lr=1e-3, betas=(0.5, 0.999), n_critic=5),
    "F": dict(lr=1e-3, betas=(0.9, 0.999), n_critic=5),
}
# The grid's rows: a critic method of the registry, and its loss.
ROWS: dict[str, dict[str, str]] = {
    "sn": dict(critic="sn", loss="wgan"),
    "sn-conv": dict(critic="sn-conv", loss="wgan"),
    "gp": dict(critic="gp", loss="wgan"),
    "gp1": dict(critic="gp1", loss="wgan"),
    "clip": dict(critic="clip", loss="wgan"),
    "lipnet": dict(critic="lipnet", loss="wgan"),
    "sn-hinge": dict(critic="sn", loss="hinge"),
}
DIVERGED_FILE = "diverged.json"  # written by train_grid_run when a run stops on a NaN loss


@dataclass(frozen=True)
class GridRun:
    row: str  # a key of ROWS
    setting: str  # a key of OPTIMIZER_SETTINGS
    seed: int
    config: GanConfig


def grid_runs(ctx: Context, data: str, size: dict[str, Any]) -> list[GridRun]:
    """Every run of one data set's grid: ROWS x OPTIMIZER_SETTINGS x size['seeds']."""
    train = {k: v for k, v in size.items() if k != "seeds"}
    runs = []
    for setting, optimizer in OPTIMIZER_SETTINGS.items():
        for row, method in ROWS.items():
            for seed in size["seeds"]:
                config = GanConfig(
                    out=str(ctx.runs_dir("b") / f"grid-{data}-{setting}-{row}-seed{seed}"), data=data, seed=seed,
                    device=ctx.device, progress=ctx.progress, certify=False, lower_bound_steps=5,
                    checkpoint_every=size["eval_every"], optimizer="adam", warmup_n_critic=0,
                    **method, **optimizer, **train)
                runs.append(GridRun(row, setting, seed, config))
    return runs


def grid_jobs(ctx: Context, data: str, size: dict[str, Any]) -> list[Job]:
    """The run pool's jobs for one data set's grid (each survives its run diverging)."""
    jobs = []
    for run in grid_runs(ctx, data, size):
        job = gan_job(ctx, run.config)
        cost = job.cost * (run.config.n_critic + 1) / 6  # gan_job's cost assumes 5 critic steps
        jobs.append(dataclasses.replace(job, fn=train_grid_run, cost=cost))
    return jobs


def train_grid_run(config: GanConfig) -> dict[str, Any] | None:
    """Train (or reuse) one grid run. A run that diverges is a result here, not an error (the
    paper's point is that some methods do at some settings): DIVERGED_FILE records where, and
    a rerun does not train it again."""
    from ..train.reuse import train_or_reuse  # looked up at call time: tests stand in for it

    marker = Path(config.out) / DIVERGED_FILE
    if diverged_at(config) is not None:
        return None
    try:
        return train_or_reuse(config)
    except NonFiniteLossError as err:
        marker.write_text(json.dumps({"error": str(err), "config": _config_json(config)}) + "\n")
        return None


def diverged_at(config: GanConfig) -> str | None:
    """The divergence message of a grid run of this same config, else None."""
    marker = Path(config.out) / DIVERGED_FILE
    if not marker.is_file():
        return None
    saved = json.loads(marker.read_text())
    return saved["error"] if saved.get("config") == _config_json(config) else None


def _config_json(config: GanConfig) -> dict[str, Any]:
    """The config as compared for reuse (train/reuse.py): where and how it runs aside."""
    keep = {k: v for k, v in dataclasses.asdict(config).items() if k not in IGNORED_ON_REUSE}
    return json.loads(json.dumps(keep))


def run_points(config: GanConfig, metric: str) -> list[tuple[int, float, float]]:
    """(step, training seconds, quality) at every evaluation of a run; a non-finite sample
    batch (an evaluation without the metric) counts as infinity, and a diverged run ends with
    an infinite point at the step after its last logged one."""
    rows = read_metrics(config.out) if (Path(config.out) / "metrics.jsonl").is_file() else []
    points = [(r["step"], r["wall_seconds"], _finite_or_inf(r.get(metric, math.inf))) for r in rows
              if metric in r or "eval_non_finite_samples" in r]
    if diverged_at(config) is not None:
        last = rows[-1] if rows else {"step": 0, "wall_seconds": 0.0}
        points.append((last["step"] + 1, last["wall_seconds"], math.inf))
    return points


def _finite_or_inf(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.inf


def grid_panel(ctx: Context, data: str, size: dict[str, Any]) -> dict[str, Any]:
    """One data set's grid, trained (or reused) and decided: {verdict, said, per_setting,
    tables, figures, runs, notes} for claim (b)'s report."""
    metric = metric_of(data)
    points: dict[str, dict[str, list]] = {s: {row: [] for row in ROWS} for s in OPTIMIZER_SETTINGS}
    runs, seconds = [], {}
    for run in grid_runs(ctx, data, size):
        summary = train_grid_run(run.config)
        points[run.setting][run.row].append(run_points(run.config, metric))
        runs.append(str(Path(run.config.out).relative_to(ctx.out)))
        if summary is not None:
            seconds.setdefault((run.row, run.config.n_critic), []).append(summary["train_seconds"] / summary["steps"])
    per_setting = {s: summarize_setting(by_row) for s, by_row in points.items()}
    verdict, said = decide_grid(per_setting)
    path = ctx.out / "figures" / f"b_grid_{data}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_optimizer_grid(path, data, per_setting, OPTIMIZER_SETTINGS, len(size["seeds"]))
    setting_words = ", ".join(f"{s} = lr {o['lr']:g}, betas {o['betas']}, n_dis {o['n_critic']}"
                              for s, o in OPTIMIZER_SETTINGS.items())
    figure = Figure(str(path.relative_to(ctx.out)), (
        f"{data}: final FID (median over {len(size['seeds'])} seeds, bars from the best to the worst seed) of each "
        f"critic method under each of SN-GAN's optimizer settings ({setting_words}), in the style of SN-GAN's "
        f"Figure 1; lower is better, a cross at the top marks a setting where a method diverged. Grid verdict: "
        f"{verdict}."))
    tables = [_final_table(data, per_setting, size), _steps_table(data, per_setting)]
    notes = [f"{data} grid, per setting: " + "; ".join(f"{s}: {decide_setting(v)[0]}" for s, v in per_setting.items()),
             f"{data} grid: training seconds per generator step (median over runs), by method and n_dis: " + ", ".join(
                 f"{row} n_dis {n}: {statistics.median(v):.3g}" for (row, n), v in sorted(seconds.items()))]
    return {"verdict": verdict, "said": said, "per_setting": per_setting, "tables": tables, "figures": [figure],
            "runs": runs, "notes": notes}


def _final_table(data: str, per_setting: dict[str, dict[str, Any]], size: dict[str, Any]) -> str:
    def cell(summary: dict[str, Any], row: str) -> str:
        lo, hi = word(summary["final_min"][row], "div."), word(summary["final_max"][row], "div.")
        return f"{word(summary['final'][row], 'diverged')} ({lo}-{hi})"

    rows = [[row] + [cell(per_setting[s], row) for s in OPTIMIZER_SETTINGS] for row in ROWS]
    return (f"**{data}, optimizer grid: final FID** (median over seeds {tuple(size['seeds'])}, best-worst seed in "
            f"brackets; lower is better; {size['steps']} generator steps, width {size['width']})\n\n"
            + markdown_table(["critic"] + [f"setting {s}" for s in OPTIMIZER_SETTINGS], rows))


def _steps_table(data: str, per_setting: dict[str, dict[str, Any]]) -> str:
    header = ["critic"] + [f"{s} (threshold {word(v['threshold'], '-')})" for s, v in per_setting.items()]
    rows = [[row] + [word(v["steps_to_threshold"][row], "never") for v in per_setting.values()] for row in ROWS]
    return (f"**{data}, optimizer grid: generator steps to each setting's threshold** ({THRESHOLD_SLACK:g} x the "
            "setting's best median final FID; median over seeds)\n\n" + markdown_table(header, rows))


# Training seconds per critic step of a grid run (a generator step costs about n_dis + 1 of
# them, evaluations included), where measured: (device kind, data set) -> seconds. Used only to
# say the expected time before a grid starts.
SECONDS_PER_CRITIC_STEP = {
    ("cpu", "digits"): 0.031,  # 2-core CPU, one thread per worker, width 16: 126 runs in 61 min, 2026-11-30
    ("cuda", "fashion-mnist"): 0.008,  # H200: ~45 ms per generator step at n_dis 5 (benchmarks/README.md)
}


def grid_expected_time(ctx: Context, data: str, size: dict[str, Any], workers: int) -> str:
    """'<data> grid: N runs, about M min on <device>' (or why there is no estimate)."""
    runs = grid_runs(ctx, data, size)
    per_step = SECONDS_PER_CRITIC_STEP.get((str(ctx.device).split(":")[0], data))
    if per_step is None:
        return f"{data} grid: {len(runs)} runs of {size['steps']} steps; no time measured for {data} on {ctx.device}"
    seconds = sum(r.config.steps * (r.config.n_critic + 1) * per_step for r in runs) / max(1, workers)
    return (f"{data} grid: {len(runs)} runs of {size['steps']} steps, about {seconds / 60:.0f} min on {ctx.device} "
            f"with {workers} worker(s)")
