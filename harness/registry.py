"""Tiny name -> object registries (one dict per kind), in the spirit of lm-eval's `register_model`.

Duplicates are rejected; an unknown name raises `UnknownNameError`, whose one-line message suggests the
closest valid names (difflib) and lists them all. The CLI turns it into exit code 2 without a traceback.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
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


def discover(package: str, marker: str) -> list[str]:
    """Import every module of `package` whose source contains `marker` (how its files register themselves:
    `@TASKS.register(` in tasks/, `register(Method(` in trainers/), so a new task or method is one new file
    and no list names it. Modules whose name starts with `_` are skipped, and so are modules without the
    marker (helpers such as tasks/math_worker.py, which must never be imported in the harness process).
    Every folder on the package's `__path__` is searched. Returns the modules imported, sorted."""
    pkg = sys.modules.get(package) or importlib.import_module(package)
    found = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.ispkg:
            continue
        path = Path(info.module_finder.path) / f"{info.name}.py"
        try:
            source = path.read_text(encoding="utf-8")
        except OSError:
            continue
        if marker in source:
            importlib.import_module(f"{package}.{info.name}")
            found.append(info.name)
    return sorted(found)
