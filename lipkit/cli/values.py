"""argparse types that refuse a bad number where it is typed: `--samples -5` is a one-line
usage error naming the flag's value and the allowed range, never a silent skip."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def count_at_least(low: int) -> Callable[[str], int]:
    """An int >= low."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {low}")
        return value

    parse.__name__ = f"int >= {low}"  # argparse names the type in its messages
    return parse


def writable_file(path: str, flag: str) -> Path:
    """`path` as a file to write later: its folder is created now, and a folder in its place
    is refused now (not after a long computation)."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{flag} {path} is a folder: give a file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{flag} {path}: cannot create its folder {target.parent} ({err.strerror})") from None
    return target
