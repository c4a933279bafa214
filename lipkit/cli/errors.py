"""The command line's error boundary: an expected failure (a bad value, a path that is not
there, an unreadable checkpoint, a missing device, out of memory, a full disk) is ONE line on
stderr naming the cause and what to do, and a non-zero exit; an interruption says how to
resume. `--debug` anywhere on the command line (or LIPKIT_DEBUG=1) shows the traceback."""
from __future__ import annotations

import errno
import os
import signal
import sys
from typing import Callable

import torch

from ..train.interrupt import RunInterrupted

DEBUG_FLAG = "--debug"
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 128 + signal.SIGINT


def debug_requested(argv: list[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get("LIPKIT_DEBUG", "") not in ("", "0")


def guarded(command: Callable[[], int], resume_hint: str, debug: bool) -> int:
    """command()'s exit code; a failure or an interruption becomes one line on stderr."""
    try:
        return command()
    except RunInterrupted as stop:
        _say(f"interrupted ({signal.Signals(stop.signum).name}) after step {stop.step}; checkpoint saved in "
             f"{stop.out}. Continue with: {resume_hint}")
        return stop.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        _say("interrupted: stopped at once. Continue with: " + resume_hint)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - the boundary: every failure is reported, none is a traceback
        if debug:
            raise
        _say("error: " + describe(err))
        return EXIT_FAILURE


def describe(err: BaseException) -> str:
    """One line: the cause, and what to do where lipkit knows."""
    text = " ".join(str(err).split()) or type(err).__name__
    if _out_of_memory(err):
        return (f"out of memory ({text[:160]}): lower --batch-size, --eval-samples or --input-shape, "
                "or run on a larger device")
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"no space left on device writing {err.filename or 'a file'}: free space, then rerun (--resume)"
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.strerror}: {err.filename}"
    if isinstance(err, (ValueError, TypeError, LookupError, RuntimeError, OSError)) and _is_lipkit_message(err):
        return text
    return f"{type(err).__name__}: {text} (unexpected: rerun with --debug for the traceback and report it)"


def _out_of_memory(err: BaseException) -> bool:
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def _is_lipkit_message(err: BaseException) -> bool:
    """Raised by lipkit itself (its messages are written to be read), not deep inside a library."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is None or str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0] == "lipkit"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
