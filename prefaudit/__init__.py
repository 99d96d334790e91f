"""prefaudit: audit a preference dataset through a model's interpretable features, then shape DPO.

Example
-------
>>> import prefaudit as pa
>>> pairs = pa.load_pairs("pairs.jsonl")        # doctest: +SKIP
>>> session = pa.AuditSession(pairs)            # doctest: +SKIP
>>> session.encode(); table = session.test()    # doctest: +SKIP

Heavy parts (torch, transformers, sae-lens, trl) are imported only when used, so ``import
prefaudit`` and the command line stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigError, DataError, MissingDependencyError, ModelError, PrefauditError

__version__ = "0.1.0"

# Public name -> module that defines it (imported on first access, PEP 562).
_LAZY = {
    "load_pairs": "prefaudit.pairs",
    "stream_pairs": "prefaudit.pairs",
    "PreferencePairs": "prefaudit.pairs",
    "LoadReport": "prefaudit.pairs",
    "AuditSession": "prefaudit.session",
    "paired_tests": "prefaudit.stats",
    "Backbone": "prefaudit.backbone",
    "load_sae": "prefaudit.features.sae",
    "DPORunConfig": "prefaudit.training",
    "DPORun": "prefaudit.training",
    "load_demo_pairs": "prefaudit.demo",
}

__all__ = [
    "ConfigError",
    "DataError",
    "MissingDependencyError",
    "ModelError",
    "PrefauditError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'prefaudit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from .pairs import LoadReport, PreferencePairs, load_pairs, stream_pairs  # noqa: F401
    from .session import AuditSession  # noqa: F401
    from .stats import paired_tests  # noqa: F401
