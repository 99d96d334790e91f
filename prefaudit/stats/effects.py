"""From per-column summaries of Δ to the table of :func:`~prefaudit.stats.paired_tests`.

Shared by both engines of :func:`~prefaudit.stats.paired_tests` and by
:func:`~prefaudit.stats.grouped.paired_tests_grouped`: the standardised effect with the
constant-Δ rule (see paired_tests' Notes), the p-values and q of the chosen test, the
length-controlled effect, and the DataFrame in :data:`PAIRED_TEST_COLUMNS` order.

>>> import numpy as np
>>> d_z, constant = standardised_effect(
...     4, np.array([True]), np.array([0.5]), np.array([0.0]), np.array([1.0]), np.dtype("float32"),
...     lambda cols: np.full(cols.size, 1e-7))
>>> d_z.tolist(), constant.tolist()
([inf], [True])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from prefaudit.stats.moments import float32_columns
from prefaudit.stats.pvalues import benjamini_hochberg, sign_test_pvalues, t_test_pvalues, wilcoxon_pvalues
from prefaudit.stats.ranks import SignedRanks
from prefaudit.stats.regression import length_controlled_effect

#: The columns of :func:`~prefaudit.stats.paired_tests`' table, in order.
PAIRED_TEST_COLUMNS: tuple[str, ...] = (
    "feature",
    "source",
    "label",
    "n_pairs",
    "n_active",
    "frac_active_chosen",
    "frac_active_rejected",
    "mean_chosen",
    "mean_rejected",
    "delta_mean",
    "d_z",
    "rank_biserial",
    "ci_low",
    "ci_high",
    "p",
    "q",
    "split_half_agree",
    "delta_len_ctrl",
    "p_len_ctrl",
    "direction",
    "n_nonzero",
    "constant_delta",
)

_EPS64, _EPS32 = float(np.finfo(np.float64).eps), float(np.finfo(np.float32).eps)


def declared_dtype(x: Any) -> np.dtype:
    """The dtype ``x`` arrives in (float64 for array-likes without a numpy one): its precision counts."""
    try:
        dtype = np.dtype(getattr(x, "dtype", np.float64))
    except TypeError:  # e.g. a torch dtype
        return np.dtype(np.float64)
    return dtype if dtype.kind in "biuf" else np.dtype(np.float64)


def column_eps(c: sp.csc_array, r: sp.csc_array, columns: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Machine epsilon of the precision the values of ``columns`` carry (see Notes of paired_tests)."""
    if dtype.kind in "biu":  # integers and bools are exact in float64
        return np.full(columns.size, _EPS64)
    if dtype.itemsize < 8:  # float16/float32 inputs
        return np.full(columns.size, float(np.finfo(dtype).eps))
    single = float32_columns(c, columns) & float32_columns(r, columns)
    return np.where(single, _EPS32, _EPS64)


