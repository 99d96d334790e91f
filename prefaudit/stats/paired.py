"""Paired tests of every feature: does a feature's activation differ between chosen and rejected?

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> chosen, rejected = rng.exponential(size=(200, 3)), rng.exponential(size=(200, 3))
>>> chosen[:, 0] += 0.5
>>> table = paired_tests(chosen, rejected, names=["verbose", "polite", "emoji"], n_boot=200)
>>> table.loc[0, ["feature", "direction"]].tolist(), bool(table.loc[0, "q"] < 0.05)
(['verbose', 'chosen'], True)
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from prefaudit.errors import ConfigError
from prefaudit.stats.inputs import as_canonical_csc, length_difference, per_feature_strings, positive_int
from prefaudit.stats.moments import centred_sum_of_squares, column_abs_max, column_means, float32_columns
from prefaudit.stats.pvalues import (
    benjamini_hochberg,
    sign_test_pvalues,
    t_test_pvalues,
    wilcoxon_pvalues,
)
from prefaudit.stats.ranks import signed_ranks
from prefaudit.stats.regression import length_controlled_effect
from prefaudit.stats.resampling import resample_columns, resampling_weights

#: The columns of :func:`paired_tests`' table, in order.
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

#: The tests :func:`paired_tests` can run on Δ.
PAIRED_TESTS: tuple[str, ...] = ("wilcoxon", "sign", "t")


def _pattern(m: sp.csc_array) -> sp.csc_array:
    return sp.csc_array((np.ones(m.nnz, dtype=np.int8), m.indices, m.indptr), shape=m.shape)


def _active_counts(c: sp.csc_array, r: sp.csc_array) -> np.ndarray:
    """Per column, the pairs where chosen or rejected is non-zero: |C| + |R| − |C ∩ R|."""
    both = sp.csc_array(_pattern(c).multiply(_pattern(r)))  # int8 1 × 1: no underflow to 0
    return np.diff(c.indptr) + np.diff(r.indptr) - np.diff(both.indptr)


class _Resampling:
    """Bootstrap CIs and split-half agreement, computed in a background thread.

    They depend on n_pairs, the seed and Δ only. So the weights (resample counts and half
    memberships, :func:`resampling_weights`) are drawn from the start — numpy releases the GIL
    there — while the caller's thread validates the inputs and builds Δ; :meth:`start` then
    queues the products behind them, and the caller ranks Δ and computes the p-values
    meanwhile. Results do not depend on the scheduling: each generator is used by one thread,
    in the documented order. :meth:`cancel` abandons the draws (the inputs were invalid).
    """

    def __init__(self, n_pairs: int, n_boot: int, n_splits: int, seeds: np.random.SeedSequence) -> None:
        self.n_pairs, self.n_boot = n_pairs, n_boot
        self.n_splits = n_splits if n_pairs >= 2 else 0
        self._cancel = threading.Event()
        self._pool = ThreadPoolExecutor(1)
        self._weights = self._pool.submit(
            resampling_weights,
            n_pairs,
            n_boot=n_boot,
            boot_rng=np.random.default_rng(seeds),
            n_splits=self.n_splits,
            split_rng=np.random.default_rng(np.random.SeedSequence(seeds.entropy, spawn_key=(1,))),
            cancel=self._cancel,
        )
        self._pool.shutdown(wait=False)  # the queued work still runs; the thread then exits

    def cancel(self) -> None:
        self._cancel.set()

    def start(self, delta: sp.csc_array, alpha: float) -> Future:
        """Queue the products for the tested columns of Δ; the future gives (low, high, agree)."""
        columns = np.flatnonzero(np.diff(delta.indptr))
        pool = ThreadPoolExecutor(1)
        weights = self._weights
        future = pool.submit(
            lambda: resample_columns(
                delta,
                weights.result(),
                n_boot=self.n_boot,
                n_splits=self.n_splits,
                alpha=alpha,
                columns=columns,
            )
        )
        pool.shutdown(wait=False)
        return future


_EPS64, _EPS32 = float(np.finfo(np.float64).eps), float(np.finfo(np.float32).eps)


def _declared_dtype(x: Any) -> np.dtype:
    """The dtype ``x`` arrives in (float64 for array-likes without a numpy one): its precision counts."""
    try:
        dtype = np.dtype(getattr(x, "dtype", np.float64))
    except TypeError:  # e.g. a torch dtype
        return np.dtype(np.float64)
    return dtype if dtype.kind in "biuf" else np.dtype(np.float64)


def _column_eps(c: sp.csc_array, r: sp.csc_array, columns: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Machine epsilon of the precision the values of ``columns`` carry (see Notes of paired_tests)."""
    if dtype.kind in "biu":  # integers and bools are exact in float64
        return np.full(columns.size, _EPS64)
    if dtype.itemsize < 8:  # float16/float32 inputs
        return np.full(columns.size, float(np.finfo(dtype).eps))
    single = float32_columns(c, columns) & float32_columns(r, columns)
    return np.where(single, _EPS32, _EPS64)


