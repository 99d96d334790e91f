"""Name -> intervention. ``register`` is how a new intervention joins ``intervention=``.

Example
-------
>>> from prefaudit.interventions import registry
>>> registry.get("margin").margin_in_loss
True
>>> sorted(registry.names())[:3]
['ablate', 'filter', 'flip']
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Intervention

_REGISTRY: dict[str, Intervention] = {}


def register(cls: type[Intervention]) -> type[Intervention]:
    """Class decorator: make ``cls`` available as ``intervention=cls.name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"Intervention name {cls.name!r} is empty or already registered.")
    _REGISTRY[cls.name] = cls()
    return cls


def names() -> tuple[str, ...]:
    """Registered names, in registration order."""
    _load_builtins()
    return tuple(_REGISTRY)


def get(name: str) -> Intervention:
    """The intervention called ``name`` (a ConfigError lists the known ones)."""
    _load_builtins()
    if name not in _REGISTRY:
        raise ConfigError(f"intervention={name!r}; choose one of {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


# Built-in modules, in the order error messages and docs list them; each registers itself on import.
BUILTINS = ("margin", "reweight", "filter", "flip", "ablate", "none")


def _load_builtins() -> None:
    import importlib

    for name in BUILTINS:
        importlib.import_module(f"{__package__}.{name}")
