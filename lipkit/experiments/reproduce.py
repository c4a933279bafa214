"""`lipkit reproduce`: run the seed's claims side by side and write REPORT.md + results.json.

Each claim is a module with SETTINGS, RULE and run(ctx) (common.py). Claims run one after
the other; results.json is rewritten after every claim, and every training run lives in its
own resumable folder under OUT/runs, so an interrupted reproduce, run again with the same
arguments, reuses what finished and resumes what was cut. A claim that raises is recorded
as an error in the report (with its traceback in results.json) and the others still run.
"""
from __future__ import annotations

import importlib
import json
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

from .common import PROFILES, ClaimResult, Context
from .report import machine_description, write_report
from .run_pool import Job, default_workers, run_jobs, threads_per_worker, with_feature_classifiers

CLAIMS = {"a": "generalization", "b": "convergence", "c": "step_cost", "d": "many_classes", "trap": "trap"}


def parse_claims(text: str | Sequence[str]) -> list[str]:
    """'a,b,trap' -> ['a', 'b', 'trap'] in the report's order; a clear error for unknown keys."""
    keys = [k.strip() for k in text.split(",")] if isinstance(text, str) else [str(k) for k in text]
    unknown = [k for k in keys if k not in CLAIMS]
    if unknown or not keys:
        raise ValueError(f"unknown claim(s) {unknown or keys!r}; choose from {', '.join(CLAIMS)} (comma-separated)")
    return [k for k in CLAIMS if k in keys]


def parse_panels(text: str | Sequence[str] | None, keys: list[str], profile: str) -> tuple[str, ...] | None:
    """--data: names of claim (b)'s panels at this profile; a clear error for any other name."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")] if isinstance(text, str) else [str(n) for n in text]
    allowed = claim_module("b").panel_names(profile)
    unknown = [n for n in names if n not in allowed]
    if "b" not in keys or unknown or not names:
        raise ValueError(f"--data {','.join(names)!s}: picks claim (b)'s panels (include b in --claims); at "
                         f"--{profile} they are {', '.join(allowed)}")
    return tuple(names)


def claim_module(key: str) -> Any:
    return importlib.import_module(f".{CLAIMS[key]}", __package__)


def reproduce(out: str | Path, *, profile: str = "quick", claims: str | Sequence[str] = tuple(CLAIMS),
              device: str = "cpu", progress: bool = True, command: str | None = None,
              workers: int | None = None, data: str | Sequence[str] | None = None) -> dict[str, Any]:
    """Run `claims` at `profile` size into `out`; returns the results.json content. workers:
    processes that train the claims' runs side by side first (run_pool.py; None: one per
    core on a CPU, up to run_pool.MAX_WORKERS; 1: each claim trains its own runs in turn).
    data: only claim (b)'s panels on these data sets (None: all of them)."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}; choose one of {PROFILES}")
    workers = default_workers(device) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    keys = parse_claims(claims)
    panels = parse_panels(data, keys, profile)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=out, profile=profile, device=device, progress=progress, data=panels)
    results: dict[str, Any] = {
        "command": command or (f"lipkit reproduce --{profile} --claims {','.join(keys)}"
                              + (f" --data {','.join(panels)}" if panels else "") + f" --out {out}"),
        "profile": profile, "data": list(panels) if panels else None, "device": device,
        "machine": machine_description(device), "workers": workers,
        "threads_per_worker": threads_per_worker(workers),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "claims": {}, "errors": {},
    }
    began = time.perf_counter()
    results["runs_planned"], results["runs_reused"] = train_planned_runs(ctx, keys, workers)
    results["pool_seconds"] = round(time.perf_counter() - began, 1)
    for i, key in enumerate(keys, 1):
        print(f"[{i}/{len(keys)}] claim {key} ({CLAIMS[key]}, {profile})", flush=True)
        start = time.perf_counter()
        try:
            result: ClaimResult = claim_module(key).run(ctx)
        except Exception as err:  # noqa: BLE001 - one broken claim must not lose the others' results
            results["errors"][key] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
            print(f"    claim {key} failed: {type(err).__name__}: {err}", flush=True)
        else:
            result.seconds = round(time.perf_counter() - start, 1)
            results["claims"][key] = result.to_json()
            print(f"    -> {result.verdict} ({result.seconds:.0f} s): {result.decided_by}", flush=True)
        results["seconds"] = round(time.perf_counter() - began, 1)
        _save(out, results)
    write_report(out, results)
    print(f"report: {out / 'REPORT.md'}", flush=True)
    return results


def train_planned_runs(ctx: Context, keys: list[str], workers: int) -> tuple[int, int]:
    """The claims' training runs in the run pool, before any claim measures. Any failure here
    (a claim that cannot plan, a pool that cannot start) is one printed line and no more:
    each claim then trains what is missing itself and records its own error in the report.
    A stop signal (RunInterrupted, a KeyboardInterrupt) goes through. Returns (planned runs,
    runs already finished by an earlier invocation and reused)."""
    jobs: list[Job] = []
    for key in keys:
        module = claim_module(key)
        try:
            jobs += getattr(module, "planned_jobs", lambda _: [])(ctx)
            expected = getattr(module, "expected_time", lambda *_: None)(ctx, workers)
        except Exception as err:  # noqa: BLE001 - the claim meets it again in run() and records it
            print(f"    claim {key}: its runs could not be planned ({type(err).__name__}: {err})", flush=True)
        else:
            if expected:
                print(f"    claim {key}: expected training time: {expected}", flush=True)
    todo = [job for job in jobs if not _reusable(job)]
    try:
        run_jobs(with_feature_classifiers(todo), workers)
    except Exception as err:  # noqa: BLE001 - the claims train their runs themselves instead
        print(f"    run pool failed ({type(err).__name__}: {err}); each claim trains its own runs", flush=True)
    return len(jobs), len(jobs) - len(todo)


def _reusable(job: Job) -> bool:
    """A job training one config whose finished run is already there (a rerun): nothing to do."""
    from ..train.reuse import is_finished

    return job.config is not None and is_finished(job.config)


def _save(out: Path, results: dict[str, Any]) -> None:
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(out / "results.json")  # atomic: a kill never leaves half a file
