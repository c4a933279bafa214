"""compare-clf: several --reg settings trained with the same seeds, one table and one plot.

Every run is an ordinary classify.fit in its own folder (OUT/REG/seed-S; tuning runs in
OUT/tune/REG/lam-X), so each is resumable and inspectable like a train-clf run, and a
rerun of the same command reuses finished runs (their summary.json) and resumes cut ones.

Lambda selection (--tune) never reads the test split: for each penalty reg, one run per
grid value with the FIRST seed and robustness evaluation off; the lambda with the best
final validation accuracy wins (ties: the smaller lambda). The chosen lambdas and the whole
grid are written to tune.md / tune.csv.

Outputs in OUT: runs.csv (one row per run), table.csv and table.md (per reg: mean and
sample standard deviation over seeds), plot.png (test accuracy vs certified robust accuracy,
one panel per eps, one point per reg with +-1 std error bars).
"""
from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..methods import get_method, method_names
from .classify import ClfConfig, fit, resolve_config
from .reuse import run_or_reuse


def has_lambda(reg: str) -> bool:
    """Whether method `reg` adds a penalty (so it has a lambda to set or tune)."""
    return bool(get_method(reg, "classifier").penalties)


def metric_columns(eps: Sequence[float]) -> list[str]:
    """The table's columns, in order."""
    cols = ["test_acc", "train_acc", "val_acc", "gap_acc", "gap_loss", "lipschitz_lower", "lipschitz_upper"]
    return cols + [f"pgd_acc@{e:g}" for e in eps] + [f"cert_acc@{e:g}" for e in eps]


def run_once(config: ClfConfig) -> dict[str, Any]:
    """Final metrics of `config`'s run (reused, resumed or trained: reuse.run_or_reuse)."""
    return run_or_reuse(config, resolve_config, fit)["final"]


def tune_lambda(base: ClfConfig, reg: str, grid: Sequence[float], out: Path) -> tuple[float, list[dict[str, Any]]]:
    """Best lambda for `reg` by final validation accuracy (first seed; ties: smaller lambda)."""
    if not has_lambda(reg):
        raise ValueError(f"reg={reg!r} has no lambda to tune")
    if not grid or any(not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0) for v in grid):
        raise ValueError(f"the lambda grid of {reg} must be finite numbers >= 0, got {list(grid)!r}")
    rows = []
    for lam in sorted(float(v) for v in grid):
        config = dataclasses.replace(base, reg=reg, lam=lam, out=str(out / "tune" / reg / f"lam-{lam:g}"),
                                     robust_eval=False)
        final = run_once(config)
        rows.append({"reg": reg, "lam": lam, "seed": base.seed, "val_acc": final["val_acc"],
                     "val_loss": final["val_loss"]})
    best = max(rows, key=lambda r: (r["val_acc"], -r["lam"]))
    return best["lam"], rows


def compare(base: ClfConfig, regs: Sequence[str], seeds: Sequence[int], out: str | Path, *,
            lams: dict[str, float] | None = None, tune: bool = False,
            grids: dict[str, Sequence[float]] | None = None, command: str | None = None) -> list[dict[str, Any]]:
    """Train every reg with every seed (sequentially) and write the table and plot; returns
    the table rows. lams: fixed lambdas per reg (default: the method's classifier lam); tune=True
    chooses them on the validation split instead (grids: per reg, default the method's grid)."""
    allowed = method_names("classifier")
    bad = [r for r in regs if r not in allowed]
    if not regs or bad or len(set(regs)) != len(regs):
        raise ValueError(f"regs must be distinct names from {allowed}, got {list(regs)!r}")
    lams, grids = dict(lams or {}), {**{r: get_method(r).grid for r in regs}, **(grids or {})}
    if not seeds or len(set(seeds)) != len(seeds) or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                                                          for s in seeds):
        raise ValueError(f"seeds must be distinct ints >= 0, got {list(seeds)!r}")
    not_compared = sorted(set(lams) - set(regs))
    if not_compared:
        raise ValueError(f"lams given for {not_compared}, which are not in regs {list(regs)}")
    no_penalty = sorted(r for r in lams if not has_lambda(r))
    if no_penalty:
        raise ValueError(f"lams given for {no_penalty}, which add no penalty (no lambda to set); lams are for "
                         f"{[r for r in regs if has_lambda(r)]}")
    if tune and lams:
        raise ValueError("give either fixed lams or --tune, not both (tuning would overwrite them)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file: compare-clf writes a folder of runs there")
    out.mkdir(parents=True, exist_ok=True)
    chosen: dict[str, float | None] = {}
    tuning: list[dict[str, Any]] = []
    for reg in regs:
        if tune and has_lambda(reg):
            chosen[reg], rows = tune_lambda(dataclasses.replace(base, seed=seeds[0]), reg, grids[reg], out)
            tuning += rows
        else:
            chosen[reg] = lams.get(reg)
    runs = []
    for reg in regs:
        for seed in seeds:
            config = dataclasses.replace(base, reg=reg, lam=chosen[reg], seed=seed, out=str(out / reg / f"seed-{seed}"))
            final = run_once(config)
            runs.append({"reg": reg, "lam": resolve_config(config).lam, "seed": seed, **final})
    resolved = resolve_config(base)
    columns = metric_columns(resolved.eps)
    table = aggregate(runs, regs, columns)
    caption = command or "lipkit.train.compare.compare(...)"
    _write_csv(out / "runs.csv", runs, ["reg", "lam", "seed", *columns])
    _write_csv(out / "table.csv", table, list(table[0]))
    (out / "table.md").write_text(markdown(table, columns, len(seeds), caption))
    if tuning:
        _write_csv(out / "tune.csv", tuning, list(tuning[0]))
        (out / "tune.md").write_text(_tuning_markdown(tuning, chosen, caption))
    plot(table, resolved, len(seeds), out / "plot.png", caption)
    return table


