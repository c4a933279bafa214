"""The run skeleton shared by every lipkit training command: config -> build -> loop ->
evaluate -> checkpoint, reading top to bottom (nanoGPT style).

A training job is a `Task` (models, optimizers, data and RNG streams built in one place by a
`build(config)` function); `run` owns everything else:
- the output folder: config.json (the complete config; `load_config` turns it back into
  the dataclass, so reloading it reproduces the run), metrics.jsonl (one JSON row per
  logged step), ckpt-*.pt (atomic, the previous one kept), the task's PNGs, summary.json;
- exact resume: the task's state, every global RNG and the step counter are checkpointed;
  metrics rows logged after the checkpoint are dropped so the resumed log has no duplicates;
- the NaN guard: a non-finite loss stops the run with NonFiniteLossError naming the step,
  and nothing is saved after it (the last good checkpoint stays the newest);
- rank 0 alone writes files and shows progress (torchrun-ready); no module-level state.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

import torch
from tqdm.auto import tqdm

from .checkpoint import CheckpointError, load_latest, rng_state, save_checkpoint, set_rng_state

# Fields a resumed run may change: how long it runs, how often it reports, where it runs.
RESUMABLE_CHANGES = ("steps", "eval_every", "checkpoint_every", "log_every", "progress", "device", "out")


@dataclass
class RunConfig:
    """Settings of the run itself; a task's config subclasses this and adds its own fields."""

    out: str = "runs/lipkit"  # output folder (config.json, metrics.jsonl, ckpt-*.pt, PNGs, summary.json)
    steps: int = 1000  # training steps to reach (a GAN counts generator steps)
    seed: int = 0  # seeds model init, data order and every noise stream
    device: str = "cpu"  # torch device for models and batches
    eval_every: int = 100  # evaluate (metrics + sample PNG) every this many steps; always at the end
    checkpoint_every: int = 100  # checkpoint every this many steps; always at the end
    keep_checkpoints: int = 2  # newest checkpoints kept, so a bad write never loses the run
    log_every: int = 1  # append a metrics.jsonl row every this many steps
    progress: bool = True  # tqdm progress bar with live metrics


class Task(Protocol):
    """What a training job provides to `run`."""

    def train_step(self, step: int) -> dict[str, float]:
        """Take training step `step` (1-based); return its scalar losses and statistics."""

    def evaluate(self, step: int, folder: Path) -> dict[str, float]:
        """Metrics at `step`; may write files (sample PNGs) into `folder`. Rank 0 only."""

    def finish(self, folder: Path) -> dict[str, Any]:
        """End-of-run extras for summary.json (slow metrics such as certified bounds)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: models, optimizers, generators, penalties."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite: the run stopped without saving."""


C = TypeVar("C", bound=RunConfig)


def is_main_process() -> bool:
    """Rank 0 of a torch.distributed job, or the only process."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def check_config(config: RunConfig) -> None:
    """Reject run settings that cannot work, naming the value and what is allowed."""
    for name in ("steps", "keep_checkpoints", "log_every"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    for name in ("eval_every", "checkpoint_every", "seed"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0 (0: only at the end), got {value!r}")


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True) + "\n")


def load_config(cls: type[C], source: str | Path | dict[str, Any]) -> C:
    """A config dataclass from config.json (or a dict); unknown keys are an error."""
    data = json.loads(Path(source).read_text()) if not isinstance(source, dict) else dict(source)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"config keys {unknown} are not fields of {cls.__name__}; allowed: {sorted(names)}")
    for f in dataclasses.fields(cls):  # JSON has no tuples: restore them where the default is one
        if isinstance(data.get(f.name), list) and "tuple" in str(f.type):
            data[f.name] = tuple(data[f.name])
    return cls(**data)


def field_help(cls: type) -> dict[str, str]:
    """{field: its trailing comment} from the class source (and its bases): the one place
    a default is documented is also the CLI's help text."""
    import inspect
    import re

    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for name, comment in re.findall(r"^\s+(\w+): [^=\n]+=[^#\n]*#\s*(.+)$", source, re.MULTILINE):
            found[name] = comment.strip()
    return found


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def _check_same_run(saved: dict[str, Any], config: RunConfig, path: Path) -> None:
    now = dataclasses.asdict(config)
    changed = sorted(k for k in set(saved) | set(now)
                     if k not in RESUMABLE_CHANGES and _jsonable(saved.get(k)) != _jsonable(now.get(k)))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume {path} with a different config ({details}); only "
                         f"{RESUMABLE_CHANGES} may change on resume")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint we resume from (the resumed run redoes them)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError):
            continue  # a row cut off by a kill
    path.write_text("".join(line + "\n" for line in keep))


