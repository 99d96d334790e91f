"""Errors prefaudit raises on purpose.

Every error a user can cause (bad data, a model or SAE that does not fit, a bad
configuration) is a :class:`PrefauditError`, a ``ValueError`` subclass, whose message
names what was wrong and where (row index and field for data).
"""

from __future__ import annotations


class PrefauditError(ValueError):
    """Base class of the errors prefaudit raises for bad input."""


class DataError(PrefauditError):
    """A preference dataset (file, table or row) cannot be used."""


class ModelError(PrefauditError):
    """A model, tokenizer or SAE cannot be loaded or does not fit the audit."""


class ConfigError(PrefauditError):
    """An option has a value prefaudit cannot work with."""


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message says what to install."""
