"""Column moments of a sparse (pairs × features) matrix, zeros included, without densifying.

>>> import numpy as np, scipy.sparse as sp
>>> m = sp.csc_array(np.array([[1.0, 0.0], [3.0, 0.0]]))
>>> column_means(m).tolist(), centred_sum_of_squares(m, column_means(m)).tolist()
([2.0, 0.0], [2.0, 0.0])
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _column_of_each_value(m: sp.csc_array) -> np.ndarray:
    return np.repeat(np.arange(m.shape[1]), np.diff(m.indptr))


def column_means(m: sp.csc_array) -> np.ndarray:
    """Mean of each column over all rows (zeros included), summing the stored values in order."""
    n, n_features = m.shape
    column = _column_of_each_value(m)
    return np.bincount(column, weights=m.data, minlength=n_features) / n


def centred_sum_of_squares(delta: sp.csc_array, mean: np.ndarray) -> np.ndarray:
    """Σᵢ (Δᵢ − mean)² per column, with the zero Δ counted without densifying."""
    n, n_features = delta.shape
    k = np.diff(delta.indptr)
    column = _column_of_each_value(delta)
    deviation = delta.data - mean[column]
    return np.bincount(column, weights=deviation * deviation, minlength=n_features) + (n - k) * mean**2
