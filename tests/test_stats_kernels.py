"""The numba engine of paired_tests (one fused pass per column) against the numpy engine and scipy.

Random sparse columns with ties and zeros; the same seed draws the same resamples in both engines
(the weights are drawn by numpy in either case), so the CIs differ only by the float32 rounding
order of the replicate sums.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

import prefaudit.stats.kernels as kernels
from prefaudit.errors import ConfigError
from prefaudit.stats import paired_tests, paired_tests_grouped
from prefaudit.stats.fused import column_pass
from prefaudit.stats.paired import ENGINE_VARIABLE, resolve_engine
from prefaudit.stats.resampling import _order_statistics, _virtual_index, resampling_weights

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")


def sparse_pairs(seed: int, n_pairs: int, n_features: int, decimals: int | None = 1):
    """Chosen/rejected, mostly zeros, values rounded so |Δ| ties often; some columns Δ ≡ 0."""
    rng = np.random.default_rng(seed)
    rates = np.minimum(0.1 * rng.lognormal(0, 1, n_features), 0.9)

    def side() -> np.ndarray:
        values = rng.gamma(2.0, size=(n_pairs, n_features))
        values = np.round(values, decimals) if decimals is not None else values
        return np.where(rng.random((n_pairs, n_features)) < rates, values, 0.0)

    chosen, rejected = side(), side()
    chosen[:, 0] = rejected[:, 0]  # active, Δ ≡ 0
    chosen[:, 1] = rejected[:, 1] = 0.0  # never active
    chosen[:, 2] = rejected[:, 2] + 0.5  # Δ constant
    return chosen, rejected


def assert_tables_close(a: pd.DataFrame, b: pd.DataFrame, *, exact_split: bool = True) -> None:
    assert list(a.columns) == list(b.columns)
    for name in a.columns:
        x, y = a[name], b[name]
        if x.dtype.kind not in "fc":
            pd.testing.assert_series_equal(x, y)
        elif name in ("ci_low", "ci_high"):  # float32 replicate sums, summed in another order
            scale = np.nanmean(np.abs(y)) + 1e-12
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6 * scale, err_msg=name)
        elif name == "split_half_agree" and not exact_split:
            continue
        else:
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize(
    ("n_pairs", "test"), [(9, "wilcoxon"), (40, "wilcoxon"), (300, "wilcoxon"), (300, "sign"), (300, "t")]
)
def test_numba_engine_equals_numpy_engine(n_pairs, test):
    chosen, rejected = sparse_pairs(n_pairs, n_pairs, 25, decimals=None)
    options = {"test": test, "n_boot": 199, "n_splits": 9, "seed": 4, "lengths": np.arange(n_pairs) % 7}
    fused = paired_tests(chosen, rejected, engine="numba", **options)
    plain = paired_tests(chosen, rejected, engine="numpy", **options)
    assert_tables_close(fused, plain)
    assert fused["constant_delta"].iloc[2] and np.isinf(fused["d_z"].iloc[2])


def test_integer_data_give_identical_split_halves_and_ranks():
    chosen, rejected = sparse_pairs(3, 500, 30, decimals=0)
    fused = paired_tests(chosen, rejected, n_boot=100, n_splits=15, seed=1, engine="numba")
    plain = paired_tests(chosen, rejected, n_boot=100, n_splits=15, seed=1, engine="numpy")
    for name in ("split_half_agree", "rank_biserial", "p", "n_nonzero"):
        np.testing.assert_array_equal(fused[name], plain[name], err_msg=name)


@pytest.mark.parametrize("n_pairs", [30, 80, 400])
def test_wilcoxon_and_ranks_equal_scipy_on_columns_with_ties_and_zeros(n_pairs):
    chosen, rejected = sparse_pairs(7, n_pairs, 40)
    table = paired_tests(chosen, rejected, n_boot=0, n_splits=0, engine="numba")
    d = chosen - rejected
    for j in np.flatnonzero((d != 0).any(axis=0)):
        np.testing.assert_allclose(table.loc[j, "p"], stats.wilcoxon(d[:, j]).pvalue, rtol=1e-10)
        nz = d[:, j][d[:, j] != 0]
        w_plus = stats.rankdata(np.abs(nz))[nz > 0].sum()
        total = nz.size * (nz.size + 1) / 2
        assert table.loc[j, "rank_biserial"] == pytest.approx((2 * w_plus - total) / total, abs=1e-12)


def test_bootstrap_same_seed_same_ci_up_to_float32_rounding_and_threads_do_not_matter():
    chosen, rejected = sparse_pairs(5, 700, 60, decimals=None)
    delta = sp.csc_array(chosen - rejected)
    delta.eliminate_zeros()
    weights = resampling_weights(
        700, n_boot=500, boot_rng=np.random.default_rng(2), n_splits=8, split_rng=np.random.default_rng(3)
    )
    one = column_pass(delta, weights, n_boot=500, n_splits=8, alpha=0.1, threads=1)
    two = column_pass(delta, weights, n_boot=500, n_splits=8, alpha=0.1, threads=2)
    for name in ("ci_low", "ci_high", "split_half_agree", "sums", "rank_values"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name), err_msg=name)
    # A plain loop over the same resample counts.
    counts = weights[:, :500].astype(np.float64)
    means = (delta.toarray().T @ counts) / 700
    low, high = np.percentile(means, [5, 95], axis=1)
    np.testing.assert_allclose(one.ci_low[0], low, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(one.ci_high[0], high, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("n_boot", [1, 2, 3, 40, 97, 1000])
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.5, 0.9])
def test_kernel_order_statistics_equal_a_full_sort(n_boot, alpha):
    rng = np.random.default_rng(n_boot)
    (low, _), (high, _) = _virtual_index(n_boot, alpha / 2), _virtual_index(n_boot, 1 - alpha / 2)
    picks = np.array([low, min(low + 1, n_boot - 1), high, min(high + 1, n_boot - 1)])
    for x in (rng.standard_normal((6, n_boot)), np.round(rng.standard_normal((6, n_boot)))):  # ties too
        x = x.astype(np.float32)
        heap = np.empty(n_boot, np.float32)
        for row in x:
            out = np.empty(4, np.float32)
            kernels._order_statistics(row.copy(), picks, out, heap)
            np.testing.assert_array_equal(out, np.sort(row)[picks])
            np.testing.assert_array_equal(out, _order_statistics(row[None].copy(), list(picks))[0])


@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_grouped_equals_paired_tests_per_group(engine):
    chosen, rejected = sparse_pairs(11, 420, 20, decimals=None)
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 5, 420)
    groups[groups == 3] = 4  # group 3 has no pairs: left out
    groups[0] = 3  # … now one pair: NaN split halves, as paired_tests gives
    lengths = (rng.integers(5, 60, 420), rng.integers(5, 60, 420))
    options = {"n_boot": 150, "n_splits": 6, "seed": 2}
    long = paired_tests_grouped(chosen, rejected, groups, lengths=lengths, engine=engine, **options)
    parts = []
    for g in range(5):
        rows = np.flatnonzero(groups == g)
        if rows.size:
            part = paired_tests(
                chosen[rows],
                rejected[rows],
                lengths=(lengths[0][rows], lengths[1][rows]),
                engine="numpy",
                **options,
            )
            parts.append(part.assign(group=g))
    expected = pd.concat(parts, ignore_index=True)
    expected = expected[["group", *expected.columns[:-1]]]
    assert_tables_close(long, expected)
    assert long.loc[long["group"] == 3, "split_half_agree"].isna().all()


def test_engine_choice_env_and_fallback(monkeypatch):
    monkeypatch.setenv(ENGINE_VARIABLE, "numpy")
    assert resolve_engine(None) == "numpy"
    assert resolve_engine("numba") == "numba"
    monkeypatch.setenv(ENGINE_VARIABLE, "fortran")
    with pytest.raises(ConfigError, match=ENGINE_VARIABLE):
        paired_tests(np.ones((3, 1)), np.zeros((3, 1)))
    monkeypatch.delenv(ENGINE_VARIABLE)
    assert resolve_engine("auto") == "numba"
    monkeypatch.setattr(kernels, "AVAILABLE", False)  # numba failed to import
    assert resolve_engine("auto") == "numpy"
    table = paired_tests(np.ones((5, 1)), np.zeros((5, 1)), n_boot=10)
    assert table.loc[0, "ci_low"] == 1.0
