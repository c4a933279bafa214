"""Ctrl-C (SIGINT) and SIGTERM stop a run cleanly instead of losing the steps since the last
checkpoint: the handler only records the signal, the run loop finishes the current step,
writes a checkpoint at it and raises RunInterrupted (the CLI prints how to resume and exits
128 + signal number: 130 / 143). A second signal while that happens stops at once
(KeyboardInterrupt); the previous checkpoint is then still the newest good one.

Multi-process runs (torchrun, issue 12) will need the ranks to agree on the step to stop at
(an all-reduce of the flag each step): each rank now decides on its own."""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal after checkpointing step `step` in `out`. A KeyboardInterrupt,
    so `except Exception` around a run (one claim of reproduce, a notebook cell) lets it through."""

    def __init__(self, signum: int, step: int, out: Path):
        self.signum, self.step, self.out = signum, step, out
        super().__init__(f"{signal.Signals(signum).name} at step {step}: checkpoint saved in {out}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequests:
    """`with StopRequests() as stops:` ... `stops.signum` is the first stop signal received, or
    None. Handlers are installed only in the main thread (Python allows no other) and the
    previous ones are restored on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._record)
        return self

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # asked twice: stop now, do not wait for the checkpoint
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
