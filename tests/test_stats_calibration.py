"""Calibration of prefaudit.stats.paired_tests: the null check finds nothing, planted effects are found.

The null data are what the design's null check builds: a dataset with real effects whose
chosen/rejected labels are swapped at random per pair, which makes every Δ symmetric about 0.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from prefaudit.stats import paired_tests

N_PAIRS = 300
N_FEATURES = 200
PLANTED = {3: 1, 50: 1, 120: 1, 7: -1, 160: -1}  # column → direction of a d_z ≈ 0.4 effect
# Shifts of the latent normal score that give Δ an effect size d_z = mean/sd = 0.4 after each
# column kind's transform (found once by simulating 2·10⁶ pairs).
LATENT_SHIFT = {"continuous": 0.718, "sparse": 0.867}
NULL_SEEDS = range(40)


def planted_dataset(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs that share a prompt-level activation; columns 0–99 continuous, 100–199 sparse.

    The planted columns' Δ have d_z ≈ ±0.4, towards chosen (+1) or rejected (−1).
    """
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(N_PAIRS, N_FEATURES))
    chosen = shared + rng.normal(size=(N_PAIRS, N_FEATURES))
    rejected = shared + rng.normal(size=(N_PAIRS, N_FEATURES))
    for column, sign in PLANTED.items():
        shift = LATENT_SHIFT["continuous" if column < 100 else "sparse"]
        (chosen if sign > 0 else rejected)[:, column] += shift
    continuous = np.exp(0.5 * np.hstack([chosen[:, :100], rejected[:, :100]]))
    sparse = np.maximum(np.hstack([chosen[:, 100:], rejected[:, 100:]]) - 1.0, 0.0)
    chosen = np.hstack([continuous[:, :100], sparse[:, :100]])
    rejected = np.hstack([continuous[:, 100:], sparse[:, 100:]])
    return chosen, rejected


def swapped_at_random(seed: int) -> tuple[np.ndarray, np.ndarray]:
    chosen, rejected = planted_dataset(seed)
    swap = np.random.default_rng(10_000 + seed).random(N_PAIRS) < 0.5
    chosen[swap], rejected[swap] = rejected[swap], chosen[swap].copy()
    return chosen, rejected


@pytest.fixture(scope="module")
def null_tables() -> list:
    return [paired_tests(*swapped_at_random(seed), n_boot=200, n_splits=0, seed=seed) for seed in NULL_SEEDS]


def test_null_check_finds_nothing_in_about_95_percent_of_seeds(null_tables):
    with_discoveries = [
        seed for seed, t in zip(NULL_SEEDS, null_tables, strict=True) if (t["q"] < 0.05).any()
    ]
    # BH at q < 0.05 keeps the chance of any discovery under the complete null ≤ 5 %, so the
    # number of seeds with one is at most Binomial(40, 0.05): 2 expected. Fail when the count
    # would be that large with probability < 1 % (7 or more). Demanding ≤ 2 would fail a
    # correct implementation on about a quarter of all seed sets.
    chance = stats.binom.sf(len(with_discoveries) - 1, len(NULL_SEEDS), 0.05)
    assert chance > 0.01, with_discoveries


def test_null_p_values_are_roughly_uniform(null_tables):
    continuous = np.concatenate([t["p"].to_numpy()[:100] for t in null_tables])
    assert stats.kstest(continuous, "uniform").pvalue > 1e-3
    assert 0.03 < np.mean(continuous < 0.05) < 0.07
    # Sparse columns (many Δ = 0, a discrete W⁺) may be conservative, never anticonservative.
    sparse = np.concatenate([t["p"].to_numpy()[100:] for t in null_tables])
    assert np.mean(sparse < 0.05) < 0.065


def test_null_bootstrap_ci_covers_zero_about_95_percent(null_tables):
    covers = np.concatenate(
        [((t["ci_low"] <= 0) & (t["ci_high"] >= 0)).to_numpy()[:100] for t in null_tables]
    )
    assert 0.92 < covers.mean() < 0.97


@pytest.mark.parametrize("test", ["wilcoxon", "sign", "t"])
def test_other_tests_under_the_null_stay_at_level(test):
    rates = []
    for seed in range(10):
        table = paired_tests(*swapped_at_random(seed), test=test, n_boot=0, n_splits=0)
        rates.append(np.mean(table["p"].to_numpy()[:100] < 0.05))
    assert np.mean(rates) < 0.07


@pytest.mark.parametrize("seed", range(5))
def test_planted_features_are_found_in_the_right_direction(seed):
    table = paired_tests(*planted_dataset(seed), n_boot=200, n_splits=20, seed=seed)
    assert set(PLANTED) <= set(table.index[table["q"] < 0.05])
    for column, sign in PLANTED.items():
        row = table.loc[column]
        assert row["direction"] == ("chosen" if sign > 0 else "rejected")
        assert np.sign(row["d_z"]) == sign and abs(row["d_z"]) > 0.2
        assert np.sign(row["rank_biserial"]) == sign
        assert row["ci_low"] > 0 if sign > 0 else row["ci_high"] < 0
        assert row["split_half_agree"] >= 0.9
