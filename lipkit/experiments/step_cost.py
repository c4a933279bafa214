"""Claim (c): "GP is slower per step than SN, because of the second-order gradient."

One WGAN critic step is timed under each Lipschitz method, as a ratio to a plain step
measured in the same call: the critic, the modes and the timing discipline are
step_timing.py's, shared with benchmarks/bench_critic_step.py and `lipkit bench`, which
print the same measurement; run() turns it into the claim's verdict.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .common import ClaimResult, Context, Figure, fmt, markdown_table, verdict_of
from .plots import plot_step_cost
from .step_timing import MODES, PLAIN, is_cuda, measure

SN_MODES = ("sn", "torch-sn")  # the two SN implementations the claim is read on
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
    "quick": {"width": 16, "batches": [64], "steps": 2, "warmup": 1, "repeats": 3, "modes": list(MODES),
              "threads": None, "cpu": {"threads": 1}},
    "full": {
        "width": 64, "batches": [64, 256], "steps": 50, "warmup": 10, "repeats": 3, "modes": list(MODES),
        "threads": None, "cpu": {"width": 32, "batches": [64], "steps": 5, "warmup": 2, "threads": 1},
    },
}


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
    ratios between modes of one batch size are read). Needs "gp", "sn", "torch-sn"."""
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
    read = "; ".join(f"B={b}: GP/lipkit-SN {r['sn']:.2f}x, GP/torch-SN {r['torch-sn']:.2f}x"
                     for b, r in ratios.items())
    why = {"supported": f"GP >= {SLOWER}x both SN steps at every batch size",
           "not supported": f"GP <= {NOT_SLOWER}x both SN steps at every batch size",
           "mixed": f"neither GP >= {SLOWER}x both SNs everywhere nor <= {NOT_SLOWER}x both everywhere"}[verdict]
    return verdict, f"{read} ({why})."


def derived_ratios(per_batch: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """Per batch: GP over each SN, and each method's cost over plain (the second-order
    gradient's extra cost is gp/plain; sn+gp over sn is the same on top of SN)."""
    out: dict[str, dict[str, float | None]] = {}
    for batch, rows in per_batch.items():
        sec = {m: row["seconds"] for m, row in rows.items()}
        entry: dict[str, float | None] = {f"gp/{sn}": _ratio(sec, "gp", sn) for sn in SN_MODES}
        for mode in ("gp", "gp1", *SN_MODES, "sn-conv"):
            entry[f"{mode}/plain"] = _ratio(sec, mode, PLAIN)
        entry["sn+gp/sn"] = _ratio(sec, "sn+gp", "sn")
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
    gaps = "; ".join(f"B={b}: GP {fmt(r['gp/sn'])}x lipkit SN, {fmt(r['gp/torch-sn'])}x torch SN"
                     for b, r in ratios.items())
    return (f"Time of one WGAN critic step per Lipschitz method, as a multiple of a plain step timed in "
            f"the same call (median of {result['repeats']} interleaved repeats of {result['steps']} steps; "
            f"{result['device']}, torch {result['torch']}, critic width {result['width']}). Bars right of the "
            f"dashed line cost more than plain. {gaps}: the verdict is '{verdict}'.")


def _notes(result: Mapping[str, Any], ratios: Mapping[str, Mapping[str, Any]]) -> list[str]:
    extra = "; ".join(f"B={b}: GP {fmt(r['gp/plain'])}x plain, lipkit SN {fmt(r['sn/plain'])}x, "
                      f"torch SN {fmt(r['torch-sn/plain'])}x" for b, r in ratios.items())
    return [
        f"Cost over a plain step ({extra}). GP's extra cost is a third critic forward on the "
        "interpolates plus the double backward through it; the measurement does not split the two, "
        "so the claim's 'because of the second-order gradient' is read off GP/plain, not isolated.",
        f"Measured on {result['device']}: on a CPU the arithmetic dominates a step, on a GPU host-side "
        "overhead (kernel launches, torch's parametrization machinery) can, so the verdict may differ "
        "by device (a PyTorch-only anchor on an H200, torch 2.11, B=64: torch SN 3.04x plain, GP 2.09x).",
    ]
