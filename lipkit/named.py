"""A registry of named entries: what the methods registry (lipkit/methods) and the data
registry (lipkit/data) are built on. Registration order is kept (it is the order names are
listed in, e.g. in --help), and a name is registered once unless replaced on purpose."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class NamedRegistry(Generic[T]):
    """name -> entry; `what` names an entry in error messages ("method", "data set")."""

    def __init__(self, what: str, kind: type) -> None:
        self.what, self.kind = what, kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        if not isinstance(entry, self.kind):
            raise TypeError(f"a {self.what} entry must be a {self.kind.__name__}, got {type(entry).__name__}")
        if name in self._entries and not replace:
            raise ValueError(f"a {self.what} named {name!r} is already registered; pass replace=True to redefine it")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self, keep: Callable[[T], bool] | None = None) -> tuple[str, ...]:
        """Names in registration order (keep: only the entries it accepts)."""
        return tuple(n for n, e in self._entries.items() if keep is None or keep(e))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
