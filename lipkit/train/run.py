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
- interruptions: SIGINT / SIGTERM finish the current step, checkpoint it and raise
  RunInterrupted (interrupt.py); temporary files of a save killed mid-write are removed at
  the next start; a full disk is a CheckpointWriteError naming the cause;
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

from ..constraints.base import NonFiniteWeightError
from . import distributed
from .checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    load_latest,
    remove_orphaned_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .interrupt import RunInterrupted, StopRequests
from .progress_display import progress_display
from .run_config import RunConfig, check_config, check_same_run, load_config, save_config


class Task(Protocol):
    """What a training job provides to `run`. Optionally `divergence_limits`: {statistic: the
    largest |value| a healthy run reaches}; above it the run stops as on a NaN."""

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
__all__ = ["RunConfig", "load_config", "run", "NonFiniteLossError", "scalars_to_host"]


def is_main_process() -> bool:
    """Rank 0 of a torch.distributed job, or the only process."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


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
    created_group = distributed.init_if_launched(config.device)  # under torchrun: join its process group
    try:
        return _run(config, build, resume)
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


def _run(config: C, build: Callable[[C], Task], resume: bool) -> dict[str, Any]:
    out, main = Path(config.out), is_main_process()
    state = None
    if main:
        remove_orphaned_temporaries(out)
    if resume:
        state, ckpt = load_latest(out)
        check_same_run(state["config"], config, ckpt)
        if config.steps < state["step"]:
            raise ValueError(f"steps={config.steps} is below step {state['step']} of {ckpt.name}: a resumed run "
                             f"only goes further; pass --steps >= {state['step']}")
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
    summary = _summarize(config, task, out, progress, (state or {}).get("wall_seconds", 0.0))
    distributed.barrier()  # every rank leaves once rank 0 has written its last checkpoint and summary
    return summary


@dataclass
class _Progress:
    """Where a run stands: the step it started from, training seconds, the last evaluation."""

    start: int
    wall: float
    last_eval: dict[str, Any]
    eval_seconds: float = 0.0


def _loop(config: RunConfig, task: Task, out: Path, progress: _Progress) -> None:
    """Steps start+1..config.steps: train, guard, evaluate, log, checkpoint (rank 0 writes);
    a stop signal ends the loop after the current step, checkpointed (RunInterrupted)."""
    main, metrics_path = is_main_process(), out / "metrics.jsonl"
    last_good = f"step {progress.start}" if progress.start else "none yet"
    bar = progress_display(config.steps, progress.start, config.progress and main)
    try:
        with StopRequests() as stops:
            for step in range(progress.start + 1, config.steps + 1):
                began = time.perf_counter()
                try:
                    row: dict[str, Any] = {"step": step, **task.train_step(step)}
                except NonFiniteWeightError as err:  # a constraint met a NaN weight: the same stop as a NaN loss
                    row, bad = {}, str(err)
                else:
                    bad = _diverged(row, getattr(task, "divergence_limits", {}))
                progress.wall += time.perf_counter() - began
                if bad:
                    raise NonFiniteLossError(f"{bad} at step {step}: run stopped without saving; last good "
                                             f"checkpoint: {last_good} in {out}")
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
                live = {**progress.last_eval, **row}
                bar.step({k: f"{live[k]:.3g}" for k in task_postfix_keys(live)}, force_line=evaluated)
                # read once (a signal landing in between must not skip the checkpoint), and from
                # every rank: all of them stop after this same step
                stop = distributed.any_rank(stops.signum)
                if (_due(step, config.checkpoint_every, config.steps) or stop is not None) and main:
                    _checkpoint(config, task, out, progress, step)
                    last_good = f"step {step}"
                if stop is not None:
                    raise RunInterrupted(stop, step, out)
    except CheckpointWriteError as err:
        raise CheckpointWriteError(f"{err}; run stopped; last good checkpoint: {last_good} in {out}, intact: "
                                   "free space, then rerun with --resume") from err
    except CheckpointError as err:
        raise NonFiniteLossError(f"{err}; run stopped; last good checkpoint: {last_good} in {out}") from err
    finally:
        bar.close()


def _diverged(row: dict[str, Any], limits: dict[str, float]) -> str:
    """Why a step's statistics mean the run diverged ("" if they do not): a non-finite value,
    or one above the task's divergence_limits (a cross-entropy of 1e20 is finite but hopeless)."""
    bad = sorted(k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v))
    if bad:
        return "non-finite " + ", ".join(f"{k}={row[k]}" for k in bad)
    over = sorted(k for k, limit in limits.items() if isinstance(row.get(k), float) and abs(row[k]) > limit)
    if over:
        return "diverged: " + ", ".join(f"{k}={row[k]:.3g} > {limits[k]:g}" for k in over) + " (learning rate too high?)"
    return ""


def _checkpoint(config: RunConfig, task: Task, out: Path, progress: _Progress, step: int) -> None:
    save_checkpoint(out, step, {
        "step": step, "config": dataclasses.asdict(config), "task": task.state_dict(),
        "rng": rng_state(), "wall_seconds": progress.wall, "last_eval": progress.last_eval,
    }, keep=config.keep_checkpoints)


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
    # averaged over ranks in a torchrun job: every rank sees the global batch's statistics
    values = distributed.mean_across_ranks(torch.stack([v.detach().float().reshape(()) for v in stats.values()]))
    values = values.tolist()
    return dict(zip(stats, values))


def task_postfix_keys(row: dict[str, Any]) -> list[str]:
    """The few live numbers worth showing in the progress bar."""
    preferred = ("loss_critic", "loss_generator", "w1_critic", "w1", "fid", "loss", "accuracy")
    return [k for k in preferred if isinstance(row.get(k), float)]
