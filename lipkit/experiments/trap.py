"""Claim "trap": spectral normalization as a reparametrization ("sn": gradients flow through
sigma) against the same normalization applied as a projection after each step ("sn-project",
the Keras-style kernel_constraint of SEED_NOTES section 6), same seeds and hyperparameters.

Two kinds of evidence:
- quality curves: W1 to held-out points (2-D data) or FID (images) against generator steps,
  read from each run's metrics.jsonl; "late-stage" quality is the mean over the LAST THIRD
  of a run's evaluations (fixed before any run), then averaged over seeds;
- the gradient gap: at an sn-project critic right after its projection (sigma = 1 in every
  layer), the projection trains with G = dL/dW, while the reparametrization would use
  dL/dW_raw of L(W_raw / sigma(W_raw)) = G - <G, W> u v^T at that same point (u, v the top
  singular vectors; <G, W> is not <G, u v^T> unless W has rank 1). gradient_gap measures
  both with autograd at every kept checkpoint of each sn-project run.

Data: quick runs gaussians8, because at the quick budget an SN critic does not resolve the 25
modes of gaussians25 (W1 plateaus near 0.4 from step ~100 for both methods: the curves would
compare noise), while gaussians8 visibly concentrates on its ring within a few hundred steps.
full runs gaussians25 (the toy set of the seed's comparisons) and digits (FID).

CPU cost (2-core machine, one thread per run): quick 4 runs x 600 steps at width 128, ~70 ms
per generator step, plus 6 evaluations and the gap at 4 checkpoints per sn-project run: ~45 s
per run, ~1.5 min with reproduce's two workers. 600 steps, not 1000 (issue 14: the quick
profile must fit 10 minutes): on two 1000-step reproduces the rule's quality difference read
at step 600 was +0.16 and +0.20 against a required 0.023 and 0.024; +0.18 at step 1000.
Full: ~0.25 s per generator step at width 512 on
gaussians25 and at conv width 64 on digits, so 6 x 5000 + 6 x 3000 steps ~3.3 h, plus FID
evaluations: plan 3.5 h (a GPU makes it minutes).
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from ..train.checkpoint import list_checkpoints, load_checkpoint
from ..train.gan import GanConfig, GanTask, fit, resolve_config
from .common import ClaimResult, Context, Figure, markdown_table, metric_of, run_or_reuse, verdict_of
from .plots import plot_trap_gap, plot_trap_quality
from .run_pool import Job, gan_job
from .trap_gradients import NORMALIZED_TOL, gradient_gap, gradient_pair  # noqa: F401  (trap.X in tests)

TITLE = ("(trap) Spectral normalization must be a reparametrization: applied as a projection after each step "
         "(Keras-style), the gradients are computed for the wrong function, and late-stage training and sample "
         "quality get worse.")
METHODS = ("sn", "sn-project")  # reparametrization, projection
LATE_FRACTION = 1 / 3  # late-stage = the last third of each run's evaluations
MIN_WORSENING = 0.10  # sn-project must be worse by more than 10% of sn (and the seed spread)
MATERIAL_GAP = 0.05  # median relative gradient difference that counts as material
CHECKPOINTS = 4  # checkpoints kept per run (evenly spaced), where the gap is measured

RULE = (
    "Per data set, quality q = mean over seeds of each run's mean W1 (2-D data) or FID (images) "
    "over the last third of its evaluations (lower is better); spread = the larger of the two "
    "methods' seed ranges (max - min) of q; gap = median over layers and seeds of "
    "||G - G_reparam|| / ||G|| at each final sn-project critic. Supported if "
    "q(sn-project) - q(sn) > max(10% of q(sn), spread) AND gap > 0.05; not supported if "
    "q(sn-project) - q(sn) <= spread (as good, or better); mixed otherwise. Over several data "
    "sets: supported (not supported) only if every data set says so, else mixed."
)

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {"seeds": [0, 1], "runs": {
        "gaussians8": {"width": 128, "steps": 600, "eval_every": 100, "eval_samples": 1000,
                       "lower_bound_steps": 5}}},
    "full": {"seeds": [0, 1, 2], "runs": {
        "gaussians25": {"width": 512, "steps": 5000, "eval_every": 250, "eval_samples": 2500,
                        "lower_bound_steps": 20},
        "digits": {"width": 64, "steps": 3000, "eval_every": 250, "eval_samples": 1000,
                   "lower_bound_steps": 10}}},
}


def gaps_over_checkpoints(config: GanConfig) -> dict[int, dict[str, Any]]:
    """gradient_gap at every kept checkpoint of an sn-project run, on a held-out real batch
    and a generated batch of the training batch size (fixed noise: the same z each time)."""
    from ..train.gan_eval import EVAL_SEED_OFFSET, sample

    resolved = resolve_config(config)
    task = GanTask(resolved)
    out: dict[int, dict[str, Any]] = {}
    for path in reversed(list_checkpoints(Path(config.out))):
        state = load_checkpoint(path)
        task.load_state_dict(state["task"])
        n = min(resolved.batch_size, task.held_out.shape[0])
        fake = sample(task.generator, n, None, torch.Generator().manual_seed(resolved.seed + EVAL_SEED_OFFSET),
                      task.device)
        out[int(state["step"])] = gradient_gap(task.critic, task.held_out[:n].to(task.device),
                                               fake.to(task.device))
    return out


# ------------------------------------------------------------------------- runs, numbers


def run_config(ctx: Context, data: str, critic: str, seed: int) -> GanConfig:
    sizes = SETTINGS[ctx.profile]["runs"][data]
    return GanConfig(data=data, critic=critic, seed=seed, **sizes,
                     checkpoint_every=max(1, sizes["steps"] // CHECKPOINTS), keep_checkpoints=CHECKPOINTS,
                     out=str(ctx.runs_dir("trap") / f"{data}-{critic}-seed{seed}"),
                     device=ctx.device, progress=ctx.progress, certify=False)


def planned_jobs(ctx: Context) -> list[Job]:
    """Every training run of this claim, for reproduce's run pool."""
    s = SETTINGS[ctx.profile]
    return [gan_job(ctx, run_config(ctx, data, m, seed)) for data in s["runs"] for m in METHODS for seed in s["seeds"]]


