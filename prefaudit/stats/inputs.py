"""Validation of :func:`~prefaudit.stats.paired_tests` arguments and their canonical sparse form.

Every activation matrix, dense or sparse, becomes one canonical float64 CSC array (sorted
indices, no duplicates, no stored zeros). All statistics are computed from that form only, so a
dense and a sparse copy of the same data give identical tables.

>>> import numpy as np
>>> as_canonical_csc(np.array([[0.0, 1.5], [2.0, 0.0]]), "chosen").nnz
2
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from prefaudit.errors import ConfigError

# Dense inputs are converted this many columns at a time, so the float64 temporaries stay small.
_DENSE_BLOCK_ELEMENTS = 1 << 22


def _describe_non_finite(value: float) -> str:
    return "NaN" if np.isnan(value) else ("inf" if value > 0 else "-inf")


def _check_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.kind not in "biuf":
        raise ConfigError(f"{name} must hold real numbers (bool, int or float); got dtype {dtype}")


def _raise_non_finite(name: str, column: int, row: int, value: float, count: int) -> None:
    more = f" ({count} non-finite values in all)" if count > 1 else ""
    raise ConfigError(
        f"{name} contains {_describe_non_finite(value)} in feature column {column} at row {row}{more}; "
        "activations must be finite"
    )


def _canonicalise(m: sp.csc_array) -> sp.csc_array:
    m.sum_duplicates()  # also sorts the indices
    m.eliminate_zeros()
    return m


def as_canonical_csc(x: Any, name: str) -> sp.csc_array:
    """Return ``x`` as a new float64 CSC array in canonical form.

    Parameters
    ----------
    x : numpy.ndarray, scipy.sparse matrix or array, or array-like
        An (n_pairs × n_features) activation matrix, in any sparse format.
    name : str
        The argument's name, used in error messages.

    Raises
    ------
    ConfigError
        If ``x`` is not 2-D, not real-valued, or holds NaN or inf (the message names the first
        offending feature column and row).
    """
    if sp.issparse(x):
        if x.ndim != 2:
            raise ConfigError(f"{name} must be a 2-D (n_pairs × n_features) matrix; got {x.ndim}-D")
        _check_dtype(np.dtype(x.dtype), name)
        # A copy: canonicalising in place would modify the caller's matrix.
        m = _canonicalise(sp.csc_array(x, dtype=np.float64, copy=True))
        bad = np.flatnonzero(~np.isfinite(m.data))
        if bad.size:
            first = int(bad[0])  # CSC order: lowest column first, then lowest row
            column = int(np.searchsorted(m.indptr, first, side="right") - 1)
            _raise_non_finite(name, column, int(m.indices[first]), float(m.data[first]), bad.size)
        return m

    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} cannot be read as an array: {exc}") from exc
    if a.ndim != 2:
        raise ConfigError(
            f"{name} must be a 2-D (n_pairs × n_features) array; got {a.ndim}-D with shape {a.shape}"
        )
    _check_dtype(a.dtype, name)
    n_rows, n_cols = a.shape
    step = max(1, _DENSE_BLOCK_ELEMENTS // max(n_rows, 1))
    blocks = []
    for start in range(0, n_cols, step):
        block = np.asarray(a[:, start : start + step], dtype=np.float64)
        finite = np.isfinite(block)
        if not finite.all():
            column, row = np.argwhere(~finite.T)[0]  # first by column, then by row, as for sparse
            count = int(np.count_nonzero(~np.isfinite(a))) if a.dtype.kind == "f" else 1
            _raise_non_finite(name, start + int(column), int(row), float(block[row, column]), count)
        blocks.append(sp.csc_array(block))
    if not blocks:
        return sp.csc_array((n_rows, n_cols), dtype=np.float64)
    m = blocks[0] if len(blocks) == 1 else sp.hstack(blocks, format="csc")
    return _canonicalise(sp.csc_array(m, dtype=np.float64))


def length_difference(lengths: Any, n_pairs: int) -> np.ndarray | None:
    """Return Δ_len (chosen length − rejected length) per pair as float64, or ``None``.

    ``lengths`` is ``None``, a pair ``(len_chosen, len_rejected)`` of 1-D arrays, or one 1-D array
    that already holds Δ_len.

    >>> length_difference(([5, 9], [3, 9]), 2).tolist()
    [2.0, 0.0]
    """
    if lengths is None:
        return None
    is_pair = (
        isinstance(lengths, (tuple, list))
        and len(lengths) == 2
        and all(np.ndim(part) == 1 for part in lengths)
    )
    if is_pair:
        parts = [_length_vector(part, n_pairs, f"lengths[{i}]") for i, part in enumerate(lengths)]
        return parts[0] - parts[1]
    return _length_vector(lengths, n_pairs, "lengths")


def _length_vector(values: Any, n_pairs: int, name: str) -> np.ndarray:
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{name} must be numbers: a tuple (len_chosen, len_rejected) of 1-D arrays or one 1-D "
            f"array of length differences ({exc})"
        ) from exc
    if v.ndim != 1 or v.shape[0] != n_pairs:
        raise ConfigError(
            f"{name} must be a 1-D array with one value per pair ({n_pairs}); got shape {v.shape}. "
            "Pass (len_chosen, len_rejected) or one array of length differences."
        )
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise ConfigError(f"{name} contains {_describe_non_finite(v[bad[0]])} at row {int(bad[0])}")
    return v


def per_feature_strings(
    values: str | Sequence[Any] | None, n_features: int, name: str, default: str | None
) -> list[str]:
    """Expand ``names``/``labels``/``source`` to one string per feature column."""
    if values is None:
        return [str(j) for j in range(n_features)] if default is None else [default] * n_features
    if isinstance(values, str):
        if name != "source":
            raise ConfigError(f"{name} must be a sequence of {n_features} strings, not one string")
        return [values] * n_features
    try:
        out = [str(v) for v in values]
    except TypeError as exc:
        raise ConfigError(f"{name} must be a sequence of strings: {exc}") from exc
    if len(out) != n_features:
        raise ConfigError(f"{name} has {len(out)} entries but there are {n_features} feature columns")
    return out


def positive_int(value: Any, name: str, *, minimum: int) -> int:
    """Return ``value`` as an int ≥ ``minimum`` or raise :class:`ConfigError`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer ≥ {minimum}; got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be ≥ {minimum}; got {value}")
    return int(value)