def standardised_effect(
    delta: sp.csc_array,
    delta_mean: np.ndarray,
    sd: np.ndarray,
    c: sp.csc_array,
    r: sp.csc_array,
    dtype: np.dtype,
) -> tuple[np.ndarray, np.ndarray]:
    """``d_z`` = mean(Δ)/sd(Δ) per column and ``constant_delta``; the rules are in paired_tests' Notes."""
    n, n_features = delta.shape
    d_z, constant = np.full(n_features, np.nan), np.zeros(n_features, dtype=bool)
    if n < 2:
        return d_z, constant
    with np.errstate(invalid="ignore", divide="ignore"):
        d_z = np.where(sd > 0, delta_mean / sd, np.nan)
    tested = np.diff(delta.indptr) > 0
    scale = np.maximum(column_abs_max(c), column_abs_max(r))
    size = np.abs(delta_mean) + scale
    # The loosest tolerance picks the few candidates; only they are checked for float32 values.
    loose = 2 * (max(_EPS32, float(np.finfo(dtype).eps) if dtype.kind == "f" else 0.0) + n * _EPS64)
    candidates = np.flatnonzero(tested & (sd <= loose * size))
    if candidates.size:
        tol = 2 * (_column_eps(c, r, candidates, dtype) + n * _EPS64)
        within = sd[candidates] <= tol * size[candidates]
        flat, tol = candidates[within], tol[within]
        constant[flat] = True
        mean = delta_mean[flat]
        # A constant within rounding of 0 is no effect; any other constant is an infinite one.
        d_z[flat] = np.where(np.abs(mean) <= tol * scale[flat], 0.0, np.copysign(np.inf, mean))
    return d_z, constant


def _rows(x: Any) -> int | None:
    """The number of rows of a 2-D array or sparse matrix, without converting it (else None)."""
    shape = getattr(x, "shape", None)
    return int(shape[0]) if isinstance(shape, tuple) and len(shape) == 2 and shape[0] > 0 else None


def _seed_sequence(seed: Any) -> np.random.SeedSequence:
    if seed is not None and (
        isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0
    ):
        raise ConfigError(f"seed must be a non-negative integer or None; got {seed!r}")
    return np.random.SeedSequence(None if seed is None else int(seed))


