"""What every claim experiment of `lipkit reproduce` shares: its context, its result, the
verdict vocabulary, and a reused-or-trained run helper.

A claim module (generalization.py, convergence.py, step_cost.py, many_classes.py, trap.py)
exposes
    SETTINGS: dict[str, dict]          # "quick" and "full": every size of the experiment
    RULE: str                          # the verdict rule, in words, fixed before any run
    def run(ctx: Context) -> ClaimResult
and decides its verdict with a function of the measured numbers alone (no hand edits).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..train.reuse import run_or_reuse  # noqa: F401  (claims import it from here)

PROFILES = ("quick", "full")
VERDICTS = ("supported", "not supported", "mixed")


@dataclass
class Context:
    """Where and how big: every claim reads its sizes from SETTINGS[ctx.profile]."""

    out: Path  # the reproduce output folder; claim runs go to out/runs/<claim>/...
    profile: str = "quick"  # quick | full
    device: str = "cpu"
    progress: bool = True  # per-run tqdm bars (the claim loop shows its own)
    data: tuple[str, ...] | None = None  # only the panels on these data sets (claim b); None: all

    def runs_dir(self, claim: str) -> Path:
        return self.out / "runs" / claim


@dataclass
class Figure:
    """A PNG written under ctx.out and the caption printed under it in REPORT.md."""

    path: str  # relative to ctx.out
    caption: str


@dataclass
class ClaimResult:
    """One claim's outcome: the verdict, the rule that decided it, and the evidence."""

    key: str  # a | b | c | d | trap
    title: str  # the claim, in the seed's words
    verdict: str  # one of VERDICTS
    rule: str  # how the verdict is decided (the module's RULE)
    decided_by: str  # the numbers the rule read, in one sentence
    numbers: dict[str, Any]  # every number the report quotes (JSON-able), nested as the claim likes
    tables: list[str] = field(default_factory=list)  # markdown blocks
    figures: list[Figure] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # run folders (relative to ctx.out) the numbers come from
    settings: dict[str, Any] = field(default_factory=dict)  # SETTINGS[profile] as used
    seconds: float = 0.0  # wall time of the claim, filled by reproduce()
    notes: list[str] = field(default_factory=list)  # caveats printed under the verdict

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def to_json(self) -> dict[str, Any]:
        return _clean(dataclasses.asdict(self))


def _clean(value: Any) -> Any:
    """JSON-able copy: NaN/inf -> None (json.dumps would write bare NaN), paths and tuples
    -> str and list, anything else unknown -> str."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return _clean(value.item())
    return str(value)


def verdict_of(supported: bool, refuted: bool) -> str:
    """supported / not supported / mixed from the two sides of a rule (both or neither: mixed)."""
    if supported and not refuted:
        return "supported"
    if refuted and not supported:
        return "not supported"
    return "mixed"


def first_reach(points: list[tuple[int, float, float]], threshold: float) -> tuple[int | None, float | None]:
    """(step, seconds) of the first (step, seconds, quality) point at or below threshold, or
    (None, None): claim (b)'s steps-to-threshold, for its curve and grid panels alike."""
    for step, seconds, value in points:
        if value <= threshold:
            return step, seconds
    return None, None


def metric_of(data: str) -> str:
    """The GAN quality metric of a data set: exact W1 on 2-D data, FID on images (lower is better)."""
    from ..data import get_data

    return "w1" if get_data(data).is_toy else "fid"


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a report table: 3 significant digits, '-' for None/NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def load_gan_task(config: Any) -> Any:
    """The GanTask of a finished (or checkpointed) train-gan run, at its newest checkpoint:
    critic and generator as they ended, for measurements made after training."""
    from ..train.checkpoint import load_latest
    from ..train.gan import GanTask, resolve_config

    task = GanTask(resolve_config(config))
    state, _ = load_latest(Path(config.out))
    task.load_state_dict(state["task"])
    return task
