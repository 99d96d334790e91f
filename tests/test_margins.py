"""Shaping margins: one slider unit means the same for rare and common features, and stays bounded.

Pure numpy/scipy on synthetic Δ (``prefaudit.shaping``); the filter/preview agreement on a real
tiny session is in ``tests/test_interventions.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import prefaudit as pa
from prefaudit import shaping
from prefaudit.shaping import (
    MARGIN_CAP,
    delta_sd,
    dominated,
    margin_scale,
    pair_margins,
    preview,
)

N = 10_000


def _columns(*cols: np.ndarray) -> sp.csc_matrix:
    return sp.csc_matrix(np.column_stack(cols))


@pytest.fixture(scope="module")
def rare_and_common() -> tuple[sp.csc_matrix, np.ndarray]:
    rng = np.random.default_rng(0)
    rare = np.zeros(N)
    rows = rng.choice(N, 5, replace=False)
    rare[rows] = 1.0  # one-sided: only chosen responses have it, in 5 of 10,000 pairs
    common = rng.normal(size=N)  # active in every pair, symmetric
    return _columns(rare, common), rows


def _weights(j: int, w: float, p: int = 2) -> np.ndarray:
    out = np.zeros(p)
    out[j] = w
    return out


def test_rare_feature_at_minus_one_is_bounded_and_like_a_common_one(rare_and_common):
    d, rows = rare_and_common
    rare = preview(d, _weights(0, -1.0))
    common = preview(d, _weights(1, -1.0))
    # Before: sᶠ = sd over all pairs ≈ √(5/10,000), so "−1" meant m = −44.7 where it is active.
    old = -1.0 / delta_sd(d)[0]
    assert old == pytest.approx(-44.73, abs=0.01)
    # Now one slider unit is one logit for the typical active pair, rare or common.
    assert np.abs(rare.margins).max() <= MARGIN_CAP
    np.testing.assert_allclose(rare.margins[rows], -1.0)
    assert np.count_nonzero(rare.margins) == 5 and rare.n_capped == 0
    typical_rare = np.abs(rare.margins[rows]).mean()
    typical_common = np.abs(common.margins).mean()
    assert 0.5 <= typical_rare / typical_common <= 2.0


def test_mean_active_contribution_is_at_most_the_weight_whatever_the_rarity():
    rng = np.random.default_rng(1)
    for k in (1, 2, 5, 50, 5_000, N):
        col = np.zeros(N)
        col[rng.choice(N, k, replace=False)] = rng.lognormal(size=k) * rng.choice([-1, 1], size=k)
        d = sp.csc_matrix(col[:, None])
        m = pair_margins(col[:, None], margin_scale(d), np.array([-1.5]), cap=None)
        assert np.abs(m[col != 0]).mean() <= 1.5 + 1e-12


def test_constant_delta_contributes_nothing_and_near_constant_is_bounded():
    n = 40
    const = np.full(n, 0.7)
    near = 0.7 + 1e-9 * np.random.default_rng(2).normal(size=n)
    d = _columns(const, near)
    assert margin_scale(d)[0] == 0.0
    assert np.all(preview(d, np.array([-3.0, 0.0])).margins == 0.0)
    # Before: sd of the constant column came out ≈ 1.3e-8 (Σx² − n·mean² cancels): |m| ≈ 5e7.
    m = preview(d, np.array([0.0, -1.0])).margins
    np.testing.assert_allclose(m, -near / np.abs(near).mean())  # the floor: mean |Δ|
    assert np.abs(m).max() < 1.0 + 1e-6


def test_margin_scale_dense_and_sparse_agree_and_follow_the_definition():
    rng = np.random.default_rng(3)
    d = rng.normal(size=(200, 6)) * (rng.uniform(size=(200, 6)) < [[1.0, 0.5, 0.1, 0.02, 0.005, 0]])
    d[:, 5] = 0.0  # never active
    d[:, 4] = 0.0
    d[7, 4] = -2.5  # active once: |Δ| itself
    expected = []
    for j in range(d.shape[1]):
        a = d[d[:, j] != 0, j]
        expected.append(0.0 if a.size == 0 else max(a.std(ddof=1) if a.size > 1 else 0.0, np.abs(a).mean()))
    np.testing.assert_allclose(margin_scale(d), expected, rtol=1e-12)
    np.testing.assert_allclose(margin_scale(sp.csr_matrix(d)), expected, rtol=1e-12)
    assert margin_scale(d)[4] == 2.5 and margin_scale(d)[5] == 0.0


def test_feature_active_in_every_pair_keeps_the_old_scale_sd():
    # The documented relation: k = n and sd(Δ) ≥ mean |Δ| (any roughly symmetric Δ) → sᶠ = sd(Δᶠ).
    rng = np.random.default_rng(4)
    d = np.column_stack([rng.normal(size=500), rng.standard_t(3, size=500), rng.normal(0.3, 1.0, size=500)])
    assert np.all(d != 0)
    np.testing.assert_allclose(margin_scale(d), delta_sd(d), rtol=1e-12)
    np.testing.assert_allclose(margin_scale(sp.csc_matrix(d)), np.std(d, axis=0, ddof=1), rtol=1e-12)
    # A dense one-sided, tightly spread Δ (the near-constant case) gets mean |Δ| instead.
    tight = rng.normal(2.0, 0.1, size=500)
    assert margin_scale(tight[:, None])[0] == pytest.approx(np.abs(tight).mean())


def test_sparse_sd_is_two_pass_stable_against_numpy():
    n = 10_000
    rng = np.random.default_rng(5)
    tiny = 0.7 + 1e-9 * rng.normal(size=n)
    sparse_tiny = np.zeros(n)
    sparse_tiny[:50] = 3.3 + 1e-9 * rng.normal(size=50)
    d = _columns(np.full(n, 0.7), np.full(n, 3.3), tiny, sparse_tiny)
    got = delta_sd(d)
    want = np.std(d.toarray(), axis=0, ddof=1)
    np.testing.assert_allclose(got[:2], 0.0, atol=0)  # exactly 0 (numpy: ≈ 1e-16)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-15)
    assert got[2] == pytest.approx(1e-9, rel=0.05)
    # The spread over active pairs (the margin scale's v) is just as stable.
    moments = shaping._active_moments(d)
    for j, col in enumerate(d.toarray().T):
        a = col[col != 0]
        spread = np.sqrt(moments.centred_ss[j] / (moments.k[j] - 1))
        np.testing.assert_allclose(spread, np.std(a, ddof=1), rtol=1e-6, atol=1e-15)


def test_margins_are_capped_after_the_sum_and_counted():
    rng = np.random.default_rng(6)
    a = (rng.uniform(size=300) < 0.3).astype(float)
    b = (rng.uniform(size=300) < 0.3).astype(float)
    d = _columns(a, b)
    pv = preview(d, np.array([-3.0, -3.0]))
    both = (a != 0) & (b != 0)
    raw = -3.0 * a - 3.0 * b  # one-sided binary features: scale 1
    np.testing.assert_allclose(pv.margins, np.clip(raw, -4, 4))
    assert pv.n_capped == int(both.sum()) > 0 and pv.cap == MARGIN_CAP
    assert pv.margins.min() == -MARGIN_CAP
    np.testing.assert_allclose(pair_margins(d.toarray(), np.ones(2), np.array([-3.0, -3.0]), cap=None), raw)
    with pytest.raises(pa.ConfigError, match="cap must be > 0"):
        preview(d, np.array([-3.0, -3.0]), cap=0)


def test_dominated_is_the_suppressing_side_only_and_the_preview_counts_it():
    m = np.array([-4.0, -1.0, -0.999, 0.0, 1.0, 3.0])
    assert dominated(m, 1.0).tolist() == [True, True, False, False, False, False]
    with pytest.raises(pa.ConfigError, match="threshold must be > 0"):
        dominated(m, 0.0)
    d = _columns(np.array([1.0, 1.0, 0.0, -1.0, 0.0, 1.0]))
    pv = preview(d, np.array([-2.0]))
    np.testing.assert_allclose(pv.margins, [-2, -2, 0, 2, 0, -2])
    assert pv.n_dominated == 3  # not 4: the amplified pair (m = +2) is not dominated


def test_preview_with_given_scale_and_columns_equals_the_computed_one(rare_and_common):
    d, _ = rare_and_common
    w = np.array([-1.0, 0.5])
    full = preview(d, w)
    part = preview(d, w, sd=delta_sd(d), scale=margin_scale(d), columns=np.array([1]))
    np.testing.assert_array_equal(full.margins, part.margins)
    assert part.scale.tolist() == [full.scale[1]] and part.sd.tolist() == [full.sd[1]]
    assert part.signal_after.tolist() == [full.signal_after[1]]


# ---------------------------------------------------------------------- one weight at a time
def _sae_like(n: int = 3_000, p: int = 24, seed: int = 7) -> sp.csc_matrix:
    """Sparse two-sided Δ plus one-sided binary columns (their margins land exactly on ±w)."""
    rng = np.random.default_rng(seed)
    dense = rng.lognormal(size=(n, p)) * rng.choice([-1.0, 1.0], size=(n, p))
    dense *= rng.uniform(size=(n, p)) < rng.uniform(0.01, 0.4, size=p)
    dense[:, :4] = rng.uniform(size=(n, 4)) < 0.2  # binary, only chosen responses have them
    return sp.csc_matrix(dense)


def test_moving_one_weight_updates_the_margins_exactly_as_a_full_recompute():
    d = _sae_like()
    scale = margin_scale(d)
    rng = np.random.default_rng(8)
    w = np.zeros(d.shape[1])
    kept = shaping.MarginSum(d)
    saw_capped = saw_threshold = 0
    for step in range(300):
        j = int(rng.integers(d.shape[1]))
        w[j] = 0.0 if step % 17 == 0 else float(rng.choice([-1.0, 1.0, -3.0, 2.5, rng.normal(0, 2)]))
        if step % 50 == 0:
            w[:4] = -1.0  # back to exactly −1 on the binary columns, from wherever they were
        changed = kept.set_unit(shaping.margin_unit(w, scale))
        assert changed.size <= 5
        fresh = shaping.MarginSum(d, shaping.margin_unit(w, scale))
        np.testing.assert_array_equal(kept.ticks, fresh.ticks)  # bit for bit, not approximately
        raw = kept.raw()
        saw_capped += int(np.sum(np.abs(raw) > MARGIN_CAP))
        saw_threshold += int(np.sum(raw == -1.0))
        # And what the sum is: Σ_f w_f Δ_f / s_f, to the tick (2⁻³²) per term.
        np.testing.assert_allclose(raw, d @ shaping.margin_unit(w, scale), rtol=0, atol=1e-8)
    assert saw_capped > 0 and saw_threshold > 0  # the cap and the exact threshold were both exercised


def test_the_preview_keeps_its_sum_and_agrees_with_a_full_recompute(monkeypatch):
    d = _sae_like(seed=9)
    twin = d.copy()  # another Δ object: its preview starts from nothing
    scale, sd = margin_scale(d), delta_sd(d)
    w = np.zeros(d.shape[1])
    w[:4] = -1.0
    preview(d, w, scale=scale, sd=sd)
    calls = []
    monkeypatch.setattr(shaping.MarginSum, "recompute", lambda self, unit: calls.append(unit))
    for value in (-0.35, 2.0, -1.0, -2.75, -1.0):
        w[2] = value
        inc = preview(d, w, scale=scale, sd=sd, columns=np.arange(6))  # reads column 2 only
        monkeypatch.undo()
        full = preview(twin, w, scale=scale, sd=sd, columns=np.arange(6), incremental=False)
        monkeypatch.setattr(shaping.MarginSum, "recompute", lambda self, unit: calls.append(unit))
        np.testing.assert_array_equal(inc.margins, full.margins)
        np.testing.assert_array_equal(inc.gradient_weight, full.gradient_weight)
        np.testing.assert_array_equal(inc.signal_after, full.signal_after)
        assert (inc.n_capped, inc.n_dominated) == (full.n_capped, full.n_dominated)
    assert calls == []  # the kept sum was never summed again
    monkeypatch.undo()
    first = inc.margins.copy()
    w[2] = 3.0
    tight = preview(d, w, scale=scale, sd=sd, cap=2.0)  # another cap: every pair clipped anew
    ref = preview(twin, w, scale=scale, sd=sd, cap=2.0, incremental=False)
    np.testing.assert_array_equal(tight.margins, ref.margins)
    assert tight.n_capped == ref.n_capped > 0 and tight.margins.max() == 2.0
    np.testing.assert_array_equal(inc.margins, first)  # an earlier result is not changed later
    assert full.n_dominated > 0 and np.sum(full.margins == -1.0) > 0


def test_margins_too_large_to_sum_exactly_are_refused():
    d = _columns(np.array([1.0, 0.0, 1.0]))
    with pytest.raises(pa.ConfigError, match="use weights of a few units"):
        shaping.MarginSum(d, np.array([3e9]))
