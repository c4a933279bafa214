"""Claim (a): spectral norm regularization improves generalization over L2 weight decay.

One compare-clf run (train/compare.py): the same seeds and training subset for every
regularizer, each penalty's lambda chosen on a validation split carved from the training
split (never on test), then test accuracy, the generalization gap, the empirical and
certified Lipschitz bounds and the robust accuracies, mean and spread over seeds.

Expected time on the 2-core CPU this was built on: quick (digits, 25 runs + 9 tuning
runs) ~1-2 min; full (Fashion-MNIST, 2,000 training images, 15 epochs, 15 runs + 9 tuning
runs) ~1 h on one core; not measured on a GPU. The full runs are exactly those of the
README's compare-clf command, so a folder holding them is reused (see README).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..train.classify import ClfConfig
from ..train.compare import compare
from .common import ClaimResult, Context, Figure, fmt, markdown_table, verdict_of
from .run_pool import Job

TITLE = "(a) Spectral norm regularization improves generalization over L2 (Yoshida & Miyato 2017)."
REGS = ("none", "l2", "snr", "sn", "igp")
SETTINGS: dict[str, dict[str, Any]] = {
    "quick": dict(data="digits", train_size=300, model="cnn", width=16, hidden=64, epochs=30, seeds=(0, 1, 2, 3, 4),
                  sn_iter=1, pgd_size=200, pgd_steps=20, lower_bound_steps=10),
    "full": dict(data="fashion-mnist", train_size=2000, model="cnn", width=32, hidden=128, epochs=15,
                 seeds=(0, 1, 2), sn_iter=3, pgd_size=300, pgd_steps=30, lower_bound_steps=10),
}
JOB_COST = {"quick": 1000.0, "full": 40000.0}  # in run_pool.STEP_COST units (toy generator steps)
Z = 2.0  # a difference counts when it exceeds Z standard errors of the difference of seed means
RULE = (f"snr vs l2 over the same seeds, lambdas tuned on validation. 'Better accuracy': mean test accuracy "
        f"of snr exceeds l2's by more than {Z:g} standard errors of the difference (sample std over seeds). "
        f"'Smaller gap': l2's mean train-test accuracy gap exceeds snr's by more than {Z:g} standard errors. "
        "supported: better accuracy and a gap no larger (by the same test); not supported: neither better "
        "accuracy nor a smaller gap; mixed: one without the other.")


def difference(table: dict[str, dict[str, float]], a: str, b: str, col: str, n: int) -> tuple[float, float]:
    """(mean_a - mean_b, its standard error) for column `col` over n seeds."""
    diff = table[a][col] - table[b][col]
    se = math.sqrt((table[a][col + "_std"] ** 2 + table[b][col + "_std"] ** 2) / max(n, 1))
    return diff, se


def decide(table: dict[str, dict[str, float]], n_seeds: int) -> tuple[str, str]:
    """The verdict and the sentence of numbers that decided it (RULE)."""
    acc, acc_se = difference(table, "snr", "l2", "test_acc", n_seeds)
    gap, gap_se = difference(table, "l2", "snr", "gap_acc", n_seeds)  # > 0: snr's gap is smaller
    better_acc = acc > Z * acc_se
    smaller_gap = gap > Z * gap_se
    larger_gap = -gap > Z * gap_se
    supported = better_acc and not larger_gap
    refuted = not better_acc and not smaller_gap
    verdict = verdict_of(supported, refuted)
    said = (f"test accuracy snr - l2 = {acc:+.4f} (SE {acc_se:.4f}; {'beyond' if better_acc else 'within'} "
            f"{Z:g} SE); gap l2 - snr = {gap:+.4f} (SE {gap_se:.4f}; "
            f"{'snr smaller' if smaller_gap else 'snr larger' if larger_gap else 'no difference'} at {Z:g} SE), "
            f"{n_seeds} seeds")
    return verdict, said


def open_question(table: dict[str, dict[str, float]], n_seeds: int) -> str:
    """The seed's open question, answered with the same test: does igp help over none?"""
    acc, se = difference(table, "igp", "none", "test_acc", n_seeds)
    robust_cols = sorted(c for c in table["igp"] if c.startswith("pgd_acc@") and not c.endswith("_std"))
    robust = ", ".join(f"{c}: igp {table['igp'][c]:.3f} vs none {table['none'][c]:.3f}" for c in robust_cols)
    outcome = "helps" if acc > Z * se else "hurts" if -acc > Z * se else "makes no measurable difference"
    return (f"Open question (gradient penalty as a supervised regularizer): the input-gradient penalty {outcome} "
            f"to test accuracy here (igp - none = {acc:+.4f}, SE {se:.4f}); robust accuracy {robust}.")


