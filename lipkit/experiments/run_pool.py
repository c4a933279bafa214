"""Train the runs that reproduce's claims plan, several at once: one process per worker.

Why: the claims' training runs are small (2-D critics of width 128, 8x8 digits) and
independent; a process trains one at the speed of one core whatever its thread count, so on
a 2-core CPU two runs side by side take about the time of one (`lipkit reproduce --quick`:
~21 min one run at a time; 9.2 min with two workers, trap runs shortened, 2026-11-30). The
claims then find every run finished and reuse it (train/reuse.py): what they measure
afterwards, and claim (c)'s timings, run in the main process alone.

Jobs are ordered longest first (their `cost`) so the last one to finish is a short one. A
job that fails is reported in one line and left to its claim, which retries it in-process
and records the error in the report if it fails again. A stop signal (Ctrl-C, SIGTERM) to
reproduce is forwarded once to every worker (each is in its own process group, so a
terminal's Ctrl-C reaches the main process only): each running run writes a checkpoint at
its current step, as a single run does, and the rerun of the same command resumes them.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..train.interrupt import RunInterrupted, StopRequests

MAX_WORKERS = 4  # past a few workers the runs' evaluations and the report dominate anyway


@dataclass(frozen=True)
class Job:
    """One unit of planned training: fn(*args) in a worker (both picklable: fn at module level)."""

    label: str  # what the progress line names (a run folder relative to reproduce's output)
    cost: float  # relative expected time: only the order (longest first) uses it
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    config: Any = None  # the GanConfig / ClfConfig it trains, when it trains exactly one


# Relative cost of one generator step (critic steps included) by data kind, measured on this
# 2-core CPU at the quick profile's sizes: only the order of the jobs depends on them.
STEP_COST = {"toy": 1.0, "image": 1.5}


def gan_job(ctx: Any, config: Any) -> Job:
    """The Job training (or reusing) one train-gan config, labelled by its folder."""
    from ..data import get_data
    from ..train.reuse import train_or_reuse

    kind = "toy" if get_data(config.data).is_toy else "image"
    quiet = dataclasses.replace(config, progress=False)
    return Job(_label(ctx, config.out), config.steps * STEP_COST[kind], train_or_reuse, (quiet,), quiet)


def with_feature_classifiers(jobs: list[Job]) -> list[Job]:
    """jobs, plus one job per image data set their GAN runs evaluate with FID: training its
    feature classifier (metrics/features.py, cached on disk) ahead of them, so that on a fresh
    machine two workers do not both train it when their first image runs evaluate."""
    from ..data import get_data
    from ..metrics.features import domain_classifier
    from ..train.gan_config import GanConfig

    image_sets = {job.config.data for job in jobs if isinstance(job.config, GanConfig)
                  and job.config.image_metrics and not get_data(job.config.data).is_toy}
    first = max((job.cost for job in jobs), default=0.0) + 1.0
    return [Job(f"{name} feature classifier", first, domain_classifier, (name,)) for name in sorted(image_sets)] + jobs


def _label(ctx: Any, out: str | Path) -> str:
    try:
        return str(Path(out).relative_to(ctx.out))
    except ValueError:
        return str(out)


def default_workers(device: str) -> int:
    """One worker per core (up to MAX_WORKERS) on a CPU; 1 (train in the main process) on an
    accelerator, whose runs would only queue on the one device."""
    if not str(device).startswith("cpu"):
        return 1
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


_stop_requested = False  # in a worker: a stop signal arrived, start no further job


def _note_stop(signum: int, frame: Any) -> None:
    global _stop_requested
    _stop_requested = True


def threads_per_worker(workers: int) -> int:
    """The cores shared out: torch threads of each worker process."""
    return max(1, (os.cpu_count() or 1) // workers)


def _start_worker(threads: int) -> None:
    os.setsid()  # a terminal's Ctrl-C reaches the main process, which forwards one signal
    for sig in (signal.SIGINT, signal.SIGTERM):  # between runs; a run installs its own handlers
        signal.signal(sig, _note_stop)
    import torch

    torch.set_num_threads(threads)


def _run_job(job: Job) -> dict[str, Any]:
    """Runs in a worker. A plain dict back: exceptions with custom constructors (RunInterrupted)
    do not survive pickling. After a stop, jobs already queued to this worker are skipped."""
    global _stop_requested
    if _stop_requested:
        return {"interrupted": (int(signal.SIGTERM), 0, "")}
    start = time.perf_counter()
    try:
        job.fn(*job.args)
    except RunInterrupted as stop:
        _stop_requested = True
        return {"interrupted": (stop.signum, stop.step, str(stop.out))}
    except KeyboardInterrupt:
        _stop_requested = True
        return {"interrupted": (int(signal.SIGINT), 0, "")}
    except Exception as err:  # noqa: BLE001 - reported; the claim retries the run and records it
        return {"error": f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"}
    return {"seconds": time.perf_counter() - start}


def run_jobs(jobs: list[Job], workers: int, say: Callable[[str], None] = print) -> dict[str, str]:
    """Run every job in `workers` processes; {label: error} of those that failed. Nothing to
    do with fewer than 2 workers or jobs (the claims train their runs themselves)."""
    if workers < 2 or len(jobs) < 2:
        return {}
    jobs = sorted(jobs, key=lambda j: -j.cost)
    threads = threads_per_worker(workers)
    say(f"training {len(jobs)} runs in {workers} processes ({threads} thread(s) each), longest first")
    errors: dict[str, str] = {}
    began = time.perf_counter()
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(threads,))
    stopped: tuple[int, int, str] | None = None
    try:
        with StopRequests() as stops:
            pending: dict[Future, Job] = {pool.submit(_run_job, job): job for job in jobs}
            done_count = 0
            while pending:
                done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                if stops.signum is not None and stopped is None:
                    stopped = (stops.signum, 0, "")
                    _forward(pool, stops.signum, pending)
                for future in done:
                    job = pending.pop(future)
                    if future.cancelled():
                        continue
                    try:
                        result = future.result()
                    except Exception as err:  # noqa: BLE001 - a worker process died (killed, out of memory)
                        result = {"error": f"worker process lost: {type(err).__name__}: {err}"}
                    done_count += 1
                    if "interrupted" in result:  # keep one that names a checkpointed run
                        interrupted = tuple(result["interrupted"])
                        if stopped is None or (interrupted[2] and not stopped[2]):
                            stopped = interrupted
                    elif "error" in result:
                        errors[job.label] = result["error"]
                        say(f"    {job.label}: failed in a worker ({result['error']}); its claim retries it")
                    else:
                        say(f"    trained {job.label} ({result['seconds']:.0f} s; {done_count}/{len(jobs)} "
                            f"done, {time.perf_counter() - began:.0f} s elapsed)")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if stopped is not None:
        signum, step, out = stopped
        raise RunInterrupted(signum, step, Path(out) if out else Path("."))
    return errors


def _forward(pool: ProcessPoolExecutor, signum: int, pending: dict[Future, Job]) -> None:
    """Cancel what has not started; send the stop signal once to every worker process."""
    for future in pending:
        future.cancel()
    for process in list(getattr(pool, "_processes", {}).values()):  # the executor's own worker table
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            pass
