"""The fast paths of prefaudit.stats at scale, each against a plain reference, so none can drift.

Covers the blockwise signed ranks (ties, padding, one-value columns), the segment moments, the
shared gather-and-multiply kernel (batched and slice-by-slice columns, several threads, parts
of different dtypes), the fused bootstrap + split halves, the background resampling in
paired_tests, and small or degenerate inputs (all-zero columns, n_pairs = 2, dense input).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

import prefaudit.stats.moments as moments
import prefaudit.stats.products as products
import prefaudit.stats.ranks as ranks_module
from prefaudit.errors import ConfigError
from prefaudit.stats import paired_tests
from prefaudit.stats.paired import _Resampling
from prefaudit.stats.products import column_products, one_blas_thread
from prefaudit.stats.resampling import (
    Cancelled,
    _order_statistics,
    _virtual_index,
    bootstrap_mean_ci,
    resample_columns,
    resampling_weights,
    split_half_agreement,
)


def sparse_case(seed: int, n_pairs: int, n_features: int, rate: float = 0.05, integer: bool = False):
    """SAE-like chosen/rejected (dense arrays): mostly zeros, a few popular columns, some ties."""
    rng = np.random.default_rng(seed)
    rates = np.minimum(rate * rng.lognormal(0, 1, n_features), 0.9)
    rates[:3] = [0.9, 0.5, 0.0]  # one long column, one half-active column, one never active

    def side(shift: float) -> np.ndarray:
        values = (
            rng.poisson(2.0, (n_pairs, n_features)) + 1.0
            if integer
            else rng.lognormal(0, 1, (n_pairs, n_features))
        )
        return np.where(rng.random((n_pairs, n_features)) < rates, values + shift, 0.0)

    chosen, rejected = side(0.1), side(0.0)
    chosen[:, 3] = rejected[:, 3]  # active but Δ ≡ 0
    chosen[:, 4], rejected[:, 4] = 0.0, 0.0
    chosen[7, 4] = 2.5  # exactly one non-zero Δ
    return chosen, rejected


def csc_delta(chosen: np.ndarray, rejected: np.ndarray) -> sp.csc_array:
    delta = sp.csc_array(chosen - rejected)
    delta.eliminate_zeros()
    return delta


def reference_ranks(d: np.ndarray) -> tuple[int, float, float, bool]:
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return 0, 0.0, 0.0, False
    _, t = np.unique(np.abs(nonzero), return_counts=True)
    w = stats.rankdata(np.abs(nonzero))[nonzero > 0].sum()
    return int((nonzero > 0).sum()), float(w), float(np.sum(t**3 - t)), bool((t > 1).any())


@pytest.mark.parametrize("block_elements", [1 << 18, 300, 7])
@pytest.mark.parametrize("integer", [False, True])
def test_blockwise_signed_ranks_equal_rankdata(monkeypatch, block_elements, integer):
    monkeypatch.setattr(ranks_module, "_BLOCK_ELEMENTS", block_elements)
    chosen, rejected = sparse_case(1, 400, 60, rate=0.1, integer=integer)
    # Ties with opposite signs, and a tie in the last valid slot (next to the padding).
    chosen[:6, 5], rejected[:6, 5] = [1.0, 0, 2.0, 0, 3.0, 3.0], [0, 1.0, 0, 2.0, 0, 0]
    rejected[6:, 5] = 0.0
    chosen[6:, 5] = 0.0
    delta = csc_delta(chosen, rejected)
    result = ranks_module.signed_ranks(delta)
    for j in range(chosen.shape[1]):
        n_pos, w, tie, has = reference_ranks(chosen[:, j] - rejected[:, j])
        assert result.n_positive[j] == n_pos, j
        assert result.w_plus[j] == w, j  # exact: integer or half-integer sums
        assert result.tie_term[j] == tie, j
        assert result.has_ties[j] == has, j
    assert result.has_ties.any() and not result.has_ties.all()


def test_segment_moments_with_empty_columns_and_small_chunks(monkeypatch):
    monkeypatch.setattr(moments, "_CHUNK_VALUES", 5)
    chosen, rejected = sparse_case(2, 50, 40, rate=0.05)
    d = chosen - rejected
    d[:, :2] = 0.0  # empty first and last columns
    d[:, -1] = 0.0
    delta = csc_delta(d, np.zeros_like(d))
    mean = moments.column_means(delta)
    np.testing.assert_allclose(mean, d.mean(axis=0), rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(
        moments.centred_sum_of_squares(delta, mean),
        ((d - d.mean(axis=0)) ** 2).sum(axis=0),
        rtol=1e-11,
        atol=1e-14,
    )
    np.testing.assert_array_equal(
        moments.segment_sums(np.arange(5.0), np.array([0, 0, 2, 2, 5, 5])), [0, 1, 0, 9, 0]
    )


@pytest.mark.parametrize("unit", [1 << 20, 64, 1])  # batched, mixed, every column sliced
@pytest.mark.parametrize("threads", [1, 3])
def test_column_products_equal_dense_products(monkeypatch, unit, threads):
    monkeypatch.setattr(products, "_UNIT_ELEMENTS", unit)
    monkeypatch.setattr(products, "_SMALL_WORK", 0)  # threads even for this small case
    chosen, rejected = sparse_case(3, 300, 50)
    delta = csc_delta(chosen, rejected)
    rng = np.random.default_rng(4)
    weights = rng.integers(0, 5, size=(300, 13)).astype(np.uint8)
    got = [np.full((50, 9), np.nan, np.float32), np.full((50, 4), np.nan)]
    calls = np.zeros(50, dtype=int)

    def finish(cols, sums):
        assert sums[0].dtype == np.float32 and sums[1].dtype == np.float64
        got[0][cols], got[1][cols] = sums
        calls[cols] += 1

    columns = np.arange(50)[::-1]  # any order; columns without a non-zero Δ are skipped
    column_products(
        delta, weights, columns, finish, parts=[(9, np.float32), (4, np.float64)], threads=threads
    )
    dense = (chosen - rejected).T @ weights.astype(np.float64)
    tested = np.diff(delta.indptr) > 0
    np.testing.assert_array_equal(calls, tested.astype(int))
    np.testing.assert_allclose(got[0][tested], dense[tested, :9], rtol=1e-5)
    np.testing.assert_allclose(got[1][tested], dense[tested, 9:], rtol=1e-12)
    assert np.isnan(got[1][~tested]).all()


def test_one_blas_thread_nests_and_restores():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    with one_blas_thread():
        with one_blas_thread():
            inside = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert [
            p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"
        ] == inside
    assert all(n == 1 for n in inside)
    assert [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"] == before


def reference_resampling(d: np.ndarray, n_boot: int, n_splits: int, seed: int, alpha: float = 0.05):
    """Plain loops over the documented draws: bootstrap indices, then split permutations."""
    n = d.shape[0]
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.integers(0, n, size=n) for _ in range(n_boot)])
    means = d[idx].mean(axis=1)  # (n_boot, features)
    ci = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0).T
    split_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    agree = np.zeros(d.shape[1])
    for _ in range(n_splits):
        perm = split_rng.permutation(n)
        first, second = np.sign(d[perm[: n // 2]].sum(axis=0)), np.sign(d[perm[n // 2 :]].sum(axis=0))
        agree += (first == second) & (first != 0)
    tested = (d != 0).any(axis=0)
    return ci, np.where(tested, agree / max(n_splits, 1), np.nan)


@pytest.mark.parametrize("unit", [1 << 20, 500])
def test_fused_bootstrap_and_splits_equal_plain_loops(monkeypatch, unit):
    monkeypatch.setattr(products, "_UNIT_ELEMENTS", unit)
    monkeypatch.setattr(products, "_SMALL_WORK", 0)
    chosen, rejected = sparse_case(5, 240, 30, integer=True)  # integer Δ: half sums are exact
    d = chosen - rejected
    table = paired_tests(chosen, rejected, n_boot=150, n_splits=9, seed=6)
    ci, agree = reference_resampling(d, 150, 9, 6)
    atol = 1e-6 * float(np.abs(d).mean())
    np.testing.assert_allclose(table[["ci_low", "ci_high"]], ci, rtol=2e-6, atol=atol)
    np.testing.assert_allclose(table["split_half_agree"], agree, rtol=1e-15)
    assert (table.loc[[2, 3], ["ci_low", "ci_high"]] == 0).all(axis=None)
    # The separate entry points give the same numbers as the fused pass.
    delta = csc_delta(chosen, rejected)
    seeds = np.random.SeedSequence(6)
    low, high = bootstrap_mean_ci(delta, n_boot=150, alpha=0.05, rng=np.random.default_rng(seeds))
    split_rng = np.random.default_rng(np.random.SeedSequence(seeds.entropy, spawn_key=(1,)))
    # (The slices of long columns follow the weights' width, so float32 rounding may differ.)
    np.testing.assert_allclose(np.c_[low, high], table[["ci_low", "ci_high"]], rtol=1e-6, atol=atol)
    np.testing.assert_array_equal(
        split_half_agreement(delta, n_splits=9, rng=split_rng), table["split_half_agree"]
    )


def test_results_do_not_depend_on_threads_or_unit_size(monkeypatch):
    chosen, rejected = sparse_case(7, 3000, 80)
    monkeypatch.setattr(products, "_SMALL_WORK", 0)
    tables = []
    for threads, unit in [(1, 1 << 20), (4, 1 << 20), (2, 1 << 14)]:
        monkeypatch.setattr(products, "_THREADS", threads)
        monkeypatch.setattr(products, "_UNIT_ELEMENTS", unit)
        tables.append(
            paired_tests(sp.csr_array(chosen.astype(np.float32)), sp.csr_array(rejected.astype(np.float32)))
        )
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)
    # Other slicing of the long columns only moves float32 rounding in the bootstrap sums.
    pd.testing.assert_frame_equal(
        tables[0].drop(columns=["ci_low", "ci_high"]), tables[2].drop(columns=["ci_low", "ci_high"])
    )
    np.testing.assert_allclose(
        tables[0][["ci_low", "ci_high"]], tables[2][["ci_low", "ci_high"]], rtol=1e-5, atol=1e-7
    )


def test_counts_wider_than_uint8_and_half_memberships():
    class AlwaysFirst:  # draws pair 0 every time: its count (300) does not fit in uint8
        def integers(self, low, high, size):
            return np.zeros(size, dtype=np.int64)

    weights = resampling_weights(
        300, n_boot=3, boot_rng=AlwaysFirst(), n_splits=2, split_rng=np.random.default_rng(0)
    )
    assert weights.dtype == np.uint16 and weights.shape == (300, 7)
    np.testing.assert_array_equal(weights[0, :3], 300)
    assert weights[1:, :3].sum() == 0
    halves = weights[:, 3:].astype(int)
    np.testing.assert_array_equal(halves[:, :2] + halves[:, 2:], 1)
    np.testing.assert_array_equal(halves[:, :2].sum(axis=0), 150)
    delta = sp.csc_array(np.arange(1.0, 301.0)[:, None])
    low, high, _ = resample_columns(delta, weights, n_boot=3, n_splits=2, alpha=0.05)
    assert low[0] == high[0] == 1.0  # every replicate is pair 0 drawn 300 times


@pytest.mark.parametrize("test", ["wilcoxon", "sign", "t"])
def test_sparse_scale_equals_scipy_on_every_column(test):
    chosen, rejected = sparse_case(8, 2500, 40, rate=0.02)
    table = paired_tests(sp.csr_array(chosen), sp.csr_array(rejected), test=test, n_boot=50, n_splits=5)
    for j in range(chosen.shape[1]):
        d = chosen[:, j] - rejected[:, j]
        if not d.any():
            assert table.loc[j, "p"] == table.loc[j, "q"] == 1.0 and np.isnan(
                table.loc[j, "split_half_agree"]
            )
            assert table.loc[j, "ci_low"] == table.loc[j, "ci_high"] == 0.0
            continue
        if test == "wilcoxon":
            expected = stats.wilcoxon(d).pvalue
        elif test == "sign":
            expected = stats.binomtest(int((d > 0).sum()), int((d != 0).sum())).pvalue
        else:
            expected = stats.ttest_rel(chosen[:, j], rejected[:, j]).pvalue
        np.testing.assert_allclose(table.loc[j, "p"], expected, rtol=1e-10, err_msg=f"column {j}")
    assert table.loc[4, "n_nonzero"] == 1 and table.loc[4, "n_active"] == 1
    assert table.loc[3, "n_nonzero"] == 0 and table.loc[3, "n_active"] > 0
    np.testing.assert_array_equal(table["n_active"], ((chosen != 0) | (rejected != 0)).sum(axis=0))


def test_two_pairs():
    chosen = np.array([[1.0, 0.0, 2.0, 0.0], [3.0, 0.0, 2.0, 1.0]])
    rejected = np.array([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 2.0, 0.0]])
    table = paired_tests(chosen, rejected, n_boot=200, n_splits=6, seed=1)
    d = chosen - rejected
    for j in (0, 3):
        np.testing.assert_allclose(table.loc[j, "p"], stats.wilcoxon(d[:, j]).pvalue, rtol=1e-12)
    assert (table.loc[[1, 2], ["p", "q"]] == 1.0).all(axis=None)
    ci, agree = reference_resampling(d, 200, 6, 1)
    np.testing.assert_allclose(table[["ci_low", "ci_high"]], ci, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(table["split_half_agree"], agree)
    assert table.loc[3, "split_half_agree"] == 0.0  # halves of one pair each: +1 vs −1


def test_dense_input_at_scale_equals_sparse_input():
    chosen, rejected = sparse_case(9, 1500, 70)
    options = {"n_boot": 120, "n_splits": 7, "seed": 2, "lengths": np.arange(1500.0) % 13}
    dense = paired_tests(chosen, rejected, **options)
    sparse = paired_tests(sp.csc_matrix(chosen), sp.coo_array(rejected), **options)
    pd.testing.assert_frame_equal(dense, sparse, check_exact=True)


def test_background_draws_stop_when_the_inputs_are_invalid():
    resampling = _Resampling(200_000, 1000, 20, np.random.SeedSequence(0))
    resampling.cancel()
    with pytest.raises(Cancelled):
        resampling._weights.result(timeout=60)
    chosen = sp.random_array((50_000, 3), density=0.1, format="csr", rng=0)
    chosen.data[5] = np.nan
    with pytest.raises(ConfigError, match="chosen contains NaN"):
        paired_tests(chosen, sp.csr_array((50_000, 3)))
    # An array-like without a shape: the draws start once the inputs are read.
    table = paired_tests(
        [[1.0, 0.0], [2.0, 1.0], [0.5, 0.0]], [[0.0, 0.0], [1.0, 1.0], [1.5, 0.0]], n_boot=30
    )
    assert table["n_nonzero"].tolist() == [3, 0] and np.isfinite(table.loc[0, ["ci_low", "ci_high"]]).all()


@pytest.mark.parametrize("n_boot", [1, 2, 3, 40, 97, 1000])
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.5, 0.9])
def test_order_statistics_equal_a_full_sort(n_boot, alpha):
    rng = np.random.default_rng(n_boot)
    (low, _), (high, _) = _virtual_index(n_boot, alpha / 2), _virtual_index(n_boot, 1 - alpha / 2)
    picks = [low, min(low + 1, n_boot - 1), high, min(high + 1, n_boot - 1)]
    for x in (rng.standard_normal((9, n_boot)), np.round(rng.standard_normal((9, n_boot)))):  # ties too
        x = x.astype(np.float32)
        np.testing.assert_array_equal(_order_statistics(x.copy(), picks), np.sort(x, axis=1)[:, picks])
