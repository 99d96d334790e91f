"""Explainers: plug-ins that say in words what a feature or a cluster is, behind one interface.

An explainer reads a :class:`~prefaudit.features.labels.ConceptContexts` (a unit's id, its SAE
features, its top and contrast contexts, its distinctive n-grams and built-in label) and returns
an :class:`Explanation` — or ``None`` when it has nothing to say about that unit (a Neuronpedia
export without those features). Explanations are labels for people: they never enter a statistic.

Built in (each one file of this package, registered on import):

* ``"contexts"`` — the built-in distinctive-context label (:mod:`.contexts`);
* ``"neuronpedia"`` — explanations from a downloaded Neuronpedia export (:mod:`.neuronpedia`);
* ``"hf"`` — a local Hugging Face causal LM prompted with the contexts (:mod:`.hf_model`);
* ``"callable"`` — any Python function (:mod:`.function`).

A new explainer is one file: a class with ``name`` and ``explain(contexts)``, registered with
``register_explainer(name, factory)``. Nothing here downloads: models and exports are read from
local files.

>>> from prefaudit.features.explainers import get_explainer, explainer_names
>>> explainer_names()
('contexts', 'neuronpedia', 'hf', 'callable')
>>> e = get_explainer("callable", fn=lambda c: f"{len(c.top)} contexts")
>>> e.name
'callable'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from prefaudit.errors import ConfigError
from prefaudit.features.labels import ConceptContexts


@dataclass(frozen=True)
class Explanation:
    """What an explainer says a unit is.

    Attributes
    ----------
    text : str
        The explanation, one line of plain text.
    source : str
        Who said it, e.g. ``"contexts"``, ``"neuronpedia:gemma-2-2b/20-gemmascope-res-16k (gpt-4o-mini)"``,
        ``"hf:SmolLM2-135M-Instruct"``.
    confidence : float or None
        A score in [0, 1] where the explainer has one (none of the built-ins claims one).
    evidence : tuple of str
        What the text was built from (a cluster's member explanations, the prompt's contexts).
    """

    text: str
    source: str
    confidence: float | None = None
    evidence: tuple[str, ...] = ()


@runtime_checkable
class Explainer(Protocol):
    """The interface: a ``name`` and ``explain(contexts) -> Explanation | None``."""

    name: str

    def explain(self, contexts: ConceptContexts) -> Explanation | None: ...


ExplainerFactory = Callable[..., Explainer]

_REGISTRY: dict[str, ExplainerFactory] = {}

# Built-in explainer name -> its module; each registers itself on import. Listed first, in this order.
BUILTINS = {"contexts": "contexts", "neuronpedia": "neuronpedia", "hf": "hf_model", "callable": "function"}


def register_explainer(name: str, factory: ExplainerFactory) -> ExplainerFactory:
    """Make ``get_explainer(name, **kw)`` call ``factory(**kw)``; a name is registered once."""
    if not name or name in _REGISTRY:
        raise ConfigError(f"explainer name {name!r} is empty or already registered")
    _REGISTRY[name] = factory
    return factory


def explainer_names() -> tuple[str, ...]:
    """Registered names: the built-ins first, then the others in the order they were registered."""
    _load_builtins()
    return (*BUILTINS, *(n for n in _REGISTRY if n not in BUILTINS))


def get_explainer(name: str, **options: Any) -> Explainer:
    """A new explainer ``name`` built with ``options`` (a ConfigError lists the known names)."""
    _load_builtins()
    if name not in _REGISTRY:
        raise ConfigError(f"explainer={name!r}; choose one of {', '.join(explainer_names())}")
    return _REGISTRY[name](**options)


def resolve_explainer(spec: str | Explainer | Callable[[ConceptContexts], Any], **options: Any) -> Explainer:
    """An explainer from a registered name, an object with ``explain``, or a plain function.

    What ``session.explain(explainer=...)`` accepts.
    """
    if isinstance(spec, str):
        return get_explainer(spec, **options)
    if options:
        raise ConfigError("options are only for an explainer given by name")
    if isinstance(spec, Explainer):
        return spec
    if callable(spec):
        return get_explainer("callable", fn=spec)
    raise ConfigError(f"explainer={spec!r}: give a registered name, an Explainer or a function")


def explain_all(explainer: Explainer, units: Sequence[ConceptContexts]) -> list[Explanation | None]:
    """The explanation of every unit, in order (``None`` where it has nothing).

    Uses the explainer's ``explain_many(units)`` where it has one (an LM batches its prompts).
    """
    many = getattr(explainer, "explain_many", None)
    out = list(many(units)) if callable(many) else [explainer.explain(c) for c in units]
    if len(out) != len(units):
        raise ConfigError(f"explainer {explainer.name!r} gave {len(out)} explanations for {len(units)} units")
    for c, e in zip(units, out, strict=True):
        if e is not None and not isinstance(e, Explanation):
            raise ConfigError(f"explainer {explainer.name!r} returned {type(e).__name__} for {c.unit}")
    return out


def _load_builtins() -> None:
    for module in BUILTINS.values():
        importlib.import_module(f"{__name__}.{module}")


__all__ = [
    "BUILTINS",
    "Explainer",
    "ExplainerFactory",
    "Explanation",
    "explain_all",
    "explainer_names",
    "get_explainer",
    "register_explainer",
    "resolve_explainer",
]
