"""Tiny name -> object registries (one dict per kind), in the spirit of lm-eval's `register_model`.

Duplicates are rejected; an unknown name raises `UnknownNameError`, whose one-line message suggests the
closest valid names (difflib) and lists them all. The CLI turns it into exit code 2 without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown task, model or method name; `str()` is a one-line message listing valid names."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        super().__init__(name)
        self.kind, self.name, self.valid = kind, name, valid

    def __str__(self) -> str:
        close = suggest(self.name, self.valid)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        return f"unknown {self.kind} {self.name!r}; {hint}valid {self.kind}s: {', '.join(self.valid)}"


def suggest(name: str, valid: list[str], n: int = 1) -> list[str]:
    """The valid names closest to `name` (case-insensitive, difflib's ratio >= 0.6), best first."""
    lowered = {v.lower(): v for v in valid}
    return [lowered[m] for m in difflib.get_close_matches(str(name).lower(), list(lowered), n=n, cutoff=0.6)]


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
