"""Any Python function as an explainer: ``fn(contexts) -> str | Explanation | None``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefaudit.errors import ConfigError
from prefaudit.features.labels import ConceptContexts

from . import Explanation, register_explainer


class FunctionExplainer:
    """Wraps ``fn``; a returned string becomes an :class:`Explanation` from ``source``."""

    def __init__(
        self, fn: Callable[[ConceptContexts], Any], *, name: str = "callable", source: str | None = None
    ):
        if not callable(fn):
            raise ConfigError(f"fn={fn!r} is not callable")
        self.fn, self.name = fn, name
        self.source = source or getattr(fn, "__name__", name)

    def explain(self, contexts: ConceptContexts) -> Explanation | None:
        out = self.fn(contexts)
        if out is None or isinstance(out, Explanation):
            return out
        if isinstance(out, str):
            text = " ".join(out.split())
            return Explanation(text, self.source) if text else None
        raise ConfigError(
            f"explainer {self.source!r} returned {type(out).__name__} for {contexts.unit}; want str"
        )


register_explainer("callable", FunctionExplainer)
