"""`where`: which layers of a model a constraint or a weight penalty applies to. One
selector, so `where` means the same in lk.constrain and in every weight penalty:

    None                        every layer the method applies to;
    a layer type or tuple       only layers of those types (e.g. nn.Conv2d);
    a callable(name, module)    only layers for which it returns True;
    a string or strings         fnmatch patterns on qualified names as named_modules() gives
                                them ("critic.*", ["0", "2"]; an exact name matches itself).
Every pattern must match at least one of the candidate layers and the selection must not be
empty: either is almost always a typo, never an intent, so both are errors naming the layers
that could have been chosen.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Callable, Iterable, Sequence, Union

import torch.nn as nn

Where = Union[None, type, tuple, Callable[[str, nn.Module], bool], str, Iterable[str]]
Named = tuple[str, nn.Module]

ALLOWED = ("use None, a layer type or tuple of types, a callable (name, module) -> bool, or fnmatch "
           "pattern(s) on qualified module names")


def _is_types(where: object) -> bool:
    return isinstance(where, type) or (isinstance(where, tuple) and bool(where)
                                       and all(isinstance(t, type) for t in where))


def _patterns(where: object) -> list[str] | None:
    """where as a list of patterns, or None when it is not a string or strings."""
    if isinstance(where, str):
        return [where]
    if isinstance(where, (list, tuple, set, frozenset)) and where and all(isinstance(p, str) for p in where):
        return list(where)
    return None


def select(candidates: Sequence[Named], where: Where, what: str) -> list[Named]:
    """The (name, module) pairs of `candidates` that `where` chooses, in their order.

    what: how the caller's candidates are described in errors ("layers that method 'clip'
    constrains", "layers that weight penalties read").
    """
    names = [n or "<root>" for n, _ in candidates]
    if where is None:
        chosen = list(candidates)
    elif _is_types(where):
        chosen = [(n, m) for n, m in candidates if isinstance(m, where)]  # type: ignore[arg-type]
    elif (patterns := _patterns(where)) is not None:
        missing = [p for p in patterns if not any(fnmatchcase(n, p) for n, _ in candidates)]
        if missing:
            raise ValueError(f"where={where!r} matched no layer for pattern(s) {missing}; {what}: {names or 'none'}")
        chosen = [(n, m) for n, m in candidates if any(fnmatchcase(n, p) for p in patterns)]
    elif callable(where):
        chosen = [(n, m) for n, m in candidates if where(n, m)]
    else:
        raise ValueError(f"where={where!r} is not allowed; {ALLOWED}")
    if not chosen:
        raise ValueError(f"where={where!r} matched no layer; {what}: {names or 'none'}")
    return chosen
