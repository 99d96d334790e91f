"""Column moments of a sparse (pairs × features) matrix, zeros included, without densifying.

Segment sums over the CSC columns (``np.add.reduceat`` over the non-empty columns), so no
per-value column index is built; the centred sums of squares go a bounded number of values at a
time.

>>> import numpy as np, scipy.sparse as sp
>>> m = sp.csc_array(np.array([[1.0, 0.0], [3.0, 0.0]]))
>>> column_means(m).tolist(), centred_sum_of_squares(m, column_means(m)).tolist()
([2.0, 0.0], [2.0, 0.0])
>>> column_abs_max(m).tolist(), float32_columns(m, np.array([0, 1])).tolist()
([3.0, 0.0], [True, True])
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp

# Stored values per chunk of the centred sums of squares (bounds its float64 temporaries).
_CHUNK_VALUES = 1 << 22


def segment_sums(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """``values[indptr[j] : indptr[j + 1]].sum()`` for every j (0 for an empty segment)."""
    indptr = np.asarray(indptr, dtype=np.int64)
    k = np.diff(indptr)
    out = np.zeros(k.size, dtype=np.float64)
    filled = np.flatnonzero(k)
    if filled.size:
        # reduceat sums from each start to the next start given, so only non-empty segments are
        # listed (an empty one would yield values[start]); the last runs to the end of values.
        out[filled] = np.add.reduceat(values[indptr[0] : indptr[-1]], indptr[filled] - indptr[0])
    return out


def _segment_extreme(ufunc: np.ufunc, values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    indptr = np.asarray(indptr, dtype=np.int64)
    k = np.diff(indptr)
    out = np.zeros(k.size, dtype=np.float64)
    filled = np.flatnonzero(k)
    if filled.size:  # as in segment_sums: only the non-empty segments are listed
        out[filled] = ufunc.reduceat(values[indptr[0] : indptr[-1]], indptr[filled] - indptr[0])
    return out


def column_abs_max(m: sp.csc_array) -> np.ndarray:
    """Largest |value| of each column (0 for a column of zeros), without an |data| temporary."""
    high = _segment_extreme(np.maximum, m.data, m.indptr)
    low = _segment_extreme(np.minimum, m.data, m.indptr)
    return np.maximum(high, -low) + 0.0  # + 0.0: an empty column's −0.0 becomes 0.0


def float32_columns(m: sp.csc_array, columns: np.ndarray) -> np.ndarray:
    """Per column of ``columns``: whether every stored value is exactly a float32 number.

    SAE activations are float32 even when handed over as float64; such a column carries only
    float32 precision, which decides how much spread rounding alone can produce.
    """
    sub = sp.csc_array(m[:, columns])
    with np.errstate(over="ignore"):  # beyond float32's range: inf, so "not float32" as it should
        inexact = sub.data.astype(np.float32) != sub.data
    return segment_sums(inexact, sub.indptr) == 0


def column_means(m: sp.csc_array) -> np.ndarray:
    """Mean of each column over all rows (zeros included)."""
    return segment_sums(m.data, m.indptr) / m.shape[0]


def centred_sum_of_squares(delta: sp.csc_array, mean: np.ndarray) -> np.ndarray:
    """Σᵢ (Δᵢ − mean)² per column, with the zero Δ counted without densifying."""
    n, n_features = delta.shape
    indptr = delta.indptr.astype(np.int64)
    k = np.diff(indptr)
    out = np.empty(n_features)
    # Chunks of whole columns with about _CHUNK_VALUES stored values each.
    cuts = np.searchsorted(indptr, np.arange(0, indptr[-1], _CHUNK_VALUES), side="right") - 1
    cuts = np.unique(np.concatenate([[0], cuts, [n_features]]))
    for lo, hi in itertools.pairwise(cuts.tolist()):
        deviation = delta.data[indptr[lo] : indptr[hi]] - np.repeat(mean[lo:hi], k[lo:hi])
        np.multiply(deviation, deviation, out=deviation)
        out[lo:hi] = segment_sums(deviation, indptr[lo : hi + 1] - indptr[lo])
    return out + (n - k) * mean**2
