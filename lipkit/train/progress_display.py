"""Progress of a training run: a live bar on a terminal, plain lines in a log.

tqdm redraws its bar with carriage returns; written to a file (`lipkit reproduce ... > log`)
that is one ever-growing line per step, thousands per run (issue 14). So a bar is drawn only
when stderr is a terminal; otherwise a line is printed every `every` steps, at each
evaluation and at the last step: "step 200/1000 (20%) 12.3 s, w1=0.351, ...".
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

LINES_PER_RUN = 20  # plain lines per run when not on a terminal (plus one per evaluation)


class PlainProgress:
    """Line-per-interval progress for logs (the same calls as the bar)."""

    def __init__(self, total: int, initial: int, stream: TextIO, every: int | None = None) -> None:
        self.total, self.step_done, self.stream = total, initial, stream
        self.every = every or max(1, total // LINES_PER_RUN)
        self.began = time.perf_counter()

    def step(self, postfix: dict[str, str], force_line: bool = False) -> None:
        self.step_done += 1
        if force_line or self.step_done % self.every == 0 or self.step_done == self.total:
            stats = ", ".join(f"{k}={v}" for k, v in postfix.items())
            percent = 100 * self.step_done / max(self.total, 1)
            print(f"step {self.step_done}/{self.total} ({percent:.0f}%) {time.perf_counter() - self.began:.1f} s"
                  + (f", {stats}" if stats else ""), file=self.stream, flush=True)

    def close(self) -> None:
        pass


class BarProgress:
    """tqdm's bar with the live statistics as its postfix (terminals)."""

    def __init__(self, total: int, initial: int) -> None:
        self.bar = tqdm(total=total, initial=initial, dynamic_ncols=True)

    def step(self, postfix: dict[str, str], force_line: bool = False) -> None:
        self.bar.update(1)
        self.bar.set_postfix(postfix)

    def close(self) -> None:
        self.bar.close()


class NoProgress:
    def step(self, postfix: dict[str, str], force_line: bool = False) -> None:
        pass

    def close(self) -> None:
        pass


def progress_display(total: int, initial: int, enabled: bool, stream: TextIO | None = None) -> Any:
    """A bar on a terminal, plain lines otherwise, nothing when disabled (--no-progress, or
    not rank 0)."""
    if not enabled:
        return NoProgress()
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return BarProgress(total, initial)
    return PlainProgress(total, initial, stream)
