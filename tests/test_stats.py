"""prefaudit.stats.paired_tests against scipy, feature by feature, plus its edge cases and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from prefaudit.errors import ConfigError, PrefauditError
from prefaudit.stats import PAIRED_TEST_COLUMNS, benjamini_hochberg, paired_tests
from prefaudit.stats.ranks import signed_ranks

EXPECTED_COLUMNS = [
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
]


def mixed_activations(seed: int, n_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Chosen/rejected columns of several kinds, so every branch of the tests is exercised.

    Columns: 0–3 continuous (no zeros, no ties), 4–7 sparse (zeros on both sides, Δ = 0 often),
    8–11 rounded (many tied |Δ|), 12 shifted towards chosen, 13 towards rejected, 14 never
    active, 15 active but identical on both sides (Δ ≡ 0), 16 integer counts (ties and zeros).
    """
    rng = np.random.default_rng(seed)
    shape = (n_pairs, 4)
    chosen = [rng.lognormal(size=shape)]
    rejected = [rng.lognormal(size=shape)]
    chosen.append(np.maximum(rng.normal(-0.8, 1, size=shape), 0))
    rejected.append(np.maximum(rng.normal(-0.8, 1, size=shape), 0))
    chosen.append(np.round(rng.gamma(2, size=shape), 0))
    rejected.append(np.round(rng.gamma(2, size=shape), 0))
    base = rng.lognormal(size=(n_pairs, 2))
    chosen.append(base + [[0.6, 0.0]] + rng.normal(0, 0.5, size=(n_pairs, 2)) ** 2)
    rejected.append(base + [[0.0, 0.6]] + rng.normal(0, 0.5, size=(n_pairs, 2)) ** 2)
    same = rng.exponential(size=(n_pairs, 1))
    chosen.append(np.zeros((n_pairs, 1)))
    rejected.append(np.zeros((n_pairs, 1)))
    chosen.append(same)
    rejected.append(same.copy())
    chosen.append(rng.poisson(1.0, size=(n_pairs, 1)).astype(float))
    rejected.append(rng.poisson(1.0, size=(n_pairs, 1)).astype(float))
    return np.hstack(chosen), np.hstack(rejected)


