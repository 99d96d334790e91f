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

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from prefaudit.errors import ConfigError, MissingDependencyError
from prefaudit.stats import kernels
from prefaudit.stats.effects import PAIRED_TEST_COLUMNS, Summaries, build_table, column_eps, declared_dtype
from prefaudit.stats.fused import column_pass
from prefaudit.stats.inputs import as_canonical_csc, length_difference, per_feature_strings, positive_int
from prefaudit.stats.moments import centred_sum_of_squares, column_abs_max, column_means, segment_sums
from prefaudit.stats.ranks import signed_ranks
from prefaudit.stats.resampling import resample_columns, resampling_weights

__all__ = ["ENGINES", "PAIRED_TESTS", "PAIRED_TEST_COLUMNS", "paired_tests", "resolve_engine"]


#: The tests :func:`paired_tests` can run on Δ.
PAIRED_TESTS: tuple[str, ...] = ("wilcoxon", "sign", "t")

#: How :func:`paired_tests` computes the per-column passes (see its ``engine`` argument).
ENGINES: tuple[str, ...] = ("auto", "numba", "numpy")

#: The environment variable that picks the engine when ``engine`` is not given.
ENGINE_VARIABLE = "PREFAUDIT_STATS_ENGINE"


def resolve_engine(engine: str | None) -> str:
    """``"numba"`` or ``"numpy"``: the engine asked for (or ``$PREFAUDIT_STATS_ENGINE``; ``auto``:
    numba when it imports)."""
    chosen = os.environ.get(ENGINE_VARIABLE, "auto") if engine is None else engine
    if chosen not in ENGINES:
        where = f"${ENGINE_VARIABLE}" if engine is None else "engine"
        raise ConfigError(f"{where} must be one of {', '.join(ENGINES)}; got {chosen!r}")
    if chosen == "numba" and not kernels.AVAILABLE:
        raise MissingDependencyError("engine='numba' needs numba: pip install numba (or use engine='numpy')")
    if chosen == "auto":
        return "numba" if kernels.AVAILABLE else "numpy"
    return chosen


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

    def weights(self) -> np.ndarray:
        """The drawn weights (waits for the draws)."""
        return self._weights.result()

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


def check_options(
    test: str, n_boot: Any, n_splits: Any, alpha: Any, seed: Any
) -> tuple[int, int, np.random.SeedSequence]:
    """Validate paired_tests' options; ``(n_boot, n_splits, seeds)`` or :class:`ConfigError`."""
    if test not in PAIRED_TESTS:
        raise ConfigError(f"test must be one of {', '.join(PAIRED_TESTS)}; got {test!r}")
    n_boot = positive_int(n_boot, "n_boot", minimum=0)
    n_splits = positive_int(n_splits, "n_splits", minimum=0)
    if not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 1:
        raise ConfigError(f"alpha must be a number strictly between 0 and 1; got {alpha!r}")
    return n_boot, n_splits, _seed_sequence(seed)


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
    engine: str | None = None,
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
    engine : {"auto", "numba", "numpy"}, optional
        How the per-column passes run: ``"numba"`` — one compiled pass over each column's
        non-zero Δ for the moments, ranks, bootstrap and split halves
        (:mod:`~prefaudit.stats.kernels`); ``"numpy"`` — vectorised numpy passes; ``"auto"``
        (default, or ``$PREFAUDIT_STATS_ENGINE``) — numba when it imports. Both draw the same
        resamples and give the same table, up to the float rounding order of sums (≈ 1e-15
        relative for the float64 moments, ≈ 1e-6 for the float32 bootstrap sums).

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
    (one gather of an (n_boot + 2·n_splits)-byte weight row per non-zero Δ), which dominate at
    scale. They run in up to four threads (one per usable CPU), with the same results for any
    number; ``benchmarks/bench_stats.py`` measures both engines at 260,000 pairs × 65,536 SAE
    features.
    """
    n_boot, n_splits, seeds = check_options(test, n_boot, n_splits, alpha, seed)
    fused = resolve_engine(engine) == "numba"

    early = _rows(chosen)
    resampling = None if early is None else _Resampling(early, n_boot, n_splits, seeds)
    try:
        dtype = np.result_type(declared_dtype(chosen), declared_dtype(rejected))
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
    resampled = None if fused else resampling.start(delta, float(alpha))

    common = {
        "n_pairs": n_pairs,
        "n_active": _active_counts(c, r),
        "n_chosen": np.diff(c.indptr),
        "n_rejected": np.diff(r.indptr),
        "sum_chosen": segment_sums(c.data, c.indptr),
        "sum_rejected": segment_sums(r.data, r.indptr),
        "scale": np.maximum(column_abs_max(c), column_abs_max(r)),
    }
    if fused:
        xc = None if dlen is None else dlen - np.mean(dlen)
        out = column_pass(
            delta,
            resampling.weights(),
            n_boot=n_boot,
            n_splits=resampling.n_splits,
            alpha=float(alpha),
            xc=xc,
        )
        # The moments as the numpy engine sums them (numpy's summation order): on a Δ that is
        # constant up to rounding, the t test's p is a ratio of rounding residues, and these
        # equal scipy's. Two vectorised passes, cheap beside the fused one.
        delta_mean = column_means(delta)
        summaries = Summaries(
            **common,
            delta_mean=delta_mean,
            centred_ss=centred_sum_of_squares(delta, delta_mean),
            ranks=out.ranks(0),
            ci_low=out.ci_low[0],
            ci_high=out.ci_high[0],
            split_half_agree=out.split_half_agree[0],
        )
    else:
        delta_mean = column_means(delta)
        centred_ss = centred_sum_of_squares(delta, delta_mean)
        ranks = signed_ranks(delta)
        ci_low, ci_high, split_half = resampled.result()
        summaries = Summaries(
            **common,
            delta_mean=delta_mean,
            centred_ss=centred_ss,
            ranks=ranks,
            ci_low=ci_low,
            ci_high=ci_high,
            split_half_agree=split_half,
        )
    return build_table(
        summaries,
        test=test,
        delta=lambda: delta,
        eps_of=lambda columns: column_eps(c, r, columns, dtype),
        dtype=dtype,
        dlen=dlen,
        feature=feature,
        sources=sources,
        label=label,
    )
