"""Checkpoints that survive a kill mid-save, never hold NaN, and resume a run exactly.

- save_checkpoint writes to a temp file in the SAME folder, fsyncs it, then os.replace()s it
  into place (atomic on POSIX: a reader sees the old file or the new one, never half of
  one), fsyncs the folder, and keeps the `keep` newest files (the previous one survives).
- load_latest tries the newest checkpoint first; an unreadable one (truncated, corrupt)
  is reported with a warning naming the file and the cause, and the one before is used.
- rng_state / set_rng_state capture every global RNG a run may touch (python, numpy,
  torch CPU, torch CUDA); a run's own torch.Generators travel in its state_dict.
"""
from __future__ import annotations

import errno
import os
import random
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

PATTERN = re.compile(r"^ckpt-(\d{8})\.pt$")


TEMP_PREFIX = ".ckpt-"  # save_checkpoint's temporary files: .ckpt-XXXX.tmp beside the checkpoints


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that must not be written (non-finite values)."""


class CheckpointWriteError(CheckpointError):
    """The file system refused the checkpoint (full disk, quota, permissions); the previous
    checkpoint is untouched."""


def _os_error(err: BaseException) -> str | None:
    """The OSError behind a failed save, as "No space left on device (ENOSPC)"; torch wraps it
    in a RuntimeError from its zip writer, so the chain is searched."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            name = errno.errorcode.get(seen.errno, str(seen.errno))
            return f"{os.strerror(seen.errno)} ({name})"
        seen = seen.__cause__ or seen.__context__
    text = str(err)
    if isinstance(err, RuntimeError) and ("file write failed" in text or "unexpected pos" in text):
        return f"the write failed ({text.splitlines()[0][:120]}); is the disk full?"
    return None


def remove_orphaned_temporaries(folder: Path) -> list[Path]:
    """Delete .ckpt-*.tmp files a killed save left behind (a kill between the write and the
    rename); the checkpoints themselves are never touched. Returns what was removed."""
    if not folder.is_dir():
        return []
    orphans = [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX) and p.name.endswith(".tmp")]
    for path in orphans:
        path.unlink(missing_ok=True)
    return orphans


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"ckpt-{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files of `folder`, newest (highest step) first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if PATTERN.match(p.name)]
    return sorted(found, key=lambda p: int(PATTERN.match(p.name).group(1)), reverse=True)


def first_non_finite(obj: Any, name: str = "") -> str | None:
    """Name of the first floating tensor in a nested state holding NaN/inf, else None."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and not torch.isfinite(obj).all():
            return name or "<tensor>"
        return None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        bad = first_non_finite(value, f"{name}.{key}" if name else str(key))
        if bad:
            return bad
    return None


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Atomically write state to folder/ckpt-{step}.pt; keep the `keep` newest checkpoints.

    Refuses (CheckpointError) a state with a non-finite tensor: a diverged model must never
    replace the last good checkpoint.
    """
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(f"refusing to save checkpoint at step {step}: {bad} is not finite")
    folder.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(folder, step)
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix=TEMP_PREFIX, suffix=".tmp", delete=False)
    try:
        with handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except BaseException as err:
        Path(handle.name).unlink(missing_ok=True)
        cause = _os_error(err)
        if cause is not None:  # full disk, quota, read-only folder: name the cause, not torch's wrapper
            raise CheckpointWriteError(f"cannot write checkpoint {target}: {cause}") from err
        raise
    _fsync_dir(folder)
    for old in list_checkpoints(folder)[max(keep, 1):]:
        old.unlink(missing_ok=True)
    return target


def _fsync_dir(folder: Path) -> None:
    # The rename itself is durable only once the directory entry is flushed.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """One checkpoint; CheckpointError with the cause if it is truncated or not lipkit's.

    Checkpoints are unpickled (they hold python RNG state): load only files you trust.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or corrupt?): "
                              f"{type(err).__name__}: {err}") from err
    if not isinstance(state, dict) or "step" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {path} is not a lipkit run checkpoint (no 'step'/'config')")
    return state


def load_latest(folder: Path) -> tuple[dict[str, Any], Path]:
    """The newest readable checkpoint of `folder`, warning about each unreadable newer one."""
    paths = list_checkpoints(folder)
    if not paths:
        raise CheckpointError(f"no checkpoint (ckpt-*.pt) in {folder}: nothing to resume")
    problems = []
    for path in paths:
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            problems.append(str(err))
            warnings.warn(f"{err}; trying the previous checkpoint", RuntimeWarning, stacklevel=2)
            continue
        return state, path
    raise CheckpointError("no usable checkpoint in " + str(folder) + ":\n  " + "\n  ".join(problems))


def rng_state() -> dict[str, Any]:
    """python random, numpy and torch (CPU, and CUDA when present) global RNG states."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
