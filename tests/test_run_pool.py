"""reproduce's run pool (lipkit/experiments/run_pool.py): runs trained in worker processes are
the runs a single process trains (oracle: the same config trained in this process), a failing
job is reported without stopping the others, and a stop signal checkpoints every running run
and starts no queued one, so the rerun resumes them."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from small_runs import metric_rows, tiny_gan

from lipkit.experiments import run_pool
from lipkit.train.reuse import is_finished, train_or_reuse


def losses(folder: Path) -> list[tuple]:
    return [tuple(v for k, v in sorted(r.items()) if "seconds" not in k) for r in metric_rows(folder)]


def test_pool_runs_equal_in_process_runs_are_reused_and_a_failure_is_reported(tmp_path):
    ctx = SimpleNamespace(out=tmp_path)
    configs = [tiny_gan(tmp_path / f"pool-{c}", c, steps=15) for c in ("gp", "sn", "clip")]
    bad = tiny_gan(tmp_path / "bad", "gp", steps=5, lr=-1.0)
    lines: list[str] = []
    errors = run_pool.run_jobs([run_pool.gan_job(ctx, c) for c in (*configs, bad)], 2, lines.append)
    assert list(errors) == ["bad"] and "lr must be a finite number > 0" in errors["bad"]
    assert lines[0].startswith("training 4 runs in 2 processes") and len(lines) == 5, lines
    assert any("bad: failed in a worker" in line for line in lines)
    assert all(is_finished(c) for c in configs)
    for config in configs:
        stamp = (Path(config.out) / "summary.json").stat().st_mtime_ns
        train_or_reuse(config)  # finished: reused, not retrained
        assert (Path(config.out) / "summary.json").stat().st_mtime_ns == stamp
        here = tiny_gan(tmp_path / f"here-{config.critic}", config.critic, steps=15)
        train_or_reuse(here)
        for a, b in zip(losses(Path(config.out)), losses(Path(here.out)), strict=True):
            assert a == pytest.approx(b, rel=1e-5, abs=1e-7)


POOL_SCRIPT = """
import sys
from pathlib import Path
from types import SimpleNamespace
sys.path.insert(0, {tests!r})
from small_runs import tiny_gan
from lipkit.experiments import run_pool
from lipkit.train.interrupt import RunInterrupted
root = Path({root!r})
ctx = SimpleNamespace(out=root)
jobs = [run_pool.gan_job(ctx, tiny_gan(root / name, "gp", steps=steps, checkpoint_every=100000))
        for name, steps in (("long1", 100000), ("long2", 90000), ("queued", 10))]
try:
    run_pool.run_jobs(jobs, 2)
except RunInterrupted as stop:
    print("stopped", stop.step, stop.out, flush=True)
    sys.exit(stop.exit_code)
"""


def test_a_stop_signal_checkpoints_running_runs_and_skips_queued_ones(tmp_path):
    script = POOL_SCRIPT.format(tests=str(Path(__file__).parent), root=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    deadline = time.monotonic() + 120
    logs = [tmp_path / name / "metrics.jsonl" for name in ("long1", "long2")]
    while time.monotonic() < deadline and proc.poll() is None:
        if all(p.is_file() and len(p.read_text().splitlines()) >= 5 for p in logs):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground process group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, (out, err)
    assert "stopped" in out and "Traceback" not in err, (out, err)
    for name in ("long1", "long2"):
        folder = tmp_path / name
        last = metric_rows(folder)[-1]["step"]
        assert 5 <= last < 90000
        assert (folder / f"ckpt-{last:08d}.pt").is_file()  # checkpoint_every is huge: the stop's own
        assert not (folder / "summary.json").exists()
    assert not (tmp_path / "queued").exists()  # queued behind the running ones: never started
    state = json.loads((tmp_path / "long1" / "config.json").read_text())
    assert state["steps"] == 100000