def quality_of(folder: str | Path, metric: str, summary: dict[str, Any]) -> dict[str, Any]:
    """One run's curve of `metric`, its late-stage mean and its final metrics (summary: the
    run's summary.json content, as run_or_reuse returned it)."""
    from ..train.run_summary import read_metrics

    rows = read_metrics(folder)
    points = [(r["step"], r[metric]) for r in rows if isinstance(r.get(metric), (int, float))]
    if not points:
        raise ValueError(f"run {folder} logged no {metric!r}: cannot judge its quality")
    late = [v for _, v in points[-max(1, round(len(points) * LATE_FRACTION)):]]
    return {"steps": [s for s, _ in points], "values": [v for _, v in points],
            "late": statistics.fmean(late), "final": summary.get("final", {})}


def method_numbers(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Seed mean and range of the late-stage quality, and the mean final metrics."""
    late = [r["late"] for r in runs]
    finals = {k: statistics.fmean(r["final"][k] for r in runs)
              for k in ("w1", "modes_covered", "hq_percent", "fid") if all(k in r["final"] for r in runs)}
    return {"late_seeds": late, "late_mean": statistics.fmean(late), "late_range": max(late) - min(late),
            "final": finals, "steps": runs[0]["steps"],
            "curve_mean": [statistics.fmean(v) for v in zip(*(r["values"] for r in runs))],
            "curve_min": [min(v) for v in zip(*(r["values"] for r in runs))],
            "curve_max": [max(v) for v in zip(*(r["values"] for r in runs))]}


def decide_one(entry: dict[str, Any]) -> tuple[bool, bool, str]:
    """(supported, refuted, sentence) for one data set's numbers (RULE)."""
    reparam, project = entry["methods"]["sn"], entry["methods"]["sn-project"]
    spread = max(reparam["late_range"], project["late_range"])
    worse = project["late_mean"] - reparam["late_mean"]
    margin = max(MIN_WORSENING * reparam["late_mean"], spread)
    gap = entry["gap"]["median_rel_diff"]
    supported = worse > margin and gap > MATERIAL_GAP
    refuted = worse <= spread
    sentence = (f"late {entry['metric']} sn-project {project['late_mean']:.3g} vs sn {reparam['late_mean']:.3g} "
                f"(difference {worse:+.3g}, needed > {margin:.3g}, seed spread {spread:.3g}); "
                f"median gradient relative difference {gap:.3g} (material > {MATERIAL_GAP})")
    return supported, refuted, sentence


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """The verdict and the sentence saying which numbers decided it (RULE), from numbers alone."""
    if not numbers.get("data"):
        raise ValueError(f"numbers['data'] must hold at least one data set, got {numbers.get('data')!r}")
    parts = {data: decide_one(entry) for data, entry in numbers["data"].items()}
    verdict = verdict_of(all(s for s, _, _ in parts.values()), all(r for _, r, _ in parts.values()))
    return verdict, "; ".join(f"{data}: {sentence}" for data, (_, _, sentence) in parts.items()) + f" -> {verdict}"


def gap_numbers(per_seed: list[dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """The gap at each seed's final checkpoint (the rule's input) and along training."""
    finals = [gaps[max(gaps)] for gaps in per_seed]
    names = [row["layer"] for row in finals[0]["layers"]]
    layers = [{"layer": name, "shape": finals[0]["layers"][i]["shape"],
               **{k: [f["layers"][i][k] for f in finals] for k in ("cosine", "rel_diff")}}
              for i, name in enumerate(names)]
    steps = sorted(set.intersection(*(set(g) for g in per_seed)))
    return {"median_rel_diff": statistics.median(r for f in finals for r in (x["rel_diff"] for x in f["layers"])),
            "overall_cosine": statistics.fmean(f["cosine"] for f in finals), "layers": layers,
            "steps": steps, "over_training": [statistics.fmean(g[s]["median_rel_diff"] for g in per_seed)
                                              for s in steps]}


# ------------------------------------------------------------------------- report parts


def tables(numbers: dict[str, Any]) -> list[str]:
    quality, gap = [], []
    for data, entry in numbers["data"].items():
        for method in METHODS:
            m = entry["methods"][method]
            quality.append([data, method, m["late_mean"], m["late_range"], *(m["final"].get(k) for k in
                            ("w1", "fid", "modes_covered", "hq_percent"))])
        for row in entry["gap"]["layers"]:
            gap.append([data, row["layer"], "x".join(map(str, row["shape"])), statistics.fmean(row["cosine"]),
                        statistics.fmean(row["rel_diff"]), max(row["rel_diff"]) - min(row["rel_diff"])])
    return [markdown_table(["data", "method", "late quality (mean of last third, seed mean)", "seed range",
                            "final W1", "final FID", "final modes", "final HQ %"], quality),
            markdown_table(["data", "layer", "shape", "cosine(G, G_reparam)", "relative difference",
                            "seed range"], gap)]


def run(ctx: Context) -> ClaimResult:
    if ctx.profile not in SETTINGS:
        raise ValueError(f"profile={ctx.profile!r} is not one of {tuple(SETTINGS)}")
    settings = SETTINGS[ctx.profile]
    numbers: dict[str, Any] = {"late_fraction": LATE_FRACTION, "data": {}}
    folders: list[str] = []
    for data in settings["runs"]:
        metric = metric_of(data)
        methods, gaps = {}, []
        for method in METHODS:
            runs = []
            for seed in settings["seeds"]:
                config = run_config(ctx, data, method, seed)
                summary = run_or_reuse(config, resolve_config, fit)
                runs.append(quality_of(config.out, metric, summary))
                folders.append(str(Path(config.out).relative_to(ctx.out)))
                if method == "sn-project":
                    gaps.append(gaps_over_checkpoints(config))
            methods[method] = method_numbers(runs)
        numbers["data"][data] = {"metric": metric, "methods": methods, "gap": gap_numbers(gaps)}
    verdict, decided_by = decide(numbers)
    (ctx.out / "figures").mkdir(parents=True, exist_ok=True)
    plot_trap_quality(numbers, ctx.out / "figures" / "trap_quality.png", methods=METHODS,
                      late_fraction=LATE_FRACTION)
    plot_trap_gap(numbers, ctx.out / "figures" / "trap_gradient_gap.png", material_gap=MATERIAL_GAP)
    figures = [
        Figure("figures/trap_quality.png", "Sample quality against generator steps, mean over seeds (band: "
               "seed min-max), sn (reparametrization) vs sn-project (projection after each step); the grey "
               f"window is the late stage the rule averages. It carries the quality half of the verdict ({verdict})."),
        Figure("figures/trap_gradient_gap.png", "Left: per critic layer, cosine and relative difference between "
               "the gradient the projection uses (dL/dW) and the reparametrization's (dL/dW_raw through "
               "W_raw/sigma) at the final sn-project critic. Right: the median relative difference at each kept "
               f"checkpoint. It carries the mechanism half of the verdict ({verdict})."),
    ]
    notes = [
        f"Late stage = the last third of each run's evaluations (LATE_FRACTION={LATE_FRACTION:.3g}), fixed "
        "before running; the final point alone is noisier on GAN curves.",
        "The reparametrized gradient at sigma = 1 is G - <G, W> u v^T: it removes the part of G that only "
        "rescales the top singular direction, which the projection then undoes; for a bias-free ReLU "
        "critic <G_l, W_l> equals the loss itself in every layer (Euler), so the gap is |L| / ||G_l||.",
        "A rank-1 layer (the critic's last, 1 x width) is all top singular direction: there G_reparam is "
        "G minus its whole component along W, so a cosine near 0 means the projection spends that layer's "
        "step on rescaling the output, which the next projection undoes.",
        "Both methods use the sn preset's hyperparameters and sn_iter (1 power step per update).",
    ]
    return ClaimResult(key="trap", title=TITLE,
                       verdict=verdict, rule=RULE, decided_by=decided_by, numbers=numbers,
                       tables=tables(numbers), figures=figures, runs=folders, settings=settings, notes=notes)
