"""The figures of `lipkit reproduce`'s claims: every function draws one PNG from numbers a claim
measured; no measuring here.

The claim modules decide what a figure means (its caption, the constants of their rules, passed
in as arguments); this module only turns their numbers into pixels. matplotlib is imported when
a figure is drawn, not when a claim module is imported, so a missing plotting library costs the
figures and never a claim's numbers.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

D_COLORS = {"sn": "tab:blue", "gp": "tab:orange", "gp1": "tab:green"}  # claim (d)'s critics


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: files only, never needs a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ----------------------------------------------------------------------------- (b) convergence
def plot_convergence(path: Path, data: str, metric: str, curves: dict[str, list], summary: dict[str, Any],
                     n_seeds: int, *, threshold_slack: float) -> None:
    """Quality against generator steps (left) and wall-clock seconds (right), threshold dashed."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (method, points) in enumerate(curves.items()):
        steps, seconds, values = zip(*points)
        axes[0].plot(steps, values, marker="o", ms=3, color=f"C{i}", label=method)
        axes[1].plot(seconds, values, marker="o", ms=3, color=f"C{i}", label=method)
    for ax, xlabel in zip(axes, ("generator steps", "training wall-clock seconds (evaluation excluded)")):
        ax.axhline(summary["threshold"], ls="--", color="0.3", lw=1,
                   label=f"threshold {summary['threshold']:.3g} ({threshold_slack:g} x best final)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric.upper()} (lower is better)" if metric == "w1" else
                      "FID in lipkit's classifier features (lower is better)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Claim (b), {data}: {metric.upper()} during WGAN training per critic method "
                 f"(mean of {n_seeds} seed(s))")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_optimizer_grid(path: Path, data: str, per_setting: Mapping[str, Any], settings: Mapping[str, Any],
                        n_seeds: int) -> None:
    """SN-GAN Figure 1 style: per optimizer setting, one marker per method at its median final
    FID, a bar from its best to its worst seed; a cross on the top edge where a method diverged."""
    plt = _pyplot()
    methods = list(next(iter(per_setting.values()))["final"])
    fig, ax = plt.subplots(figsize=(11, 4.6))
    finite = [v for s in per_setting.values() for k in ("final_min", "final_max") for v in s[k].values()
              if math.isfinite(v)]
    diverged = any(not math.isfinite(v) for s in per_setting.values() for v in s["final"].values())
    top = max(finite) * 1.4 if finite else 1.0  # where a diverged method's cross goes
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(per_setting))]
        for x, s in zip(xs, per_setting.values()):
            median, lo, hi = s["final"][m], s["final_min"][m], s["final_max"][m]
            if math.isfinite(median):
                ax.plot([x, x], [lo, min(hi, top)], color=f"C{j}", lw=1.5, alpha=0.6)
                ax.plot(x, median, marker="os^vD<>p"[j % 8], color=f"C{j}", ms=7, ls="none")
            else:
                ax.plot(x, top, marker="x", color=f"C{j}", ms=9, mew=2, ls="none")
        ax.plot([], [], marker="os^vD<>p"[j % 8], color=f"C{j}", ls="none", label=m)
    labels = [f"{name}\nlr {o['lr']:g}, b=({o['betas'][0]:g}, {o['betas'][1]:g})\nn_dis {o['n_critic']}"
              for name, o in settings.items()]
    ax.set_xticks(range(len(per_setting)), labels, fontsize=8)
    ax.set(yscale="log", ylim=(None, top * 1.15 if diverged else None),
           ylabel="final FID in lipkit's classifier features (lower is better)",
           title=f"Claim (b) on SN-GAN's optimizer grid, {data}: median over {n_seeds} seeds, bar = best to worst seed, "
                 "x = diverged")
    ax.grid(alpha=0.3, axis="y", which="both")
    ax.legend(fontsize=8, ncol=len(methods), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- (c) step cost
def plot_step_cost(result: Mapping[str, Any], path: Path) -> None:
    """Horizontal bars of x plain per mode, one bar per batch size, a dashed line at 1.
    Public so a figure can be redrawn from a saved measurement (e.g. a GPU run's JSON)."""
    plt = _pyplot()
    modes, batches = list(result["modes"]), list(result["per_batch"])
    height = 0.8 / len(batches)
    fig, ax = plt.subplots(figsize=(8.5, 1.2 + 0.42 * len(modes) * max(1, len(batches) * 0.75)))
    for i, batch in enumerate(batches):
        values = [result["per_batch"][batch][m]["x_plain"] or 0.0 for m in modes]
        ys = [k + (i - (len(batches) - 1) / 2) * height for k in range(len(modes))]
        bars = ax.barh(ys, values, height=height * 0.95, color=f"C{i}", label=f"batch {batch}")
        for label in ax.bar_label(bars, labels=[f"{v:.2f}x" for v in values], padding=3, fontsize=9):
            label.set_bbox({"facecolor": "white", "edgecolor": "none", "pad": 0.5})  # legible over the 1.0 line
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1.2, label="plain step (1.0x)")
    ax.set_yticks(range(len(modes)), modes, fontsize=10)
    ax.invert_yaxis()  # the MODES order reads top to bottom, as in the table
    ax.set_xlabel("time per critic step / plain step (same call)", fontsize=10)
    ax.set_xlim(0, ax.get_xlim()[1] * 1.12)  # room for the bar labels
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=9, loc="best")
    ax.set_title(f"Claim (c): WGAN critic step cost per Lipschitz method\n{result['device']}, torch "
                 f"{result['torch']}, critic width {result['width']}, median of {result['repeats']} "
                 f"repeats x {result['steps']} steps", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- (d) many classes
def _panels(path: Path, panels: int, draw: Any) -> None:
    """One row of `panels` claim-(d) panels, `draw(axes)` fills them."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.6), squeeze=False)
    draw(axes[0])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_gradient_norms(raw: dict[str, Any], path: Path, *, methods: Sequence[str], regions: Sequence[str]) -> None:
    """Per set, box plots of ||grad_x f(x, y)|| per region and method (raw: set -> method -> region ->
    norms per seed), log scale, slope 1 dashed."""
    def draw(axes: Any) -> None:
        for ax, name in zip(axes, raw):
            for j, m in enumerate(methods):
                data = [torch.cat(raw[name][m][r]).numpy() for r in regions]
                box = ax.boxplot(data, positions=[i + (j - 1) * 0.27 for i in range(len(regions))], widths=0.22,
                                 whis=(0, 100), patch_artist=True, medianprops={"color": "black"})
                for patch in box["boxes"]:
                    patch.set_facecolor(D_COLORS[m])
                ax.plot([], [], color=D_COLORS[m], lw=6, label=m)  # boxplot makes no legend entry itself
            ax.axhline(1.0, ls="--", color="0.3", label="slope 1")
            ax.set_xticks(range(len(regions)), [r.replace(" ", "\n", 1) for r in regions], fontsize=8)
            ax.set(yscale="log", ylabel="||grad_x f(x, y)||_2 (log scale)", xlabel="where the critic is probed",
                   title=f"{name}: critic gradient norms")
            ax.legend(fontsize=8)

    _panels(path, len(raw), draw)


def plot_per_class_w1(sets: dict[str, Any], path: Path, *, methods: Sequence[str]) -> None:
    """Per set, mean and worst-class W1 bars per method, each labelled with its class accuracy."""
    def draw(axes: Any) -> None:
        for ax, (name, per) in zip(axes, sets.items()):
            for j, m in enumerate(methods):
                mean, worst = (per[m]["metrics"].get(k, math.nan) for k in ("w1_class_mean", "w1_class_max"))
                ax.bar(j - 0.2, mean, 0.4, color=D_COLORS[m], label="mean over classes" if j == 0 else None)
                ax.bar(j + 0.2, worst, 0.4, color=D_COLORS[m], alpha=0.4, hatch="//",
                       label="worst class" if j == 0 else None)
                ax.text(j, worst, f"acc {per[m]['metrics'].get('class_accuracy', float('nan')):.0%}", ha="center",
                        va="bottom", fontsize=8)
            ax.set_ylim(0, 1.15 * ax.get_ylim()[1])  # room for the accuracy labels
            ax.set_xticks(range(len(methods)), methods)
            ax.set(ylabel="per-class W1 to held-out real points", xlabel="critic",
                   title=f"{name}: per-class W1 (lower is better)")
            ax.legend(fontsize=8, loc="upper left")

    _panels(path, len(sets), draw)


def plot_class_samples(samples: dict[str, Any], name: str, path: Path, *, methods: Sequence[str]) -> None:
    """One panel per method: its generated points (samples[m] = (real, fake, labels)) coloured by
    the requested class, over the held-out real points in black."""
    def draw(axes: Any) -> None:
        for ax, m in zip(axes, methods):
            real, fake, labels = samples[m]
            k = int(labels.max()) + 1
            # Neighbouring labels sit next to each other on a ring: scatter their hues (37 is coprime to K
            # unless K is a multiple of 37) so a sample drawn at the neighbour's mode shows.
            hue = (labels * 37 % max(k, 2)).float() / max(k, 2)
            ax.scatter(real[:, 0], real[:, 1], s=1, c="black", alpha=0.3, label="real (held out)")
            ax.scatter(fake[:, 0], fake[:, 1], s=2, c=hue.numpy(), cmap="hsv", vmin=0, vmax=1, label="generated")
            low, high = real.min(0).values - 0.4, real.max(0).values + 0.4  # frame the data, not outliers
            ax.set(xlim=(float(low[0]), float(high[0])), ylim=(float(low[1]), float(high[1])), xlabel="x1",
                   ylabel="x2", title=f"{name}, {m}: final samples", aspect="equal")
            ax.legend(fontsize=7, markerscale=4, loc="upper right")

    _panels(path, len(methods), draw)


# ----------------------------------------------------------------------------- (trap)
def plot_trap_quality(numbers: dict[str, Any], path: Path, *, methods: Sequence[str], late_fraction: float) -> None:
    """Per data set, each method's quality curve (seed mean, band: seed min-max), the late stage shaded."""
    plt = _pyplot()
    entries = numbers["data"]
    fig, axes = plt.subplots(1, len(entries), figsize=(6 * len(entries), 4.2), squeeze=False)
    for ax, (data, entry) in zip(axes[0], entries.items()):
        for method, color in zip(methods, ("tab:blue", "tab:red")):
            m = entry["methods"][method]
            ax.plot(m["steps"], m["curve_mean"], marker="o", ms=3, color=color, label=f"{method} (mean)")
            ax.fill_between(m["steps"], m["curve_min"], m["curve_max"], color=color, alpha=0.2)
        steps = entry["methods"]["sn"]["steps"]
        first_late = steps[-max(1, round(len(steps) * late_fraction))]
        ax.axvspan(first_late, steps[-1], color="0.9", zorder=0, label="late stage (rule)")
        ax.set(xlabel="generator step", ylabel=entry["metric"], title=f"{data}: band = seed min-max")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_trap_gap(numbers: dict[str, Any], path: Path, *, material_gap: float) -> None:
    """Per data set: cosine and relative gradient difference per layer (left), the gap along training (right)."""
    plt = _pyplot()
    entries = numbers["data"]
    fig, axes = plt.subplots(len(entries), 2, figsize=(11, 4 * len(entries)), squeeze=False)
    for (left, right), (data, entry) in zip(axes, entries.items()):
        layers = entry["gap"]["layers"]
        x = torch.arange(len(layers)).numpy()
        for offset, key, color in ((-0.2, "cosine", "tab:green"), (0.2, "rel_diff", "tab:purple")):
            values = [statistics.fmean(row[key]) for row in layers]
            lo = [v - min(row[key]) for v, row in zip(values, layers)]
            hi = [max(row[key]) - v for v, row in zip(values, layers)]
            left.bar(x + offset, values, 0.4, yerr=[lo, hi], color=color, label=key)
        left.axhline(material_gap, color="tab:purple", ls="--", lw=1, label=f"material rel_diff {material_gap}")
        left.set_xticks(x, [f"{row['layer']}\n{'x'.join(map(str, row['shape']))}" for row in layers])
        left.set(xlabel="critic layer (weight shape)", ylim=(0, 1.3),
                 title=f"{data}: final sn-project critic (bars: seed mean, min-max)")
        left.legend(fontsize=8, loc="upper center", ncol=3)
        right.plot(entry["gap"]["steps"], entry["gap"]["over_training"], marker="o", color="tab:purple")
        right.axhline(material_gap, color="tab:purple", ls="--", lw=1)
        right.set(xlabel="generator step (checkpoint)", ylabel="median rel_diff over layers",
                  title="gap along training (mean over seeds)", ylim=(0, None))
        right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
