"""Length-controlled effect: OLS of each feature's Δ on one shared regressor Δ_len.

Δᶠ = a + b·Δ_len + ε is fitted for all features at once in closed form (one shared regressor,
so only Σ(Δ_len − mean)·Δᶠ and Σ(Δᶠ − mean)² differ per feature). The intercept ``a`` is the
effect at equal lengths; its p-value is the two-sided t test of ``a`` with n − 2 df. Both follow
``scipy.stats.linregress(dlen, d)`` (``intercept`` and ``intercept_stderr``) step by step.

>>> import numpy as np, scipy.sparse as sp
>>> d = sp.csc_array(np.array([[3.0], [5.0], [7.5], [9.0]]))
>>> a, p = length_controlled_effect(d, np.array([1.0, 2.0, 3.0, 4.0]))
>>> round(float(a[0]), 3)
1.0
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy import special

from prefaudit.stats.moments import centred_sum_of_squares, column_means

# scipy.stats.linregress adds this to 1 ± r to avoid dividing by zero when |r| = 1.
_TINY = 1.0e-20


def length_controlled_effect(
    delta: sp.csc_array,
    dlen: np.ndarray,
    *,
    mean: np.ndarray | None = None,
    centred_ss: np.ndarray | None = None,
    cross: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Intercept of Δᶠ regressed on ``dlen`` (with intercept) and its two-sided p, per column.

    ``mean`` and ``centred_ss`` (each column's mean Δ and Σ(Δ − mean)²) may be passed when
    already known, and ``cross``, each column's Σ Δ·(dlen − mean(dlen)) (then ``delta`` is read
    for its shape only). Returns NaN for every column when ``dlen`` has zero variance or there are
    fewer than three pairs (no residual degrees of freedom).
    """
    n, n_features = delta.shape
    nan = np.full(n_features, np.nan)
    x = np.asarray(dlen, dtype=np.float64)
    if n < 3 or np.amax(x) == np.amin(x):
        return nan, nan.copy()
    x_mean = np.mean(x)
    xc = x - x_mean
    ssxm = np.dot(xc, xc) / n
    y_mean = column_means(delta) if mean is None else mean
    # Σ(x − x̄)(y − ȳ) = Σ(x − x̄)·y − ȳ·Σ(x − x̄); the second term is ~0 but kept for accuracy.
    products = delta.T @ xc if cross is None else cross
    ssxym = (products - y_mean * xc.sum()) / n
    ssym = (centred_sum_of_squares(delta, y_mean) if centred_ss is None else centred_ss) / n

    with np.errstate(invalid="ignore", divide="ignore"):
        r = ssxym / np.sqrt(ssxm * ssym)
        r = np.where(ssym == 0, np.where(ssxym == 0, np.nan, 0.0), np.clip(r, -1.0, 1.0))
        slope = ssxym / ssxm
        intercept = y_mean - slope * x_mean
        df = n - 2
        slope_stderr = np.sqrt((1 - r**2) * ssym / ssxm / df)
        intercept_stderr = slope_stderr * np.sqrt(ssxm + x_mean**2)
        t = intercept / intercept_stderr
    p = 2 * special.stdtr(df, -np.abs(t))
    return intercept, p
