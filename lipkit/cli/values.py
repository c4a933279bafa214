"""The command line's value types, in one place: each argparse type refuses a bad value where
it is typed (`--samples -5`, `--seeds a,b` are one-line usage errors naming the value and
what is allowed, never a silent skip), and writable_file checks an output path up front."""
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


def parse_pair(text: str) -> tuple[float, float]:
    try:
        pair = tuple(float(s) for s in text.split(","))
    except ValueError:
        pair = ()
    if len(pair) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not a pair: give two numbers, e.g. 0,0.9")
    return pair  # type: ignore[return-value]


def parse_floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in text.split(","))
    except ValueError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers: e.g. 0.1,0.25,0.5")
    return values


def parse_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",")]


def parse_ints(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integers: e.g. 0,1,2") from None


def parse_lams(text: str) -> dict[str, float]:
    try:
        pairs = [item.split("=") for item in text.split(",")]
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give REG=LAMBDA pairs, e.g. l2=1e-4,snr=0.01") from None


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a shape: give positive integers separated by commas, e.g. 3,32,32"
        )
    return shape
