"""Side-by-side views of finished runs: a markdown table of final metrics and a PNG of a
metric's curve against steps and wall-clock seconds.

    lipkit summarize runs/g25_sn runs/g25_gp ...          (markdown table on stdout)
    lipkit plot runs/a runs/b --metric w1 --out curves.png

Both read only what the runs wrote (summary.json, metrics.jsonl), so a figure can always
be traced back to the runs and the command that made them.
"""
from __future__ import annotations

import json
from pathlib import Path

SUMMARY_COLUMNS = ("w1", "modes_covered", "hq_percent", "fid", "kid", "test_acc", "critic_lower_bound",
                   "critic_certified_bound")


def read_run(folder: str | Path) -> tuple[dict, list[dict]]:
    """(summary.json, metrics.jsonl rows) of a finished run folder, with a clear error."""
    folder = Path(folder)
    summary_path, metrics_path = folder / "summary.json", folder / "metrics.jsonl"
    if not summary_path.is_file() or not metrics_path.is_file():
        raise ValueError(f"{folder} is not a finished lipkit run (needs summary.json and metrics.jsonl)")
    return json.loads(summary_path.read_text()), read_metrics(folder)


def read_metrics(folder: str | Path) -> list[dict]:
    """The metrics.jsonl rows of a run folder (one dict per logged step)."""
    path = Path(folder) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _label(folder: str | Path, summary: dict) -> str:
    config = summary.get("config", {})
    method = config.get("critic") or config.get("reg") or Path(folder).name
    return f"{method} ({Path(folder).name})"


def summary_table(folders: list[str]) -> str:
    """Markdown table: one row per run, final metrics present in any run, steps and time."""
    runs = [(f, *read_run(f)) for f in folders]
    columns = [c for c in SUMMARY_COLUMNS
               if any(c in {**s.get("final", {}), **(s.get("finish") or {})} for _, s, _ in runs)]
    head = ["run", "steps", *columns, "train s", "s/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for folder, summary, rows in runs:
        final = {**summary.get("final", {}), **(summary.get("finish") or {})}
        wall = rows[-1].get("wall_seconds", float("nan")) if rows else float("nan")
        cells = [_label(folder, summary), str(summary.get("steps", "?"))]
        cells += [_fmt(final.get(c)) for c in columns]
        cells += [f"{wall:.0f}", f"{wall / max(summary.get('steps', 1), 1):.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot_curves(folders: list[str], metric: str, out: str, title: str | None = None) -> None:
    """metric against generator/optimizer steps (left) and wall-clock seconds (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    found = False
    for folder in folders:
        summary, rows = read_run(folder)
        points = [(r["step"], r.get("wall_seconds", 0.0), r[metric]) for r in rows if metric in r]
        if not points:
            continue
        found = True
        steps, seconds, values = zip(*points)
        label = _label(folder, summary)
        axes[0].plot(steps, values, marker="o", label=label)
        axes[1].plot(seconds, values, marker="o", label=label)
    if not found:
        raise ValueError(f"no run in {folders} logged the metric {metric!r}")
    for ax, xlabel in zip(axes, ("step", "wall-clock seconds")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or f"{metric} during training")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
