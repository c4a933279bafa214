"""Claim (c): "GP is slower per step than SN, because of the second-order gradient."

One WGAN critic step is timed under each Lipschitz method, as a ratio to a plain step
measured in the same call. The critic is the DCGAN-style network of the GPU anchor
benchmark (lipkit.examples.dcgan_critic: 7 convs up to 8*width channels + linear,
32x32x3 inputs, Adam). One step = D(fake).mean() - D(real).mean() [+ 10 * penalty],
backward, optimizer step [, projection].

Timing discipline: the modes are interleaved over repeats (machine drift hits all alike),
each repeat builds a fresh critic, times `steps` steps after `warmup` untimed ones, and
the reported cost is the median of the repeats. Ratios are only ever taken within one
measure() call. benchmarks/bench_critic_step.py and `lipkit bench` print the same
measurement; run() turns it into the claim's verdict.
"""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm as torch_sn

from .. import constraints, penalties
from ..examples import dcgan_critic
from .common import ClaimResult, Context, Figure, fmt, markdown_table, verdict_of

MODES = (
    "plain", "clip", "torch-sn", "lipkit-sn", "lipkit-sn-conv",
    "gp", "gp1", "lipkit-sn+gp", "torch-sn+gp",
)
GP_LAMBDA = 10.0
SN_MODES = ("lipkit-sn", "torch-sn")  # the two SN implementations the claim is read on
SLOWER = 1.2  # GP must cost at least this many SN steps for "slower" (below: noise or a tie)
NOT_SLOWER = 1.0  # GP at most this many SN steps: SN as slow or slower

TITLE = "(c) GP is slower per step than SN, because of the second-order gradient."
RULE = (
    "One WGAN critic step is timed per mode (median of interleaved repeats, one call). "
    f"Supported if at every measured batch size GP costs >= {SLOWER}x a lipkit-SN step AND "
    f">= {SLOWER}x a torch-SN step (torch.nn.utils.parametrizations.spectral_norm); not "
    f"supported if at every batch size GP costs <= {NOT_SLOWER}x both SN steps (SN as slow "
    "or slower); mixed otherwise (e.g. GP slower than one SN implementation but not the "
    "other, or a gap under 1.2x). GP/plain and SN/plain are reported as the cost of the "
    "second-order gradient and of the normalization, not used by the rule."
)

# "full" holds the GPU sizes (the anchor's width 64); on another device the "cpu" entry
# overrides them, because one width-64 step at B=256 takes seconds on a 2-core CPU.
# threads=1 on a CPU: on a shared machine intra-op threads wait on one another, so one
# descheduled thread stalls a whole step (seen here: a 0.07 s step took 2.8 s with 2 threads
# beside other jobs); one thread makes contention cost in proportion, and the claim reads
# ratios between modes, not absolute speed.
SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {"width": 16, "batches": [64], "steps": 3, "warmup": 1, "repeats": 3, "modes": list(MODES),
              "threads": None, "cpu": {"threads": 1}},
    "full": {
        "width": 64, "batches": [64, 256], "steps": 50, "warmup": 10, "repeats": 3, "modes": list(MODES),
        "threads": None, "cpu": {"width": 32, "batches": [64], "steps": 5, "warmup": 2, "threads": 1},
    },
}


# ---------------------------------------------------------------------------- timing core


def is_cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"


def device_name(device: str) -> str:
    if is_cuda(device):
        return torch.cuda.get_device_name(torch.device(device))
    threads = torch.get_num_threads()
    return f"{device} ({threads} thread{'s' if threads != 1 else ''})"


def build(mode: str, width: int, device: str, real: torch.Tensor) -> nn.Module:
    """The benchmark critic on `device`, constrained as `mode` says (seed 0: every mode
    starts from the same weights)."""
    critic = dcgan_critic(width=width).to(device)
    if mode.startswith("torch-sn"):
        for m in critic.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                torch_sn(m)
    elif mode.startswith("lipkit-sn-conv"):
        constraints.constrain(critic, "spectral", operator="conv")
        critic(real[:1])  # the conv operator learns its input shape from a first forward
    elif mode.startswith("lipkit-sn"):
        constraints.constrain(critic, "spectral")
    elif mode == "clip":
        constraints.constrain(critic, "clip", mode="project", c=0.01)
    return critic


