"""Name -> observation channel. ``register`` is how a new channel joins verification.

A channel is one module defining a :class:`~prefaudit.verify.channel_base.Channel` subclass
decorated with :func:`register`, and one entry in :data:`BUILTINS` (the table's row order).

Example
-------
>>> from prefaudit.verify import channel_registry
>>> channel_registry.names(runs=2)
('shaping change',)
>>> channel_registry.get("reward").runs
1
"""

from __future__ import annotations

from ..errors import ConfigError
from .channel_base import Channel

_REGISTRY: dict[str, Channel] = {}

# Built-in modules, in the order their rows appear; each registers its channels on import.
BUILTINS = ("channel_reward", "channel_generation", "channel_weighted", "channel_change")


def register(cls: type[Channel]) -> type[Channel]:
    """Class decorator: make ``cls`` a channel of every verification (``cls.name`` is its row)."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"Channel name {cls.name!r} is empty or already registered.")
    _REGISTRY[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    """Remove a channel added with :func:`register` (a built-in comes back on the next import only)."""
    if name not in _REGISTRY:
        raise ConfigError(f"No channel {name!r} is registered.")
    del _REGISTRY[name]


def _load_builtins() -> None:
    import importlib

    for name in BUILTINS:
        importlib.import_module(f"{__package__}.{name}")


def _order(item: tuple[int, str]) -> tuple[int, int]:
    # Built-ins in BUILTINS order whatever imported them first; others after, as registered.
    index, name = item
    module = type(_REGISTRY[name]).__module__.rpartition(".")[2]
    return (BUILTINS.index(module) if module in BUILTINS else len(BUILTINS), index)


def names(runs: int | None = None) -> tuple[str, ...]:
    """Registered channel names in row order (``runs``: only those reading that many runs)."""
    _load_builtins()
    ordered = [n for _, n in sorted(enumerate(_REGISTRY), key=_order)]
    return tuple(n for n in ordered if runs is None or _REGISTRY[n].runs == runs)


def get(name: str) -> Channel:
    """The channel called ``name`` (a ConfigError lists the known ones)."""
    _load_builtins()
    if name not in _REGISTRY:
        raise ConfigError(f"channel={name!r}; choose one of {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]
