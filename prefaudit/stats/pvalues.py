"""Two-sided p-values of paired tests, vectorised over features, matching scipy per feature.

Each function reproduces what scipy computes for one feature — ``scipy.stats.wilcoxon`` with its
defaults, ``scipy.stats.binomtest(k, n, 0.5)``, ``scipy.stats.ttest_rel`` and
``scipy.stats.false_discovery_control(method="bh")`` — for all features in one pass.

>>> import numpy as np
>>> sign_test_pvalues(np.array([2, 5]), np.array([10, 10])).round(6).tolist()
[0.109375, 1.0]
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy import special, stats

from prefaudit.stats.ranks import SignedRanks, dense_average_ranks

# scipy.stats.wilcoxon(method="auto"): the normal approximation above 50 pairs; at most 50 pairs,
# the exact null distribution when no Δ is zero or tied, otherwise a permutation test that
# enumerates all 2ⁿ sign flips when n ≤ 13 (2¹³ < its 9,999 resamples), else the approximation.
_EXACT_MAX_PAIRS = 50
_PERMUTATION_MAX_PAIRS = 13


def wilcoxon_pvalues(ranks: SignedRanks, delta: sp.csc_array) -> np.ndarray:
    """Two-sided ``scipy.stats.wilcoxon(d).pvalue`` for every column ``d`` of ``delta``.

    Columns without a non-zero Δ get NaN (scipy's value); callers treat them as untested.
    """
    n_pairs = delta.shape[0]
    k = ranks.n_nonzero.astype(np.float64)
    # Normal approximation with the tie-corrected variance, no continuity correction.
    mean = k * (k + 1.0) * 0.25
    var = k * (k + 1.0) * (2.0 * k + 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt((var - ranks.tie_term / 2) / 24)
        z = (ranks.w_plus - mean) / se
    p = 2 * special.ndtr(-np.abs(z))
    p[ranks.n_nonzero == 0] = np.nan
    if n_pairs > _EXACT_MAX_PAIRS:
        return p

    exact = (ranks.n_nonzero == n_pairs) & ~ranks.has_ties
    if exact.any():
        p[exact] = _exact_pvalues(ranks.w_plus[exact], n_pairs)
    if n_pairs <= _PERMUTATION_MAX_PAIRS:
        permuted = ~exact & (ranks.n_nonzero > 0)
        if permuted.any():
            columns = np.flatnonzero(permuted)
            d = delta[:, columns].toarray()
            p[columns] = _sign_flip_pvalues(d, ranks.w_plus[columns])
    return p


def _wilcoxon_null_counts(n: int) -> np.ndarray:
    """Number of the 2ⁿ sign patterns giving each W⁺ = 0 … n(n+1)/2, as exact integers."""
    counts = np.ones(1, dtype=np.int64)
    for i in range(1, n + 1):
        grown = np.zeros(counts.size + i, dtype=np.int64)
        grown[: counts.size] += counts
        grown[i:] += counts
        counts = grown
    return counts


def _exact_pvalues(w_plus: np.ndarray, n: int) -> np.ndarray:
    # scipy: p = min(1, 2·min(P(T ≥ W⁺), P(T ≤ W⁺))). Its float sums of the pmf are exact (every
    # term is a multiple of 2⁻ⁿ, n ≤ 50), so exact integer tail counts give the same numbers.
    counts = _wilcoxon_null_counts(n)
    below = np.cumsum(counts)  # P(T ≤ w)·2ⁿ
    above = np.cumsum(counts[::-1])[::-1]  # P(T ≥ w)·2ⁿ
    w = w_plus.astype(np.int64)
    tail = np.minimum(below[w], above[w]).astype(np.float64)
    return np.minimum(2 * tail / 2.0**n, 1.0)


def _sign_flip_pvalues(d: np.ndarray, w_plus: np.ndarray) -> np.ndarray:
    """Exact sign-flip permutation p-values of W⁺ for columns of a small dense Δ (n ≤ 13)."""
    n = d.shape[0]
    # Doubled ranks make every W⁺ an integer, so the null distribution is an exact count table.
    # It depends only on the multiset of a column's ranks, which few distinct columns have.
    doubled = np.rint(2 * dense_average_ranks(np.abs(d))).astype(np.int64)
    ranked = np.sort(doubled, axis=0).T
    # One integer per multiset (doubled ranks ≤ 2n = 26, so 27¹³ < 2⁶³ fits int64).
    key = ranked @ (np.int64(2 * n + 1) ** np.arange(n, dtype=np.int64))
    _, first, which = np.unique(key, return_index=True, return_inverse=True)
    patterns = ranked[first]
    size = int(patterns.sum(axis=1).max()) + 1
    counts = np.zeros((patterns.shape[0], size), dtype=np.int64)
    counts[:, 0] = 1
    for i in range(n):
        # Flipping a pair's sign adds its doubled rank to W⁺ or not (a zero Δ adds 0 either way).
        grown = counts.copy()
        for shift in np.unique(patterns[:, i]):
            rows = np.flatnonzero(patterns[:, i] == shift)
            if shift == 0:
                grown[rows] += counts[rows]
            else:
                grown[rows, shift:] += counts[rows, :-shift]
        counts = grown
    at_most = np.cumsum(counts, axis=1)
    at_least = counts.sum(axis=1, keepdims=True) - at_most + counts
    observed = np.rint(2 * w_plus).astype(np.int64)
    which = which.ravel()
    tail = np.minimum(at_most[which, observed], at_least[which, observed]).astype(np.float64)
    return np.clip(2 * tail / 2.0**n, 0.0, 1.0)


def sign_test_pvalues(n_positive: np.ndarray, n_nonzero: np.ndarray) -> np.ndarray:
    """Two-sided ``scipy.stats.binomtest(n_positive, n_nonzero, 0.5).pvalue``; NaN where n = 0."""
    k = np.minimum(n_positive, n_nonzero - n_positive)
    with np.errstate(invalid="ignore"):
        # The binomial(n, ½) pmf is symmetric, so the two-sided p doubles the smaller tail.
        p = np.minimum(2 * stats.binom.cdf(k, n_nonzero, 0.5), 1.0)
    p[2 * n_positive == n_nonzero] = 1.0
    p[n_nonzero == 0] = np.nan
    return p


def t_test_pvalues(mean: np.ndarray, variance: np.ndarray, n_pairs: int) -> np.ndarray:
    """Two-sided ``scipy.stats.ttest_rel`` p from the mean and (ddof=1) variance of Δ."""
    if n_pairs < 2:
        return np.full(mean.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = mean / np.sqrt(variance / n_pairs)
    return 2 * special.stdtr(n_pairs - 1, -np.abs(t))


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q); NaN p-values are left out.

    **Rule for NaN.** A NaN p is an untested hypothesis: its q is NaN and it does not count in
    the number of tests m — the others are adjusted over the m non-NaN p-values. On those,
    the result equals ``scipy.stats.false_discovery_control(p[~isnan(p)], method="bh")`` (scipy
    itself raises on NaN). Without NaN this is exactly scipy's result.

    >>> benjamini_hochberg(np.array([0.01, 0.04, 0.03])).round(3).tolist()
    [0.03, 0.04, 0.04]
    >>> benjamini_hochberg(np.array([0.01, np.nan, 0.04, 0.03])).round(3).tolist()
    [0.03, nan, 0.04, 0.04]
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    pt = p[tested]
    m = pt.size
    if m == 0:
        return out
    # A NaN would sort last and its NaN would spread through the running minimum to every q.
    order = np.argsort(pt)
    q = pt[order] * (m / np.arange(1, m + 1, dtype=np.float64))
    np.minimum.accumulate(q[::-1], out=q[::-1])
    adjusted = np.empty(m)
    adjusted[order] = q
    out[tested] = np.clip(adjusted, 0.0, 1.0)
    return out