def aggregate(runs: list[dict[str, Any]], regs: Sequence[str], columns: Sequence[str]) -> list[dict[str, Any]]:
    """Per reg: lam, seeds, then `col` (mean) and `col_std` (sample std, ddof=1; 0 for one seed)."""
    table = []
    for reg in regs:
        mine = [r for r in runs if r["reg"] == reg]
        row: dict[str, Any] = {"reg": reg, "lam": mine[0]["lam"], "seeds": len(mine)}
        for col in columns:
            values = np.array([float(r.get(col, math.nan)) for r in mine])
            row[col] = float(values.mean())
            row[col + "_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        table.append(row)
    return table


def markdown(table: list[dict[str, Any]], columns: Sequence[str], n_seeds: int, caption: str) -> str:
    head = "| reg | lambda | " + " | ".join(columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    for row in table:
        cells = [f"{row[c]:.4g} ± {row[c + '_std']:.2g}" for c in columns]
        lines.append(f"| {row['reg']} | {row['lam']:g} | " + " | ".join(cells) + " |")
    note = (f"\nMean ± sample std over {n_seeds} seed(s). gap_acc = train_acc - test_acc, gap_loss = "
            "test_loss - train_loss; lipschitz_lower: lk.lipschitz_lower_bound on test inputs; "
            "lipschitz_upper: certified lk.lipschitz_bound; pgd_acc@eps: accuracy under L2 PGD; "
            "cert_acc@eps: correct with logit margin > sqrt(2) * lipschitz_upper * eps.\n"
            f"Command: `{caption}`\n")
    return "\n".join(lines) + "\n" + note


def _tuning_markdown(rows: list[dict[str, Any]], chosen: dict[str, float | None], caption: str) -> str:
    lines = ["| reg | lambda | val_acc | val_loss | chosen |", "|---|---|---|---|---|"]
    for r in rows:
        mark = "yes" if chosen.get(r["reg"]) == r["lam"] else ""
        lines.append(f"| {r['reg']} | {r['lam']:g} | {r['val_acc']:.4f} | {r['val_loss']:.4f} | {mark} |")
    return "\n".join(lines) + (f"\n\nOne run per lambda (seed {rows[0]['seed']}), chosen by final validation "
                               f"accuracy (ties: smaller lambda); the test split is never read.\nCommand: `{caption}`\n")


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot(table: list[dict[str, Any]], config: ClfConfig, n_seeds: int, path: Path, caption: str) -> None:
    """Test accuracy (x) vs certified robust accuracy (y), one panel per eps."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    eps = config.eps
    fig, axes = plt.subplots(1, len(eps), figsize=(4.2 * len(eps), 4.4), squeeze=False)
    markers = "osD^vP*Xh"
    for ax, e in zip(axes[0], eps):
        for i, row in enumerate(table):
            ax.errorbar(row["test_acc"], row[f"cert_acc@{e:g}"], xerr=row["test_acc_std"],
                        yerr=row[f"cert_acc@{e:g}_std"], fmt=markers[i % len(markers)], ms=7, capsize=3,
                        color=f"C{i}", label=f"{row['reg']} (λ={row['lam']:g})")
        ax.set_title(f"L2 radius ε = {e:g}")
        ax.set_xlabel("test accuracy")
        ax.set_ylabel(f"certified robust accuracy at ε = {e:g}")
        ax.set_ylim(-0.02, max(0.1, ax.get_ylim()[1]))  # accuracies: keep 0 in view, never below
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(f"Test vs certified robust accuracy: {config.data}, {config.model}, {config.train_size} training "
                 f"images, mean ± std over {n_seeds} seed(s)")
    fig.text(0.01, 0.01, f"Made by: {caption}", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)