def paired_tests(
    chosen: Any,
    rejected: Any,
    *,
    test: str = "wilcoxon",
    lengths: Any = None,
    n_boot: int = 1000,
    n_splits: int = 20,
    seed: int | None = 0,
    names: Sequence[str] | None = None,
    source: str | Sequence[str] = "sae",
    labels: Sequence[str] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Test every feature for a chosen-vs-rejected difference, one table row per feature.

    >>> import numpy as np
    >>> chosen = np.array([[1.0, 0.0], [2.0, 0.5], [1.5, 0.0], [3.0, 0.0], [2.5, 0.2]])
    >>> rejected = np.array([[0.5, 0.0], [0.0, 0.5], [1.0, 0.1], [0.0, 0.0], [2.0, 0.0]])
    >>> t = paired_tests(chosen, rejected, names=["lists", "emoji"], n_boot=100)
    >>> t[["feature", "n_active", "n_nonzero", "direction"]].values.tolist()
    [['lists', 5, 5, 'chosen'], ['emoji', 3, 2, 'chosen']]

    For feature f and pair i, Δᵢᶠ = chosenᵢᶠ − rejectedᵢᶠ. Sparse inputs stay sparse throughout
    (the work grows with the number of non-zero Δ, not pairs × features).

    Parameters
    ----------
    chosen, rejected : numpy.ndarray or scipy.sparse matrix/array, shape (n_pairs, n_features)
        Pooled per-response feature activations; row i of both is pair i. Any sparse format.
    test : {"wilcoxon", "sign", "t"}
        The test behind ``p``: ``scipy.stats.wilcoxon(d)`` with scipy's defaults (zeros dropped,
        no continuity correction, exact/permutation/normal chosen as ``method="auto"`` does),
        ``scipy.stats.binomtest(n_positive, n_nonzero, 0.5)``, or
        ``scipy.stats.ttest_rel(chosen_col, rejected_col)``.
    lengths : tuple of two 1-D arrays, or 1-D array, optional
        ``(len_chosen, len_rejected)`` or Δ_len directly. Enables ``delta_len_ctrl`` and
        ``p_len_ctrl``.
    n_boot : int
        Bootstrap replicates for ``ci_low``/``ci_high`` (0 skips them: NaN).
    n_splits : int
        Random half-splits for ``split_half_agree`` (0 skips it: NaN).
    seed : int or None
        Seeds the resampling (see Notes).
    names, labels : sequence of str, optional
        One per feature column; default ``str(j)`` and ``""``.
    source : str or sequence of str
        Where the features come from (``"sae"``, ``"concept"``, …); one string or one per column.
    alpha : float
        The CI covers 1 − alpha.

    Returns
    -------
    pandas.DataFrame
        One row per feature column, in column order, with the columns of
        :data:`PAIRED_TEST_COLUMNS`:

        - ``n_pairs``; ``n_active``: pairs where the feature is non-zero in chosen or rejected;
          ``frac_active_chosen/rejected``: fraction of pairs where it is non-zero on that side.
        - ``mean_chosen``, ``mean_rejected``, ``delta_mean``: means over all pairs, zeros included.
        - ``d_z``: mean(Δ)/sd(Δ, ddof=1); ±inf (or 0) when Δ is constant, NaN for an untested
          feature or n_pairs < 2 (see Notes).
        - ``rank_biserial``: (W⁺ − W⁻)/(W⁺ + W⁻) over the ranks of the non-zero |Δ| (Kerby).
        - ``ci_low``, ``ci_high``: percentile bootstrap CI of mean Δ (pairs resampled).
        - ``p``, ``q``: two-sided p of ``test`` and its Benjamini–Hochberg q.
        - ``split_half_agree``: fraction of ``n_splits`` random half-splits whose halves' mean Δ
          have the same non-zero sign.
        - ``delta_len_ctrl``, ``p_len_ctrl``: intercept of the OLS of Δᶠ on Δ_len and its
          two-sided p (``scipy.stats.linregress``); NaN without ``lengths`` or when Δ_len is
          constant.
        - ``direction``: ``"chosen"`` (delta_mean > 0), ``"rejected"`` (< 0) or ``"none"``.
        - ``n_nonzero``: pairs with Δ ≠ 0.
        - ``constant_delta``: Δ is the same in every pair up to rounding, so d_z is a
          convention (±inf or 0), not an estimate (see Notes).

    Raises
    ------
    ConfigError
        For inputs that are not 2-D, differ in shape, hold NaN/inf (the message names the
        argument, feature column and row), or for bad options.

    Notes
    -----
    **Untested features.** A feature with no non-zero Δ carries no evidence either way and is
    not tested: ``p = q = 1``, ``split_half_agree = NaN``, ``ci = [0, 0]`` (every resample mean
    is 0), ``delta_len_ctrl = 0`` and ``p_len_ctrl = 1``. It is left out of the
    Benjamini–Hochberg count m, so dead features do not dilute the correction. A tested
    feature whose p is NaN (the t test with one pair) gets ``q = NaN`` and is left out too.

    **Constant Δ.** When a tested feature's Δ has no spread beyond what rounding makes,
    mean/sd would be rounding noise (≈ 10¹⁶ for a Δ equal in every pair) or 0/0. Such a column
    has ``constant_delta = True`` and ``d_z = ±inf`` (the sign of the mean: every pair moves the
    same way by the same amount), or ``d_z = 0`` when the mean itself is within rounding of 0;
    ``p``/``q`` are those of the test on the actual values, as scipy gives them. "No spread" is
    ``sd ≤ 2·(ε + n·ε₆₄)·(|mean| + s)``, s the column's largest |chosen| or |rejected| and ε the
    precision the values carry: float16/float32 inputs their own ε; float64 columns whose values
    are all float32 numbers (SAE activations) ε₃₂, others ε₆₄. Why: each Δᵢ = cᵢ − rᵢ is known to
    ε·s, so rounding spreads a constant Δ by at most √2·ε·s; the float64 mean of n values errs by
    at most n·ε₆₄·|mean|, which the centred sum turns into spread of the same size. Any real
    spread of float32 data is well above 2.4·10⁻⁷ of its scale; a float64 Δ of 0.7 ± 10⁻⁹ keeps
    its finite d_z (≈ 7·10⁸). Untested features (no non-zero Δ) keep ``d_z = NaN``.

    **Resampling.** The bootstrap uses ``rng = numpy.random.default_rng(seed)`` and draws, for
    replicate b = 0 … n_boot − 1 in turn, ``rng.integers(0, n_pairs, size=n_pairs)``; the
    replicate means are accumulated in float32 and the CI is numpy's linear percentile at
    alpha/2 and 1 − alpha/2. The splits use an independent stream,
    ``default_rng(SeedSequence(seed, spawn_key=(1,)))``: split s takes
    ``perm = rng.permutation(n_pairs)`` and compares ``perm[: n_pairs // 2]`` with the rest.
    Only tested features are bootstrapped and split.

    **Cost.** Time and memory grow with the non-zero Δ (nnz), not pairs × features: the ranks
    sort each column's nnz, and the resampling does nnz × (n_boot + 2·n_splits) multiply-adds
    (:mod:`~prefaudit.stats.products`), which dominate at scale; they run in up to four threads
    beside the ranks and p-values (one per usable CPU), with the same results for any number.
    260,000 pairs × 65,536 SAE features (≈ 64 active per response, 3.3·10⁷ non-zero Δ) with
    the defaults: ≈ 28 s of CPU on a busy 2-core machine and 2.1 GB peak RSS with the inputs
    (``benchmarks/bench_stats.py``).
    """
    if test not in PAIRED_TESTS:
        raise ConfigError(f"test must be one of {', '.join(PAIRED_TESTS)}; got {test!r}")
    n_boot = positive_int(n_boot, "n_boot", minimum=0)
    n_splits = positive_int(n_splits, "n_splits", minimum=0)
    if not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 1:
        raise ConfigError(f"alpha must be a number strictly between 0 and 1; got {alpha!r}")
    seeds = _seed_sequence(seed)

    early = _rows(chosen)
    resampling = None if early is None else _Resampling(early, n_boot, n_splits, seeds)
    try:
        dtype = np.result_type(_declared_dtype(chosen), _declared_dtype(rejected))
        c = as_canonical_csc(chosen, "chosen")
        r = as_canonical_csc(rejected, "rejected")
        if c.shape != r.shape:
            raise ConfigError(
                f"chosen has shape {c.shape} but rejected has shape {r.shape}; both must be "
                "(n_pairs × n_features) with row i of each belonging to pair i"
            )
        n_pairs, n_features = c.shape
        if n_pairs == 0:
            raise ConfigError("chosen and rejected have no rows; at least one pair is needed")
        feature = per_feature_strings(names, n_features, "names", None)
        label = per_feature_strings(labels, n_features, "labels", "")
        sources = per_feature_strings(source, n_features, "source", "sae")
        dlen = length_difference(lengths, n_pairs)
    except BaseException:
        if resampling is not None:
            resampling.cancel()
        raise
    if resampling is None or resampling.n_pairs != n_pairs:  # array-likes without a .shape
        if resampling is not None:
            resampling.cancel()
        resampling = _Resampling(n_pairs, n_boot, n_splits, seeds)

    delta = sp.csc_array(c - r)
    delta.sum_duplicates()
    delta.eliminate_zeros()
    resampled = resampling.start(delta, float(alpha))

    n_active = _active_counts(c, r)
    frac_active_chosen, frac_active_rejected = np.diff(c.indptr) / n_pairs, np.diff(r.indptr) / n_pairs
    mean_chosen, mean_rejected = column_means(c), column_means(r)
    delta_mean = column_means(delta)
    centred_ss = centred_sum_of_squares(delta, delta_mean)
    variance = centred_ss / (n_pairs - 1) if n_pairs > 1 else np.full(n_features, np.nan)
    d_z, constant = standardised_effect(delta, delta_mean, np.sqrt(variance), c, r, dtype)
    del c, r  # only Δ is needed from here on: frees their memory before the big temporaries

    ranks = signed_ranks(delta)
    tested = ranks.n_nonzero > 0
    if test == "wilcoxon":
        p = wilcoxon_pvalues(ranks, delta)
    elif test == "sign":
        p = sign_test_pvalues(ranks.n_positive, ranks.n_nonzero)
    else:
        p = t_test_pvalues(delta_mean, variance, n_pairs)
    p[~tested] = 1.0
    q = np.where(tested, np.nan, 1.0)
    corrected = tested & np.isfinite(p)
    q[corrected] = benjamini_hochberg(p[corrected])

    ci_low, ci_high, split_half = resampled.result()

    if dlen is None:
        len_effect, len_p = np.full(n_features, np.nan), np.full(n_features, np.nan)
    else:
        len_effect, len_p = length_controlled_effect(delta, dlen, mean=delta_mean, centred_ss=centred_ss)
        if n_pairs >= 3 and dlen.max() > dlen.min():  # fitted: untested features as for p
            len_effect[~tested], len_p[~tested] = 0.0, 1.0

    direction = np.where(delta_mean > 0, "chosen", np.where(delta_mean < 0, "rejected", "none"))
    table = pd.DataFrame(
        {
            "feature": feature,
            "source": sources,
            "label": label,
            "n_pairs": np.full(n_features, n_pairs, dtype=np.int64),
            "n_active": n_active.astype(np.int64),
            "frac_active_chosen": frac_active_chosen,
            "frac_active_rejected": frac_active_rejected,
            "mean_chosen": mean_chosen,
            "mean_rejected": mean_rejected,
            "delta_mean": delta_mean,
            "d_z": d_z,
            "rank_biserial": ranks.rank_biserial,
            "ci_low": ci_low,
            "ci_high": ci_high,
            "p": p,
            "q": q,
            "split_half_agree": split_half,
            "delta_len_ctrl": len_effect,
            "p_len_ctrl": len_p,
            "direction": direction.tolist(),
            "n_nonzero": ranks.n_nonzero,
            "constant_delta": constant,
        },
        columns=list(PAIRED_TEST_COLUMNS),
    )
    return table