def standardised_effect(
    n: int,
    tested: np.ndarray,
    delta_mean: np.ndarray,
    sd: np.ndarray,
    scale: np.ndarray,
    dtype: np.dtype,
    eps_of: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """``d_z`` = mean(Δ)/sd(Δ) per column and ``constant_delta``; the rules are in paired_tests' Notes.

    ``scale`` is each column's largest |chosen| or |rejected|; ``eps_of(columns)`` gives the
    precision the values of those columns carry (:func:`column_eps`), asked only for the few
    columns whose spread is near rounding.
    """
    n_features = delta_mean.size
    d_z, constant = np.full(n_features, np.nan), np.zeros(n_features, dtype=bool)
    if n < 2:
        return d_z, constant
    with np.errstate(invalid="ignore", divide="ignore"):
        d_z = np.where(sd > 0, delta_mean / sd, np.nan)
    size = np.abs(delta_mean) + scale
    # The loosest tolerance picks the few candidates; only they are checked for float32 values.
    loose = 2 * (max(_EPS32, float(np.finfo(dtype).eps) if dtype.kind == "f" else 0.0) + n * _EPS64)
    candidates = np.flatnonzero(tested & (sd <= loose * size))
    if candidates.size:
        tol = 2 * (eps_of(candidates) + n * _EPS64)
        within = sd[candidates] <= tol * size[candidates]
        flat, tol = candidates[within], tol[within]
        constant[flat] = True
        mean = delta_mean[flat]
        # A constant within rounding of 0 is no effect; any other constant is an infinite one.
        d_z[flat] = np.where(np.abs(mean) <= tol * scale[flat], 0.0, np.copysign(np.inf, mean))
    return d_z, constant


@dataclass
class Summaries:
    """What the table is built from, one entry per feature column (one group of pairs)."""

    n_pairs: int
    n_active: np.ndarray
    n_chosen: np.ndarray  # pairs where chosen is non-zero
    n_rejected: np.ndarray
    sum_chosen: np.ndarray
    sum_rejected: np.ndarray
    delta_mean: np.ndarray
    centred_ss: np.ndarray
    ranks: SignedRanks
    ci_low: np.ndarray
    ci_high: np.ndarray
    split_half_agree: np.ndarray
    scale: np.ndarray  # largest |chosen| or |rejected|
    cross: np.ndarray | None = None  # Σ Δ·(Δ_len − mean), when the engine computed it


def build_table(
    s: Summaries,
    *,
    test: str,
    delta: Callable[[], sp.csc_array],
    eps_of: Callable[[np.ndarray], np.ndarray],
    dtype: np.dtype,
    dlen: np.ndarray | None,
    feature: list[str],
    sources: list[str],
    label: list[str],
) -> pd.DataFrame:
    """paired_tests' table from :class:`Summaries`; ``delta()`` gives Δ (asked only when needed:
    the small-sample Wilcoxon p-values and the length control without ``cross``)."""
    n_pairs, n_features = s.n_pairs, s.delta_mean.size
    variance = s.centred_ss / (n_pairs - 1) if n_pairs > 1 else np.full(n_features, np.nan)
    tested = s.ranks.n_nonzero > 0
    d_z, constant = standardised_effect(
        n_pairs, tested, s.delta_mean, np.sqrt(variance), s.scale, dtype, eps_of
    )
    if test == "wilcoxon":
        small = n_pairs <= 50  # scipy's exact / permutation range needs the values themselves
        p = wilcoxon_pvalues(s.ranks, delta() if small else sp.csc_array((n_pairs, n_features)))
    elif test == "sign":
        p = sign_test_pvalues(s.ranks.n_positive, s.ranks.n_nonzero)
    else:
        p = t_test_pvalues(s.delta_mean, variance, n_pairs)
    p[~tested] = 1.0
    q = np.where(tested, np.nan, 1.0)
    corrected = tested & np.isfinite(p)
    q[corrected] = benjamini_hochberg(p[corrected])
    if dlen is None:
        len_effect, len_p = np.full(n_features, np.nan), np.full(n_features, np.nan)
    else:
        target = delta() if s.cross is None else sp.csc_array((n_pairs, n_features))
        len_effect, len_p = length_controlled_effect(
            target, dlen, mean=s.delta_mean, centred_ss=s.centred_ss, cross=s.cross
        )
        if n_pairs >= 3 and dlen.max() > dlen.min():  # fitted: untested features as for p
            len_effect[~tested], len_p[~tested] = 0.0, 1.0
    mean = s.delta_mean
    direction = np.where(mean > 0, "chosen", np.where(mean < 0, "rejected", "none"))
    return pd.DataFrame(
        {
            "feature": feature,
            "source": sources,
            "label": label,
            "n_pairs": np.full(n_features, n_pairs, dtype=np.int64),
            "n_active": s.n_active.astype(np.int64),
            "frac_active_chosen": s.n_chosen / n_pairs,
            "frac_active_rejected": s.n_rejected / n_pairs,
            "mean_chosen": s.sum_chosen / n_pairs,
            "mean_rejected": s.sum_rejected / n_pairs,
            "delta_mean": mean,
            "d_z": d_z,
            "rank_biserial": s.ranks.rank_biserial,
            "ci_low": s.ci_low,
            "ci_high": s.ci_high,
            "p": p,
            "q": q,
            "split_half_agree": s.split_half_agree,
            "delta_len_ctrl": len_effect,
            "p_len_ctrl": len_p,
            "direction": direction.tolist(),
            "n_nonzero": s.ranks.n_nonzero,
            "constant_delta": constant,
        },
        columns=list(PAIRED_TEST_COLUMNS),
    )