def run(config: C, build: Callable[[C], Task], *, resume: bool = False) -> dict[str, Any]:
    """Train `build(config)` for config.steps steps in config.out; returns the summary.

    resume=True continues from the newest readable checkpoint in config.out (same next
    losses as an uninterrupted run); otherwise config.out must not hold a run already.
    """
    check_config(config)
    out, main = Path(config.out), is_main_process()
    state = None
    if resume:
        state, ckpt = load_latest(out)
        _check_same_run(state["config"], config, ckpt)
    elif any(out.glob("ckpt-*.pt")):
        raise ValueError(f"{out} already holds a run (ckpt-*.pt): pass resume=True (--resume) to "
                         "continue it, or choose another output folder")
    task = build(config)  # seeds the model init: after it, the checkpoint's RNG state wins
    progress = _Progress(start=0, wall=0.0, last_eval={})
    if state is not None:
        task.load_state_dict(state["task"])
        set_rng_state(state["rng"])
        progress = _Progress(state["step"], state["wall_seconds"], state.get("last_eval", {}))
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.json")
        _truncate_metrics(out / "metrics.jsonl", progress.start) if resume else (out / "metrics.jsonl").write_text("")
    _loop(config, task, out, progress)
    return _summarize(config, task, out, progress, (state or {}).get("wall_seconds", 0.0))


@dataclass
class _Progress:
    """Where a run stands: the step it started from, training seconds, the last evaluation."""

    start: int
    wall: float
    last_eval: dict[str, Any]
    eval_seconds: float = 0.0


def _loop(config: RunConfig, task: Task, out: Path, progress: _Progress) -> None:
    """Steps start+1..config.steps: train, guard, evaluate, log, checkpoint (rank 0 writes)."""
    main, metrics_path = is_main_process(), out / "metrics.jsonl"
    last_good = f"step {progress.start}" if progress.start else "none yet"
    bar = tqdm(total=config.steps, initial=progress.start, disable=not (config.progress and main), dynamic_ncols=True)
    try:
        for step in range(progress.start + 1, config.steps + 1):
            began = time.perf_counter()
            row: dict[str, Any] = {"step": step, **task.train_step(step)}
            progress.wall += time.perf_counter() - began
            bad = sorted(k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v))
            if bad:
                raise NonFiniteLossError(
                    f"non-finite {', '.join(f'{k}={row[k]}' for k in bad)} at step {step}: run stopped "
                    f"without saving; last good checkpoint: {last_good} in {out}")
            row["wall_seconds"] = round(progress.wall, 4)
            evaluated = _due(step, config.eval_every, config.steps) and main
            if evaluated:
                began = time.perf_counter()
                progress.last_eval = task.evaluate(step, out)
                progress.eval_seconds += time.perf_counter() - began
                row.update(progress.last_eval)
            if main and (evaluated or _due(step, config.log_every, config.steps)):
                with metrics_path.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
            bar.update(1)
            live = {**progress.last_eval, **row}
            bar.set_postfix({k: f"{live[k]:.3g}" for k in task_postfix_keys(live)})
            if _due(step, config.checkpoint_every, config.steps) and main:
                save_checkpoint(out, step, {
                    "step": step, "config": dataclasses.asdict(config), "task": task.state_dict(),
                    "rng": rng_state(), "wall_seconds": progress.wall, "last_eval": progress.last_eval,
                }, keep=config.keep_checkpoints)
                last_good = f"step {step}"
    except CheckpointError as err:
        raise NonFiniteLossError(f"{err}; run stopped; last good checkpoint: {last_good} in {out}") from err
    finally:
        bar.close()


def _summarize(config: RunConfig, task: Task, out: Path, progress: _Progress, resumed_wall: float) -> dict[str, Any]:
    """summary.json (rank 0 writes it, with the task's end-of-run extras)."""
    done = config.steps - progress.start
    summary = {
        "steps": config.steps, "resumed_from": progress.start, "train_seconds": round(progress.wall, 3),
        "seconds_per_step_this_session": None, "eval_seconds_this_session": round(progress.eval_seconds, 3),
        "final": progress.last_eval, "config": dataclasses.asdict(config),
    }
    if done > 0:
        summary["seconds_per_step_this_session"] = (progress.wall - resumed_wall) / done
    if is_main_process():
        summary["finish"] = task.finish(out)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def scalars_to_host(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalar tensors as Python floats in ONE device-to-host copy (float() per entry would
    sync once per entry): a task's train_step returns this, for the run loop's NaN guard."""
    if not stats:
        return {}
    values = torch.stack([v.detach().float().reshape(()) for v in stats.values()]).tolist()
    return dict(zip(stats, values))


def task_postfix_keys(row: dict[str, Any]) -> list[str]:
    """The few live numbers worth showing in the progress bar."""
    preferred = ("loss_critic", "loss_generator", "w1_critic", "w1", "fid", "loss", "accuracy")
    return [k for k in preferred if isinstance(row.get(k), float)]
