"""Agreement statistics: equal to scipy/numpy references, calibrated on a null, find a planted signal."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from prefaudit.stats.agreement import (
    agreement_row,
    fixed_feature_set,
    origin_r2,
    origin_scale,
    pearson,
    spearman_brown,
    standardized_covariance,
)


def test_pearson_and_origin_fit_equal_references():
    rng = np.random.default_rng(1)
    pred, obs = rng.normal(size=40), rng.normal(size=40)
    assert pearson(pred, obs) == pytest.approx(stats.pearsonr(pred, obs).statistic)
    k, *_ = np.linalg.lstsq(pred[:, None], obs, rcond=None)
    assert origin_scale(pred, obs) == pytest.approx(k[0])
    resid = obs - k[0] * pred
    assert origin_r2(pred, obs) == pytest.approx(1 - resid @ resid / np.sum((obs - obs.mean()) ** 2))
    assert math.isnan(pearson(np.ones(5), obs[:5]))
    assert spearman_brown(0.5) == pytest.approx(2 / 3)


def test_origin_r2_penalises_an_offset_that_r_ignores():
    pred = np.linspace(-1, 1, 21)
    assert pearson(pred, pred + 5) == pytest.approx(1.0)
    assert origin_r2(pred, pred + 5) < 0


def test_standardized_covariance_equals_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 4))
    x[:, 3] = 1.0
    y = rng.normal(size=30)
    got = standardized_covariance(y, x)
    for f in range(3):
        assert got[f] == pytest.approx(np.cov(y, x[:, f])[0, 1] / x[:, f].std(ddof=1))
    assert got[3] == 0.0


def _channel(signal: float, n_units: int = 80, n_features: int = 30, seed: int = 0):
    """Units carry two sides; observed per feature = mean over units of (side a − side b)."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=n_features)
    a = signal * truth + rng.normal(size=(n_units, n_features))
    b = rng.normal(size=(n_units, n_features))

    def observe(units, swap):
        d = a[units] - b[units]
        return np.where(swap[:, None], -d, d).mean(axis=0)

    return agreement_row("test", n_units, observe, truth, n_boot=300, n_null=300, n_splits=30, seed=seed)


def test_a_planted_signal_is_found_above_its_null():
    row = _channel(signal=1.0)
    assert row.r > 0.9 and row.r_low > row.null_high
    assert row.null_low < 0 < row.null_high
    assert row.ceiling > 0.9 and row.r <= row.ceiling + 0.05


def test_a_null_channel_finds_nothing_calibrated():
    # No signal: over many seeds the reported r falls inside the null's 95% interval ~95% of the time.
    inside = [(lambda r: r.null_low <= r.r <= r.null_high)(_channel(0.0, seed=s)) for s in range(40)]
    assert 0.85 <= np.mean(inside) <= 1.0
    row = _channel(0.0, seed=3)
    assert row.r_low < 0 < row.r_high or abs(row.r) < 0.4


def test_feature_set_is_fixed_by_the_audit_and_the_seed():
    q = np.array([0.001, 0.2, 0.01, 0.9, 0.5, 0.03, 0.7])
    varies = np.array([True, True, True, True, True, False, True])
    a = fixed_feature_set(q, varies, alpha=0.05, n_random=2, seed=0)
    assert {0, 2} <= set(a) and 5 not in a and len(a) == 4
    assert np.array_equal(a, fixed_feature_set(q, varies, alpha=0.05, n_random=2, seed=0))
    assert set(fixed_feature_set(q, varies, alpha=0.05, n_random=0, seed=0, always=np.array([3]))) == {
        0,
        2,
        3,
    }