def make_step(mode: str, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> Callable[[], None]:
    """One critic update of `mode` on fixed batches, as a closure (Adam as in WGAN-GP)."""
    opt = torch.optim.Adam(critic.parameters(), 2e-4, betas=(0.0, 0.9))
    with_gp = mode in ("gp", "gp1") or mode.endswith("+gp")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = critic(fake).mean() - critic(real).mean()
        if with_gp:
            loss = loss + GP_LAMBDA * penalties.gradient_penalty(critic, real, fake, one_sided=mode == "gp1")
        loss.backward()
        opt.step()
        if mode == "clip":
            constraints.project_(critic)

    return step


def _sync(device: str) -> None:
    # CUDA launches are asynchronous: without a sync the clock measures the queueing only.
    if is_cuda(device):
        torch.cuda.synchronize(torch.device(device))


def batch_pair(batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed (real, fake) batches of 32x32x3 noise: the step's cost does not depend on data."""
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    fake = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    return real, fake


def time_steps(step: Callable[[], None], steps: int, warmup: int, device: str) -> float:
    """Seconds per call of `step` (mean over `steps` timed calls, after `warmup` untimed)."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def time_mode(mode: str, width: int, batch: int, steps: int, warmup: int, device: str) -> float:
    """Seconds per step of `mode` on a freshly built critic (one-off use; measure() reuses
    one critic per mode, since building is no part of a step's cost)."""
    real, fake = batch_pair(batch, device)
    critic = build(mode, width, device, real)
    return time_steps(make_step(mode, critic, real, fake), steps, warmup, device)


@contextmanager
def _cudnn_benchmark(device: str) -> Iterator[None]:
    """cudnn autotuning on CUDA for the measurement only (shapes are fixed, so the tuned
    kernels are what a training run gets), restored afterwards."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = saved or is_cuda(device)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def _check_sizes(batches: Sequence[int], steps: int, warmup: int, repeats: int, modes: Sequence[str],
                 device: str) -> None:
    try:
        torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"{device!r} is not a device: {err}") from None
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    if not modes or not batches:
        raise ValueError("give at least one mode and one batch size")
    if min(batches) < 1 or steps < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need batch, steps, repeats >= 1 and warmup >= 0 "
                         f"(got batches={list(batches)}, steps={steps}, repeats={repeats}, warmup={warmup})")
    if is_cuda(device) and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA device")


@contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count for the measurement only (None: left as it is)."""
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def measure(width: int, batches: Sequence[int], steps: int, warmup: int, repeats: int,
            modes: Sequence[str] = MODES, device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Time every mode at every batch size, modes interleaved within each repeat.
    threads: torch's CPU thread count during the measurement (None: as set).

    Returns {"device", "torch", "width", "batches", "steps", "warmup", "repeats", "modes",
    "per_batch": {"<batch>": {mode: {"seconds": median s/step, "ms": the same in ms,
    "x_plain": median / plain's median (None without "plain"), "repeats_s": [...]}}}}.
    Batch keys are strings so the dict is the same after a JSON round trip.
    """
    modes = list(modes)
    _check_sizes(batches, steps, warmup, repeats, modes, device)
    per_batch: dict[str, dict[str, dict[str, Any]]] = {}
    # One critic per mode for the whole call: building (lipkit's SN runs power iteration to
    # convergence at registration, seconds for the conv operator on a CPU) is not a step's
    # cost, and the input shape the conv operator learns does not depend on the batch size.
    critics: dict[str, nn.Module] = {}
    with _cudnn_benchmark(device), _threads(threads):
        for batch in batches:
            real, fake = batch_pair(batch, device)
            times: dict[str, list[float]] = {m: [] for m in modes}
            for _ in range(repeats):
                for mode in modes:
                    if mode not in critics:
                        critics[mode] = build(mode, width, device, real)
                    step = make_step(mode, critics[mode], real, fake)  # fresh Adam state per repeat
                    times[mode].append(time_steps(step, steps, warmup, device))
            per_batch[str(batch)] = _summarize(times)
        name = device_name(device)  # inside: it names the thread count the times were taken with
    return {"device": name, "torch": torch.__version__, "width": width,
            "batches": list(batches), "steps": steps, "warmup": warmup, "repeats": repeats,
            "modes": modes, "per_batch": per_batch}


def _summarize(times: Mapping[str, list[float]]) -> dict[str, dict[str, Any]]:
    base = statistics.median(times["plain"]) if "plain" in times else None
    out = {}
    for mode, values in times.items():
        med = statistics.median(values)
        out[mode] = {"seconds": med, "ms": med * 1e3, "x_plain": med / base if base else None,
                     "repeats_s": list(values)}
    return out


def format_tables(result: Mapping[str, Any]) -> str:
    """The benchmark's printout: a header line, then one markdown table per batch size."""
    lines = [f"torch {result['torch']} on {result['device']}; critic width {result['width']}; median of "
             f"{result['repeats']} interleaved repeats of {result['steps']} steps", ""]
    for batch, modes in result["per_batch"].items():
        lines += [f"| mode (B={batch}) | ms/step | x plain |", "|---|---|---|"]
        for mode, row in modes.items():
            ratio = f"{row['x_plain']:.2f}" if row["x_plain"] is not None else "-"
            lines.append(f"| {mode} | {row['ms']:.1f} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def legacy_json(result: Mapping[str, Any]) -> dict[str, Any]:
    """What `bench_critic_step.py --json` always wrote (benchmarks/results/critic_step_cpu.json):
    its "ms" entries hold SECONDS per step, kept so old and new files compare; the full
    measurement follows under "measure"."""
    flat = {f"B{b}_{m}": row["seconds"] for b, modes in result["per_batch"].items() for m, row in modes.items()}
    return {"device": result["device"], "torch": result["torch"], "width": result["width"], "ms": flat,
            "measure": dict(result)}


# ---------------------------------------------------------------------------- the claim


def settings_for(profile: str, device: str) -> dict[str, Any]:
    """SETTINGS[profile] with its "cpu" overrides applied when `device` is not CUDA."""
    if profile not in SETTINGS:
        raise ValueError(f"profile must be one of {list(SETTINGS)}, got {profile!r}")
    base = {k: v for k, v in SETTINGS[profile].items() if k != "cpu"}
    if not is_cuda(device):
        base.update(SETTINGS[profile].get("cpu", {}))
    return base


def decide(per_batch: Mapping[Any, Mapping[str, float]]) -> tuple[str, str]:
    """The verdict of RULE from per-batch, per-mode step costs (seconds, or x plain: only
    ratios between modes of one batch size are read). Needs "gp", "lipkit-sn", "torch-sn"."""
    if not per_batch:
        raise ValueError("no batch size measured")
    ratios = {}
    for batch, cost in per_batch.items():
        missing = [m for m in ("gp", *SN_MODES) if m not in cost]
        if missing:
            raise ValueError(f"batch {batch}: the rule needs the modes {missing}")
        ratios[batch] = {sn: cost["gp"] / cost[sn] for sn in SN_MODES}
    slower = all(r[sn] >= SLOWER for r in ratios.values() for sn in SN_MODES)
    not_slower = all(r[sn] <= NOT_SLOWER for r in ratios.values() for sn in SN_MODES)
    verdict = verdict_of(slower, not_slower)
    read = "; ".join(f"B={b}: GP/lipkit-SN {r['lipkit-sn']:.2f}x, GP/torch-SN {r['torch-sn']:.2f}x"
                     for b, r in ratios.items())
    why = {"supported": f"GP >= {SLOWER}x both SN steps at every batch size",
           "not supported": f"GP <= {NOT_SLOWER}x both SN steps at every batch size",
           "mixed": f"neither GP >= {SLOWER}x both SNs everywhere nor <= {NOT_SLOWER}x both everywhere"}[verdict]
    return verdict, f"{read} ({why})."


def derived_ratios(per_batch: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """Per batch: GP over each SN, and each method's cost over plain (the second-order
    gradient's extra cost is gp/plain; lipkit-sn+gp over lipkit-sn is the same on top of SN)."""
    out: dict[str, dict[str, float | None]] = {}
    for batch, rows in per_batch.items():
        sec = {m: row["seconds"] for m, row in rows.items()}
        entry: dict[str, float | None] = {f"gp/{sn}": _ratio(sec, "gp", sn) for sn in SN_MODES}
        for mode in ("gp", "gp1", *SN_MODES, "lipkit-sn-conv"):
            entry[f"{mode}/plain"] = _ratio(sec, mode, "plain")
        entry["lipkit-sn+gp/lipkit-sn"] = _ratio(sec, "lipkit-sn+gp", "lipkit-sn")
        entry["torch-sn+gp/torch-sn"] = _ratio(sec, "torch-sn+gp", "torch-sn")
        out[batch] = entry
    return out


def _ratio(sec: Mapping[str, float], top: str, bottom: str) -> float | None:
    return sec[top] / sec[bottom] if top in sec and bottom in sec else None


def claim_table(result: Mapping[str, Any]) -> str:
    """mode | ms/step and x plain for each batch size, side by side (the anchor's layout)."""
    batches = list(result["per_batch"])
    header = ["mode"] + [h for b in batches for h in (f"B={b} ms/step", f"B={b} x plain")]
    rows = [[mode] + [v for b in batches for v in (result["per_batch"][b][mode]["ms"],
                                                  result["per_batch"][b][mode]["x_plain"])]
            for mode in result["modes"]]
    return markdown_table(header, rows)


def plot_step_cost(result: Mapping[str, Any], path: Path) -> None:
    """Horizontal bars of x plain per mode, one bar per batch size, a dashed line at 1.
    Public so a figure can be redrawn from a saved measurement (e.g. a GPU run's JSON)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

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


def run(ctx: Context) -> ClaimResult:
    """Measure, decide, save the raw measurement under runs/c/ and draw the figure."""
    settings = settings_for(ctx.profile, ctx.device)
    result = measure(settings["width"], settings["batches"], settings["steps"], settings["warmup"],
                     settings["repeats"], settings["modes"], ctx.device, settings["threads"])
    verdict, decided_by = decide({b: {m: r["seconds"] for m, r in rows.items()}
                                  for b, rows in result["per_batch"].items()})
    numbers = {**result, "ratios": derived_ratios(result["per_batch"])}
    runs_dir = ctx.runs_dir("c")
    runs_dir.mkdir(parents=True, exist_ok=True)
    # Saved before plotting, so a missing plotting library never loses a device's numbers.
    (runs_dir / "step_cost.json").write_text(json.dumps(numbers, indent=1))
    claim = ClaimResult(key="c", title=TITLE, verdict=verdict, rule=RULE, decided_by=decided_by,
                        numbers=numbers, tables=[claim_table(result)],
                        runs=[str(runs_dir.relative_to(ctx.out))], settings={**settings, "device": ctx.device},
                        notes=_notes(result, numbers["ratios"]))
    figure = Path("figures") / "c_step_cost.png"
    try:
        plot_step_cost(result, ctx.out / figure)
        claim.figures.append(Figure(str(figure), _caption(result, verdict, numbers["ratios"])))
    except ImportError as err:
        claim.notes.append(f"figure not drawn ({err}); redraw it with plot_step_cost from runs/c/step_cost.json")
    return claim


def _caption(result: Mapping[str, Any], verdict: str, ratios: Mapping[str, Mapping[str, Any]]) -> str:
    gaps = "; ".join(f"B={b}: GP {fmt(r['gp/lipkit-sn'])}x lipkit SN, {fmt(r['gp/torch-sn'])}x torch SN"
                     for b, r in ratios.items())
    return (f"Time of one WGAN critic step per Lipschitz method, as a multiple of a plain step timed in "
            f"the same call (median of {result['repeats']} interleaved repeats of {result['steps']} steps; "
            f"{result['device']}, torch {result['torch']}, critic width {result['width']}). Bars right of the "
            f"dashed line cost more than plain. {gaps}: the verdict is '{verdict}'.")


def _notes(result: Mapping[str, Any], ratios: Mapping[str, Mapping[str, Any]]) -> list[str]:
    extra = "; ".join(f"B={b}: GP {fmt(r['gp/plain'])}x plain, lipkit SN {fmt(r['lipkit-sn/plain'])}x, "
                      f"torch SN {fmt(r['torch-sn/plain'])}x" for b, r in ratios.items())
    return [
        f"Cost over a plain step ({extra}). GP's extra cost is a third critic forward on the "
        "interpolates plus the double backward through it; the measurement does not split the two, "
        "so the claim's 'because of the second-order gradient' is read off GP/plain, not isolated.",
        f"Measured on {result['device']}: on a CPU the arithmetic dominates a step, on a GPU host-side "
        "overhead (kernel launches, torch's parametrization machinery) can, so the verdict may differ "
        "by device (a PyTorch-only anchor on an H200, torch 2.11, B=64: torch SN 3.04x plain, GP 2.09x).",
    ]