def compared(ctx: Context) -> list[dict[str, Any]]:
    """The compare-clf table of this claim (its runs trained, or reused when finished)."""
    s = SETTINGS[ctx.profile]
    out = ctx.runs_dir("a")
    base = ClfConfig(out=str(out), data=s["data"], train_size=s["train_size"], model=s["model"], width=s["width"],
                     hidden=s["hidden"], sn_iter=s["sn_iter"], pgd_size=s["pgd_size"], pgd_steps=s["pgd_steps"],
                     lower_bound_steps=s["lower_bound_steps"], device=ctx.device, progress=ctx.progress)
    # Every other field keeps ClfConfig's default, so the full profile's runs are exactly the
    # runs of the README's compare-clf command (and a folder of those is reused, not redone).
    from ..train.classify import steps_for_epochs

    base.steps = steps_for_epochs(base, s["epochs"])
    command = f"lipkit reproduce --{ctx.profile} --claims a"
    return compare(base, REGS, list(s["seeds"]), out, tune=True, command=command)


def planned_jobs(ctx: Context) -> list[Job]:
    """This claim's runs as one job for reproduce's run pool: the lambdas tuned on the first
    seed decide the other runs, so they train in order (cost: ~85 s on one core, quick)."""
    quiet = dataclasses.replace(ctx, progress=False)
    return [Job(str(ctx.runs_dir("a").relative_to(ctx.out)), JOB_COST[ctx.profile], compared, (quiet,))]


def run(ctx: Context) -> ClaimResult:
    s = SETTINGS[ctx.profile]
    out = ctx.runs_dir("a")
    rows = compared(ctx)
    table = {r["reg"]: r for r in rows}
    n = len(s["seeds"])
    verdict, said = decide(table, n)
    eps = [c.split("@")[1] for c in rows[0] if c.startswith("cert_acc@") and not c.endswith("_std")]
    header = ["reg", "lambda", "test acc", "gap (train-test)", "L lower", "L certified",
              *[f"PGD acc @{e}" for e in eps], *[f"cert acc @{e}" for e in eps]]
    body = []
    for r in rows:
        cols = ["test_acc", "gap_acc", "lipschitz_lower", "lipschitz_upper",
                *[f"pgd_acc@{e}" for e in eps], *[f"cert_acc@{e}" for e in eps]]
        body.append([r["reg"], r["lam"], *[f"{fmt(r[c])} ± {fmt(r[c + '_std'], 2)}" for c in cols]])
    tune = (out / "tune.md").read_text() if (out / "tune.md").is_file() else ""
    tables = [markdown_table(header, body) + f"\nMean ± sample std over {n} seeds; {s['data']}, "
              f"{s['train_size']} training images, {s['model']}, {s['epochs']} epochs.\n"]
    if tune:
        tables.append("Lambda selection (validation split, first seed):\n\n" + tune)
    figure = Figure(
        path=str((out / "plot.png").relative_to(ctx.out)),
        caption=(f"Test accuracy (x) against certified robust accuracy (y) per regularizer, one panel per L2 "
                 f"radius; error bars: ±1 std over {n} seeds. A Lipschitz regularizer that only trades accuracy "
                 f"for certified robustness moves up and left; claim (a) needs snr to the right of l2. "
                 f"Verdict: {verdict}."))
    runs = sorted(str(p.parent.relative_to(ctx.out)) for p in out.glob("*/seed-*/summary.json"))
    numbers = {"table": rows, "n_seeds": n}
    return ClaimResult(key="a", title=TITLE, verdict=verdict, rule=RULE, decided_by=said, numbers=numbers,
                       tables=tables, figures=[figure], runs=runs, settings=s, notes=[open_question(table, n)])
