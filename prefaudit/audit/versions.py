"""One version counter per input of an audit, and the caches they invalidate.

Every cached value in a session is a function of a few inputs: the pairs (``data``), the pooled
features (``features``: encoding, concepts, a restore), the reward weights (``weights``), the pair
edits (``edits``) and the current prompt topics (``topics``). The core bumps a counter whenever
its input changes; a :class:`Memo` remembers the counters it was filled under and empties itself
when any of them moved. So no part needs to know who else caches what, and nothing stale
survives an ``encode()``, an ``add_concept()`` or a ``restore``.

>>> v = Versions()
>>> memo = Memo(v, "features")
>>> memo.get("x", lambda: 1), memo.get("x", lambda: 2)
(1, 1)
>>> v.bump("features")
>>> memo.get("x", lambda: 3)
3
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

#: The inputs a cached value may depend on.
INPUTS = ("data", "features", "weights", "edits", "topics")


class Versions:
    """Counters of the audit's inputs; only the core bumps them."""

    def __init__(self) -> None:
        self._counts = dict.fromkeys(INPUTS, 0)

    def bump(self, *inputs: str) -> None:
        for name in inputs:
            self._counts[_known(name)] += 1

    def stamp(self, *inputs: str) -> tuple[int, ...]:
        """The current counters of ``inputs``: equal stamps mean nothing they name has changed."""
        return tuple(self._counts[_known(name)] for name in inputs)

    def __repr__(self) -> str:
        return "Versions(" + ", ".join(f"{k}={v}" for k, v in self._counts.items()) + ")"


class Memo:
    """A part's cache: values keyed by anything hashable, valid while ``depends`` are unchanged."""

    def __init__(self, versions: Versions, *depends: str) -> None:
        self.versions = versions
        self.depends = tuple(_known(d) for d in depends)
        self._stamp: tuple[int, ...] | None = None
        self._values: dict[Hashable, Any] = {}

    def _fresh(self) -> dict[Hashable, Any]:
        stamp = self.versions.stamp(*self.depends)
        if stamp != self._stamp:
            self._values, self._stamp = {}, stamp
        return self._values

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        values = self._fresh()
        if key not in values:
            values[key] = compute()
        return values[key]

    def peek(self, key: Hashable) -> Any:
        """The cached value, or ``None`` when there is none (never computes)."""
        return self._fresh().get(key)

    def put(self, key: Hashable, value: Any) -> None:
        self._fresh()[key] = value

    def items(self) -> list[tuple[Hashable, Any]]:
        return list(self._fresh().items())

    def clear(self) -> None:
        self._values, self._stamp = {}, None

    def __len__(self) -> int:
        return len(self._fresh())


def _known(name: str) -> str:
    if name not in INPUTS:
        raise ValueError(f"Unknown input {name!r}; choose one of {', '.join(INPUTS)}.")
    return name
