"""Name -> object registries. The CLI lists its choices from them.

A registry entry can be *declared* before the module that defines it is imported: ``declare`` records the
name, the module that registers it and a short description, so listing names (``edgeprune models``,
``edgeprune defenses``) does not import torch; ``get`` imports the module on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from edgeprune.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._declared: dict[str, tuple[str, dict]] = {}  # name -> (module that registers it, metadata)

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def declare(self, name: str, module: str, **meta) -> None:
        """``module`` registers ``name`` when imported; ``meta`` (e.g. ``doc``) is listed without importing it."""
        self._declared[name] = (module, meta)

    def meta(self, name: str) -> dict:
        """The declared metadata of ``name`` (no import); an undeclared entry gets its docstring's first line."""
        if name in self._declared:
            return dict(self._declared[name][1])
        lines = (getattr(self.get(name), "__doc__", None) or "").strip().splitlines()
        return {"doc": lines[0] if lines else ""}

    def get(self, name: str) -> T:
        if name not in self._items and name in self._declared:
            importlib.import_module(self._declared[name][0])
        try:
            return self._items[name]
        except KeyError:
            choices = ", ".join(self.names())
            shown = name if len(name) <= 60 else name[:57] + "..."
            raise UnknownNameError(f"unknown {self.kind} {shown!r}; choose one of: {choices}") from None

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._declared))

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._declared

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