def columns_with_delta(chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    return np.flatnonzero((chosen != rejected).any(axis=0))


@pytest.fixture(scope="module", autouse=True, params=["numba", "numpy"])
def engine(request):
    """Every test here runs with both engines of paired_tests (see tests/test_stats_kernels.py)."""
    if request.param == "numba":
        pytest.importorskip("numba")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFAUDIT_STATS_ENGINE", request.param)
        yield request.param


@pytest.fixture(scope="module")
def large(engine) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    chosen, rejected = mixed_activations(0, 120)
    return chosen, rejected, paired_tests(chosen, rejected, n_boot=200, n_splits=10)


def test_columns_are_the_documented_ones_in_order(large):
    _, _, table = large
    assert list(table.columns[: len(EXPECTED_COLUMNS)]) == EXPECTED_COLUMNS
    assert list(table.columns) == [*EXPECTED_COLUMNS, "n_nonzero", "constant_delta"]
    assert list(PAIRED_TEST_COLUMNS) == list(table.columns)
    assert table["feature"].tolist() == [str(j) for j in range(table.shape[0])]
    assert (table["source"] == "sae").all() and (table["label"] == "").all()


@pytest.mark.parametrize("n_pairs", [120, 30])  # normal approximation (n > 50) and n ≤ 50 with ties
def test_wilcoxon_equals_scipy_with_ties_and_zeros(n_pairs):
    chosen, rejected = mixed_activations(1, n_pairs)
    table = paired_tests(chosen, rejected, n_boot=0, n_splits=0)
    for j in columns_with_delta(chosen, rejected):
        expected = stats.wilcoxon(chosen[:, j] - rejected[:, j]).pvalue
        np.testing.assert_allclose(table.loc[j, "p"], expected, rtol=1e-10, err_msg=f"column {j}")


@pytest.mark.parametrize("seed", range(4))
def test_wilcoxon_equals_scipy_exact_small_n(seed):
    # No zeros and no ties with ≤ 50 pairs: scipy uses the exact null distribution.
    rng = np.random.default_rng(seed)
    n_pairs = [8, 20, 35, 50][seed]
    chosen = rng.normal(0.3, 1, size=(n_pairs, 6))
    rejected = rng.normal(0, 1, size=(n_pairs, 6))
    chosen[:, 5] = rejected[:, 5] + np.arange(1, n_pairs + 1)  # all Δ > 0: the smallest p
    table = paired_tests(chosen, rejected, n_boot=0, n_splits=0)
    expected = [stats.wilcoxon(chosen[:, j] - rejected[:, j]).pvalue for j in range(6)]
    np.testing.assert_allclose(table["p"], expected, rtol=1e-10)


@pytest.mark.parametrize(("n_pairs", "n_features"), [(1, 4), (5, 20), (9, 3), (14, 30)])
def test_wilcoxon_equals_scipy_small_n_with_ties_or_zeros(n_pairs, n_features):
    # ≤ 13 pairs with ties or zeros: scipy enumerates all 2ⁿ sign flips; 14: normal approximation.
    rng = np.random.default_rng(n_pairs)
    chosen = rng.integers(0, 4, size=(n_pairs, n_features)).astype(float)
    rejected = rng.integers(0, 4, size=(n_pairs, n_features)).astype(float)
    table = paired_tests(chosen, rejected, n_boot=0, n_splits=0)
    columns = columns_with_delta(chosen, rejected)
    assert columns.size > 0
    for j in columns:
        expected = stats.wilcoxon(chosen[:, j] - rejected[:, j]).pvalue
        np.testing.assert_allclose(table.loc[j, "p"], expected, rtol=1e-10, err_msg=f"column {j}")


def sign_flip_reference(d: np.ndarray) -> float:
    """Two-sided p of W⁺ over all 2ⁿ sign flips, from the definition (scipy is ~2 s per call at n = 13)."""
    nonzero = d[d != 0]
    ranks = stats.rankdata(np.abs(nonzero))
    flips = (np.arange(2**nonzero.size)[:, None] >> np.arange(nonzero.size)) & 1
    null = (flips * ranks).sum(axis=1)
    observed = ranks[nonzero > 0].sum()
    return min(1.0, 2 * min(np.mean(null <= observed), np.mean(null >= observed)))


def test_wilcoxon_sign_flip_p_at_13_pairs_equals_enumeration():
    rng = np.random.default_rng(13)
    chosen = rng.integers(0, 5, size=(13, 40)).astype(float)
    rejected = rng.integers(0, 3, size=(13, 40)).astype(float)
    table = paired_tests(chosen, rejected, n_boot=0, n_splits=0)
    for j in columns_with_delta(chosen, rejected):
        expected = sign_flip_reference(chosen[:, j] - rejected[:, j])
        np.testing.assert_allclose(table.loc[j, "p"], expected, rtol=1e-12, err_msg=f"column {j}")
    assert table["p"].min() < 0.01  # the enumeration reaches small p-values too


def test_sign_test_equals_binomtest(large):
    chosen, rejected, _ = large
    table = paired_tests(chosen, rejected, test="sign", n_boot=0, n_splits=0)
    for j in columns_with_delta(chosen, rejected):
        d = chosen[:, j] - rejected[:, j]
        expected = stats.binomtest(int((d > 0).sum()), int((d != 0).sum()), 0.5).pvalue
        np.testing.assert_allclose(table.loc[j, "p"], expected, rtol=1e-10, err_msg=f"column {j}")


def test_t_test_equals_ttest_rel(large):
    chosen, rejected, _ = large
    table = paired_tests(chosen, rejected, test="t", n_boot=0, n_splits=0)
    for j in columns_with_delta(chosen, rejected):
        expected = stats.ttest_rel(chosen[:, j], rejected[:, j]).pvalue
        np.testing.assert_allclose(table.loc[j, "p"], expected, rtol=1e-10, err_msg=f"column {j}")


@pytest.mark.parametrize("test", ["wilcoxon", "sign", "t"])
def test_every_test_equals_scipy_on_many_sparse_pairs(test):
    # SAE-like columns: active in a few % of 4,000 responses, so most Δ are 0.
    rng = np.random.default_rng(12)
    rates = np.array([0.01, 0.03, 0.1, 0.3])

    def side(shift: float) -> np.ndarray:
        return np.where(rng.random((4000, 4)) < rates, rng.exponential(size=(4000, 4)) + shift, 0.0)

    chosen, rejected = side(0.05), side(0.0)
    table = paired_tests(sp.csr_array(chosen), sp.csr_array(rejected), test=test, n_boot=0, n_splits=0)
    for j in range(4):
        d = chosen[:, j] - rejected[:, j]
        if test == "wilcoxon":
            expected = stats.wilcoxon(d).pvalue
        elif test == "sign":
            expected = stats.binomtest(int((d > 0).sum()), int((d != 0).sum())).pvalue
        else:
            expected = stats.ttest_rel(chosen[:, j], rejected[:, j]).pvalue
        np.testing.assert_allclose(table.loc[j, "p"], expected, rtol=1e-10, err_msg=f"column {j}")


@pytest.mark.parametrize("test", ["wilcoxon", "sign", "t"])
def test_untested_features_get_p_q_one_and_leave_the_bh_count(large, test):
    chosen, rejected, _ = large
    table = paired_tests(chosen, rejected, test=test, n_boot=0, n_splits=0)
    tested = columns_with_delta(chosen, rejected)
    untested = np.setdiff1d(np.arange(chosen.shape[1]), tested)
    assert untested.tolist() == [14, 15]  # never active; active but Δ ≡ 0
    assert (table.loc[untested, ["p", "q"]] == 1.0).all(axis=None)
    assert table.loc[untested, "split_half_agree"].isna().all()
    expected_q = stats.false_discovery_control(table.loc[tested, "p"].to_numpy(), method="bh")
    np.testing.assert_allclose(table.loc[tested, "q"], expected_q, rtol=1e-12)


def test_benjamini_hochberg_equals_scipy_with_ties():
    p = np.random.default_rng(3).uniform(size=500) ** 3
    p[:40] = p[40]  # ties
    np.testing.assert_allclose(
        benjamini_hochberg(p), stats.false_discovery_control(p, method="bh"), rtol=1e-15
    )
    assert benjamini_hochberg(np.array([])).size == 0


def test_benjamini_hochberg_leaves_nan_out_and_equals_scipy_on_the_rest():
    # A NaN p sorts last; left in, it spread through the running minimum to every q.
    rng = np.random.default_rng(7)
    p = rng.uniform(size=300) ** 2
    nan = rng.uniform(size=300) < 0.1
    p[nan] = np.nan
    q = benjamini_hochberg(p)
    assert np.isnan(q[nan]).all() and np.isfinite(q[~nan]).all()
    # m counts only the non-NaN tests (scipy raises on NaN, so compare on the rest).
    np.testing.assert_allclose(q[~nan], stats.false_discovery_control(p[~nan], method="bh"), rtol=1e-15)
    assert np.isnan(benjamini_hochberg(np.array([np.nan, np.nan]))).all()
    np.testing.assert_allclose(
        benjamini_hochberg(np.array([0.01, np.nan, 0.04, 0.03])), [0.03, np.nan, 0.04, 0.04]
    )


def test_rank_biserial_equals_rankdata_reference(large):
    chosen, rejected, table = large
    for j in range(chosen.shape[1]):
        d = chosen[:, j] - rejected[:, j]
        d = d[d != 0]
        if d.size == 0:
            assert table.loc[j, "rank_biserial"] == 0.0
            continue
        ranks = stats.rankdata(np.abs(d))
        w_plus, w_minus = ranks[d > 0].sum(), ranks[d < 0].sum()
        expected = (w_plus - w_minus) / (w_plus + w_minus)
        np.testing.assert_allclose(table.loc[j, "rank_biserial"], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("block_elements", [1 << 22, 64])  # one padded block, or many
def test_signed_rank_tie_term_matches_rankdata(monkeypatch, block_elements):
    import prefaudit.stats.ranks as ranks_module

    monkeypatch.setattr(ranks_module, "_BLOCK_ELEMENTS", block_elements)
    chosen, rejected = mixed_activations(4, 90)
    delta = sp.csc_array(chosen - rejected)
    delta.eliminate_zeros()
    ranks = signed_ranks(delta)
    for j in range(chosen.shape[1]):
        d = (chosen - rejected)[:, j]
        d = d[d != 0]
        _, t = np.unique(np.abs(d), return_counts=True)
        assert ranks.tie_term[j] == pytest.approx(float(np.sum(t**3 - t)))
        assert ranks.has_ties[j] == bool((t > 1).any())
        assert ranks.w_plus[j] == pytest.approx(stats.rankdata(np.abs(d))[d > 0].sum())


def test_descriptive_columns_equal_direct_numpy(large):
    chosen, rejected, table = large
    d = chosen - rejected
    n = chosen.shape[0]
    np.testing.assert_array_equal(table["n_pairs"], n)
    np.testing.assert_array_equal(table["n_active"], ((chosen != 0) | (rejected != 0)).sum(axis=0))
    np.testing.assert_array_equal(table["n_nonzero"], (d != 0).sum(axis=0))
    np.testing.assert_allclose(table["frac_active_chosen"], (chosen != 0).mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(table["frac_active_rejected"], (rejected != 0).mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(table["mean_chosen"], chosen.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(table["mean_rejected"], rejected.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(table["delta_mean"], d.mean(axis=0), rtol=1e-12, atol=1e-15)
    sd = d.std(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected_dz = np.where(sd > 0, d.mean(axis=0) / sd, np.nan)
    np.testing.assert_allclose(table["d_z"], expected_dz, rtol=1e-10, atol=1e-14)
    expected_direction = np.where(
        d.mean(axis=0) > 0, "chosen", np.where(d.mean(axis=0) < 0, "rejected", "none")
    )
    assert table["direction"].tolist() == expected_direction.tolist()
    assert table.loc[12, "direction"] == "chosen" and table.loc[13, "direction"] == "rejected"


@pytest.mark.parametrize("form", ["pair", "difference"])
def test_length_control_equals_linregress(large, form):
    chosen, rejected, _ = large
    rng = np.random.default_rng(7)
    n = chosen.shape[0]
    len_chosen = rng.integers(20, 400, size=n)
    len_rejected = rng.integers(20, 400, size=n)
    dlen = (len_chosen - len_rejected).astype(float)
    chosen = chosen.copy()
    chosen[:, 0] += 0.004 * np.maximum(dlen, 0)  # a feature that tracks length
    lengths = (len_chosen, len_rejected) if form == "pair" else dlen
    table = paired_tests(chosen, rejected, lengths=lengths, n_boot=0, n_splits=0)
    for j in columns_with_delta(chosen, rejected):
        fit = stats.linregress(dlen, chosen[:, j] - rejected[:, j])
        t = fit.intercept / fit.intercept_stderr
        expected_p = 2 * stats.t.sf(abs(t), n - 2)
        np.testing.assert_allclose(table.loc[j, "delta_len_ctrl"], fit.intercept, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(table.loc[j, "p_len_ctrl"], expected_p, rtol=1e-9, err_msg=f"column {j}")
    assert (table.loc[[14, 15], "delta_len_ctrl"] == 0).all() and (
        table.loc[[14, 15], "p_len_ctrl"] == 1
    ).all()


def test_length_control_is_nan_without_lengths_or_with_constant_lengths(large):
    chosen, rejected, table = large
    assert table[["delta_len_ctrl", "p_len_ctrl"]].isna().all(axis=None)
    constant = paired_tests(chosen, rejected, lengths=np.full(chosen.shape[0], 3.0), n_boot=0, n_splits=0)
    assert constant[["delta_len_ctrl", "p_len_ctrl"]].isna().all(axis=None)


def reference_bootstrap(d: np.ndarray, n_boot: int, seed: int, alpha: float) -> np.ndarray:
    """The plain per-feature loop over the documented resample indices."""
    n = d.shape[0]
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.integers(0, n, size=n) for _ in range(n_boot)])
    out = np.empty((d.shape[1], 2))
    for j in range(d.shape[1]):
        means = d[:, j][idx].mean(axis=1)
        out[j] = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return out


@pytest.mark.parametrize(("n_boot", "alpha", "seed"), [(300, 0.05, 0), (97, 0.1, 5), (1, 0.05, 2)])
def test_bootstrap_ci_equals_plain_loop_with_the_same_indices(large, n_boot, alpha, seed):
    chosen, rejected, _ = large
    d = chosen - rejected
    table = paired_tests(chosen, rejected, n_boot=n_boot, alpha=alpha, seed=seed, n_splits=0)
    expected = reference_bootstrap(d, n_boot, seed, alpha)
    # The replicate sums are accumulated in float32 (documented); everything else is float64.
    atol = 1e-6 * float(np.abs(d).mean())
    np.testing.assert_allclose(table["ci_low"], expected[:, 0], rtol=2e-6, atol=atol)
    np.testing.assert_allclose(table["ci_high"], expected[:, 1], rtol=2e-6, atol=atol)
    assert (table.loc[[14, 15], ["ci_low", "ci_high"]] == 0).all(axis=None)


def test_bootstrap_ci_handles_a_column_with_many_nonzero_deltas(monkeypatch):
    # Force the slice-by-slice path that columns with many non-zero Δ take.
    import prefaudit.stats.products as products

    monkeypatch.setattr(products, "_UNIT_ELEMENTS", 4096)
    rng = np.random.default_rng(11)
    chosen, rejected = rng.normal(size=(200, 3)), rng.normal(size=(200, 3))
    chosen[:150, 2] = rejected[:150, 2]  # 50 non-zero Δ: the batched path
    table = paired_tests(chosen, rejected, n_boot=150, seed=3, n_splits=0)
    expected = reference_bootstrap(chosen - rejected, 150, 3, 0.05)
    np.testing.assert_allclose(table[["ci_low", "ci_high"]], expected, rtol=2e-6, atol=1e-6)


def test_bootstrap_ci_close_to_scipy_bootstrap():
    rng = np.random.default_rng(8)
    chosen = rng.gamma(2, size=(150, 3)) + np.array([0.3, 0.0, -0.2])
    rejected = rng.gamma(2, size=(150, 3))
    table = paired_tests(chosen, rejected, n_boot=4000, seed=1, n_splits=0)
    for j in range(3):
        res = stats.bootstrap(
            ((chosen - rejected)[:, j],), np.mean, n_resamples=4000, method="percentile", rng=2
        )
        width = res.confidence_interval.high - res.confidence_interval.low
        # Different resamples: endpoints agree up to Monte Carlo error (a few % of the width).
        assert abs(table.loc[j, "ci_low"] - res.confidence_interval.low) < 0.06 * width
        assert abs(table.loc[j, "ci_high"] - res.confidence_interval.high) < 0.06 * width


def test_split_half_agreement_equals_plain_loop():
    rng = np.random.default_rng(9)
    # Integer activations: both computations are exact, so even zero halves compare equal.
    chosen = rng.poisson([[0.05, 0.2, 1.0, 3.0, 0.5]], size=(41, 5)).astype(float)
    rejected = rng.poisson([[0.05, 0.2, 1.0, 2.0, 0.5]], size=(41, 5)).astype(float)
    table = paired_tests(chosen, rejected, n_boot=0, n_splits=25, seed=4)
    d = chosen - rejected
    n = d.shape[0]
    split_rng = np.random.default_rng(np.random.SeedSequence(4, spawn_key=(1,)))
    agree = np.zeros(d.shape[1])
    for _ in range(25):
        perm = split_rng.permutation(n)
        first, second = np.sign(d[perm[: n // 2]].mean(axis=0)), np.sign(d[perm[n // 2 :]].mean(axis=0))
        agree += (first == second) & (first != 0)
    expected = np.where((d != 0).any(axis=0), agree / 25, np.nan)
    np.testing.assert_allclose(table["split_half_agree"], expected, rtol=1e-15)


def test_seed_makes_results_reproducible_and_changes_them(large):
    chosen, rejected, _ = large
    a = paired_tests(chosen, rejected, n_boot=50, seed=1)
    b = paired_tests(chosen, rejected, n_boot=50, seed=1)
    c = paired_tests(chosen, rejected, n_boot=50, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["ci_low"].iloc[:14], c["ci_low"].iloc[:14])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dense_and_sparse_inputs_give_identical_tables(dtype):
    chosen, rejected = mixed_activations(5, 70)
    chosen, rejected = chosen.astype(dtype), rejected.astype(dtype)
    options = {"n_boot": 100, "n_splits": 7, "seed": 3, "lengths": np.arange(70.0) % 11}
    dense = paired_tests(chosen, rejected, **options)
    for fmt in ["csr", "csc", "coo", "lil"]:
        sparse = paired_tests(
            sp.csr_array(chosen).asformat(fmt), sp.csr_matrix(rejected).asformat(fmt), **options
        )
        pd.testing.assert_frame_equal(dense, sparse, check_exact=True)


def test_sparse_input_with_explicit_zeros_and_duplicates_is_not_modified():
    rows, cols = np.array([0, 0, 1, 2, 2]), np.array([1, 1, 0, 2, 0])
    chosen = sp.coo_matrix((np.array([1.0, 2.0, 0.0, 4.0, 5.0]), (rows, cols)), shape=(3, 3))
    rejected = sp.csr_matrix(np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 4.0]]))
    before = chosen.data.copy()
    table = paired_tests(chosen, rejected, n_boot=10)
    np.testing.assert_array_equal(chosen.data, before)
    dense = paired_tests(chosen.toarray(), rejected.toarray(), n_boot=10)
    pd.testing.assert_frame_equal(table, dense, check_exact=True)
    assert table["n_active"].tolist() == [2, 1, 1]  # the stored 0.0 at (1, 0) is not activity


def test_names_labels_and_source_per_column():
    chosen, rejected = np.eye(3), np.zeros((3, 3))
    table = paired_tests(
        chosen, rejected, names=["a", "b", "c"], labels=["x", "y", "z"], source=["sae", "concept", "sae"]
    )
    assert table["feature"].tolist() == ["a", "b", "c"]
    assert table["label"].tolist() == ["x", "y", "z"]
    assert table["source"].tolist() == ["sae", "concept", "sae"]
    assert paired_tests(chosen, rejected, source="concept")["source"].tolist() == ["concept"] * 3


def test_options_zero_skip_bootstrap_and_splits():
    chosen, rejected = mixed_activations(6, 40)
    table = paired_tests(chosen, rejected, n_boot=0, n_splits=0)
    assert table[["ci_low", "ci_high", "split_half_agree"]].isna().all(axis=None)


def test_single_pair_and_no_features():
    one = paired_tests(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]]), n_boot=20)
    assert one.loc[0, "p"] == stats.wilcoxon([1.0]).pvalue
    assert np.isnan(one.loc[0, "d_z"]) and np.isnan(one.loc[0, "split_half_agree"])
    assert one.loc[0, "ci_low"] == one.loc[0, "ci_high"] == 1.0
    t_one = paired_tests(np.array([[1.0]]), np.array([[0.0]]), test="t", n_boot=0)
    assert np.isnan(t_one.loc[0, "p"]) and np.isnan(t_one.loc[0, "q"])
    empty = paired_tests(np.zeros((4, 0)), np.zeros((4, 0)))
    assert empty.shape == (0, len(PAIRED_TEST_COLUMNS)) and list(empty.columns) == list(PAIRED_TEST_COLUMNS)


@pytest.mark.parametrize(
    ("chosen", "rejected", "match"),
    [
        (np.zeros((4, 3)), np.zeros((4, 2)), r"chosen has shape \(4, 3\) but rejected has shape \(4, 2\)"),
        (np.zeros(4), np.zeros(4), r"chosen must be a 2-D"),
        (np.zeros((4, 3)), np.zeros((2, 2, 3)), r"rejected must be a 2-D"),
        (np.zeros((0, 3)), np.zeros((0, 3)), r"no rows"),
        (np.zeros((4, 3), dtype=complex), np.zeros((4, 3)), r"chosen must hold real numbers"),
    ],
)
def test_bad_shapes_name_the_argument(chosen, rejected, match):
    with pytest.raises(ConfigError, match=match):
        paired_tests(chosen, rejected)


def test_non_finite_values_name_argument_column_and_row():
    chosen = np.ones((6, 4))
    chosen[5, 2] = np.nan
    chosen[3, 3] = np.nan
    with pytest.raises(ConfigError, match=r"chosen contains NaN in feature column 2 at row 5 \(2 non-finite"):
        paired_tests(chosen, np.zeros((6, 4)))
    rejected = sp.csr_matrix(np.ones((6, 4)))
    rejected[1, 3] = -np.inf
    with pytest.raises(ConfigError, match=r"rejected contains -inf in feature column 3 at row 1"):
        paired_tests(np.zeros((6, 4)), rejected)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"test": "mannwhitney"}, r"test must be one of wilcoxon, sign, t"),
        ({"n_boot": -1}, r"n_boot must be ≥ 0"),
        ({"n_splits": 2.5}, r"n_splits must be an integer"),
        ({"alpha": 1.5}, r"alpha must be a number strictly between 0 and 1"),
        ({"seed": -3}, r"seed must be a non-negative integer"),
        ({"names": ["a", "b"]}, r"names has 2 entries but there are 3 feature columns"),
        ({"labels": "abc"}, r"labels must be a sequence of 3 strings"),
        ({"source": ["sae"]}, r"source has 1 entries"),
        ({"lengths": np.arange(5)}, r"lengths must be a 1-D array with one value per pair \(4\)"),
        ({"lengths": (np.arange(4), np.arange(3))}, r"lengths\[1\] must be a 1-D array"),
        ({"lengths": [1.0, np.nan, 2.0, 3.0]}, r"lengths contains NaN at row 1"),
    ],
)
def test_bad_options_raise_config_error(options, match):
    with pytest.raises(ConfigError, match=match) as info:
        paired_tests(np.eye(4, 3), np.zeros((4, 3)), **options)
    assert isinstance(info.value, PrefauditError) and isinstance(info.value, ValueError)
