"""The channels' statistics on synthetic observations: label-only baselines, cluster rows, importance weights.

Pure: every channel reads a hand-built :class:`RunContext` (held-out responses with known features
and a known implicit reward), so each figure is checked against its definition and against
scipy / numpy / scikit-learn references, a planted effect is found and a null finds nothing.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from prefaudit.stats.agreement import pearson
from prefaudit.verify import channel_registry
from prefaudit.verify.channel_base import VERIFY_COLUMNS, Channel, Observed, RunContext, agreement_table
from prefaudit.verify.channel_weighted import MIN_ESS_FRACTION, effective_sample_size, normalised_weights
from prefaudit.verify.channels import margin_observer, predicted_loadings, reward_observer
from prefaudit.verify.drift import drift_summary
from prefaudit.verify.levels import Level
from prefaudit.verify.planted import auc, best_threshold

RESAMPLING = {"n_boot": 300, "n_null": 300, "seed": 0}
N_FEATURES = 12
GROUPS = [np.arange(0, 3), np.arange(3, 6), np.arange(6, 9), np.arange(9, 12)]


def _levels(sd: np.ndarray) -> dict[str, Level]:
    cols = np.arange(N_FEATURES)
    mean = np.zeros((N_FEATURES, len(GROUPS)))
    for k, g in enumerate(GROUPS):
        mean[g, k] = 1.0 / len(g)
    return {
        "feature": Level("feature", cols, sd, None, [f"sae:{j}" for j in cols]),
        "cluster": Level("cluster", cols, sd, mean, [f"cluster:{k}" for k in range(len(GROUPS))]),
    }


def _ctx(rho_of, *, n: int = 150, seed: int = 0, beta: float = 0.1, **extra) -> RunContext:
    """Held-out pairs with standard-normal features (independent sides) and ρ = rho_of(x, rng)."""
    rng = np.random.default_rng(seed)
    sd = rng.uniform(0.5, 2.0, N_FEATURES)
    held_c, held_r = rng.normal(size=(n, N_FEATURES)) * sd, rng.normal(size=(n, N_FEATURES)) * sd
    tr_c, tr_r = rng.normal(size=(200, N_FEATURES)) * sd, rng.normal(size=(200, N_FEATURES)) * sd
    signal = rng.normal(size=N_FEATURES) * sd
    rho_c, rho_r = rho_of(held_c, rng), rho_of(held_r, rng)
    heldout = pd.DataFrame(
        {"position": np.arange(n), "reward_chosen": beta * rho_c, "reward_rejected": beta * rho_r}
    )
    gen = rng.normal(size=(40, N_FEATURES)) * sd
    defaults = dict(
        session=None,
        levels=_levels(sd),
        signal=signal,
        pred_z=signal / sd,
        sd=sd,
        trained_matrix=SimpleNamespace(chosen=sp.csr_matrix(tr_c), rejected=sp.csr_matrix(tr_r)),
        beta=beta,
        heldout=heldout,
        held_matrix=SimpleNamespace(chosen=sp.csr_matrix(held_c), rejected=sp.csr_matrix(held_r)),
        delta=gen,
        dlen=rng.normal(size=40),
        length_column=None,
    )
    return RunContext(**{**defaults, **extra})


def _rows(name: str, ctx: RunContext, **resampling) -> dict[str, dict]:
    return {r["level"]: r for r in channel_registry.get(name).rows(ctx, **{**RESAMPLING, **resampling})}


def _prediction(ctx: RunContext) -> np.ndarray:
    t = ctx.trained_matrix
    return predicted_loadings(ctx.signal, t.chosen.toarray(), t.rejected.toarray())


def _learned(ctx_seed: int = 0, noise: float = 0.5):
    """A policy whose ρ is linear in the features along the predicted loadings (beyond the labels)."""
    probe = _ctx(lambda x, rng: np.zeros(len(x)), seed=ctx_seed)
    theta = _prediction(probe) / probe.sd  # cov(x·θ, x_f)/sd_f = θ_f sd_f = the prediction
    return _ctx(lambda x, rng: x @ theta + noise * rng.normal(size=len(x)), seed=ctx_seed)


def test_label_only_baseline_is_the_reward_row_of_plus_minus_one():
    ctx = _learned()
    row = _rows("reward", ctx)["feature"]
    h = ctx.held_matrix
    x = np.concatenate([h.chosen.toarray(), h.rejected.toarray()])
    n = len(ctx.heldout)
    label_only = np.array(
        [
            np.cov(np.r_[np.ones(n), -np.ones(n)], x[:, f])[0, 1] / x[:, f].std(ddof=1)
            for f in range(N_FEATURES)
        ]
    )
    assert row["baseline_r"] == pytest.approx(stats.pearsonr(_prediction(ctx), label_only).statistic)
    # Its CI is the percentile bootstrap over held-out pairs: scipy's, within resampling noise.
    full = _rows("reward", ctx, n_boot=2000)["feature"]
    observe = reward_observer(np.ones(n), -np.ones(n), h.chosen.toarray(), h.rejected.toarray())
    ref = stats.bootstrap(
        (np.arange(n),),
        lambda idx: pearson(_prediction(ctx), observe(idx, np.zeros(n, bool))),
        vectorized=False,
        n_resamples=2000,
        method="percentile",
        random_state=1,
    ).confidence_interval
    assert full["baseline_low"] == pytest.approx(ref.low, abs=0.05)
    assert full["baseline_high"] == pytest.approx(ref.high, abs=0.05)
    assert full["baseline_low"] <= full["baseline_r"] <= full["baseline_high"]


def test_a_within_pair_margin_that_knows_only_the_labels_loads_on_nothing():
    ctx = _learned()
    h = ctx.held_matrix
    n = len(ctx.heldout)
    zero = margin_observer(np.ones(n), -np.ones(n), h.chosen.toarray(), h.rejected.toarray())
    assert np.allclose(zero(np.arange(n), np.zeros(n, bool)), 0.0)
    row = _rows("reward, within pair", ctx)["feature"]
    assert row["baseline_r"] == row["baseline_low"] == row["baseline_high"] == 0.0
    # The margin's loading on Δ_f, by hand.
    rc, rr = ctx.heldout["reward_chosen"] / ctx.beta, ctx.heldout["reward_rejected"] / ctx.beta
    d = h.chosen.toarray() - h.rejected.toarray()
    manual = [np.cov(rc - rr, d[:, f])[0, 1] / d[:, f].std(ddof=1) for f in range(N_FEATURES)]
    assert np.allclose(
        margin_observer(rc.to_numpy(), rr.to_numpy(), h.chosen.toarray(), h.rejected.toarray())(
            np.arange(n), np.zeros(n, bool)
        ),
        manual,
    )


def test_a_learned_reward_is_found_above_its_null_and_its_label_only_baseline():
    ctx = _learned()
    for name in ("reward", "reward, within pair"):
        for level, row in _rows(name, ctx).items():
            assert row["r"] > 0.8 and row["r"] > row["baseline_high"], (name, level, row)
    # Within pairs the null flips each margin's sign, which removes a feature-linear reward entirely.
    # (The pooled row's null exchanges ρ within a pair: half of such a reward survives it, so only
    # a reward that follows the labels is separated from it — the reason for the within-pair row.)
    # (Over the 12 features; 4 clusters are too few units for a null interval narrower than ±0.95.)
    row = _rows("reward, within pair", ctx)["feature"]
    assert row["r_low"] > row["null_high"] and row["null_low"] < 0 < row["null_high"], row


def test_a_reward_unrelated_to_the_features_finds_nothing():
    ctx = _ctx(lambda x, rng: rng.normal(size=len(x)), seed=3)
    for name in ("reward", "reward, within pair"):
        row = _rows(name, ctx)["feature"]
        assert row["null_low"] < 0 < row["null_high"], (name, row)
        assert row["null_low"] <= row["r"] <= row["null_high"], (name, row)


def test_cluster_rows_are_the_mean_of_their_member_features():
    ctx = _learned()
    feat, clus = ctx.levels["feature"], ctx.levels["cluster"]
    gen = channel_registry.get("generation")
    n = ctx.delta.shape[0]
    rng = np.random.default_rng(5)
    for units, swap in [(np.arange(n), np.zeros(n, bool)), (rng.integers(0, n, n), rng.random(n) < 0.5)]:
        per_feature = gen.observe(ctx, feat).observe(units, swap)
        per_cluster = gen.observe(ctx, clus).observe(units, swap)
        assert np.allclose(per_cluster, [per_feature[g].mean() for g in GROUPS])
    pf, pc = gen.predict(ctx, feat), gen.predict(ctx, clus)
    assert np.allclose(pc, [pf[g].mean() for g in GROUPS])
    obs = ctx.delta / ctx.sd
    row = _rows("generation", ctx)["cluster"]
    assert row["r"] == pytest.approx(pearson(pc, [obs[:, g].mean() for g in GROUPS]))
    assert row["n_features"] == len(GROUPS) and row["level"] == "cluster"
    # Reward at the cluster level: the cluster's score is the mean of its members' x / sd.
    h = ctx.held_matrix
    score = np.stack([(h.chosen.toarray()[:, g] / ctx.sd[g]).mean(axis=1) for g in GROUPS], axis=1)
    assert np.allclose(clus.scores(h.chosen.toarray()), score)


def test_importance_weights_recover_a_shift_when_the_policy_stays_close():
    # Base samples x ~ N(0, 1); the "trained" density N(μ, 1): ρ = μx − μ²/2, E_θ[x] − E_ref[x] = μ.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 1))
    mu = 0.2
    rho = mu * x[:, 0] - mu**2 / 2
    w = normalised_weights(rho)
    assert w.mean() == pytest.approx(1.0)
    assert ((w - 1) * x[:, 0]).mean() == pytest.approx(mu, abs=0.05)
    ess = effective_sample_size(rho)
    wr = np.exp(rho)
    assert ess == pytest.approx(wr.sum() ** 2 / (wr @ wr))
    assert effective_sample_size(np.zeros(10)) == pytest.approx(10)
    assert effective_sample_size(np.array([0.0, -50.0, -50.0])) == pytest.approx(1.0, abs=1e-6)


def test_the_weighted_row_is_shown_only_at_small_drift_and_carries_its_ess():
    base = np.random.default_rng(1).normal(size=(40, N_FEATURES))
    close = _learned()
    close.base_x, close.weights_rho = base, np.random.default_rng(2).normal(scale=0.1, size=40)
    rows = _rows("generation, importance-weighted", close)
    assert rows["feature"]["ess"] == pytest.approx(effective_sample_size(close.weights_rho))
    assert rows["feature"]["ess"] >= MIN_ESS_FRACTION * 40
    far = _learned()
    far.base_x, far.weights_rho = base, np.random.default_rng(2).normal(scale=80.0, size=40)
    assert _rows("generation, importance-weighted", far) == {}


def test_a_new_channel_is_one_class_and_one_registration():
    @channel_registry.register
    class Constant(Channel):
        name = "test: constant"

        def observe(self, ctx, level):
            return Observed(10, lambda units, swap: np.arange(level.n_units, dtype=float) + swap.mean())

        def predict(self, ctx, level):
            return np.arange(level.n_units, dtype=float)

    try:
        assert channel_registry.names()[-1] == "test: constant"
        table = agreement_table(channel_registry.get("test: constant").rows(_learned(), **RESAMPLING))
        assert list(table.columns) == list(VERIFY_COLUMNS)
        assert list(table["level"]) == ["feature", "cluster"] and np.allclose(table["r"], 1.0)
        assert table["baseline_r"].isna().all() and table["ess"].isna().all()
    finally:
        channel_registry.unregister("test: constant")
    assert "test: constant" not in channel_registry.names()


def test_detector_threshold_and_auc_equal_scikit_learn():
    rng = np.random.default_rng(4)
    truth = rng.random(300) < 0.3
    score = truth * 1.0 + rng.normal(size=300)
    assert auc(score, truth) == pytest.approx(roc_auc_score(truth, score))
    thr, tpr, fpr = best_threshold(score, truth)
    f, t, _ = roc_curve(truth, score)
    assert tpr - fpr == pytest.approx(np.max(t - f))
    assert tpr == pytest.approx(np.mean(score[truth] > thr)) and fpr == pytest.approx(
        np.mean(score[~truth] > thr)
    )


def test_drift_summary_equals_numpy():
    rng = np.random.default_rng(6)
    held = pd.DataFrame({"reward_chosen": rng.normal(size=20), "reward_rejected": rng.normal(size=20)})
    rho_t, rho_b = rng.normal(size=30), rng.normal(size=30)
    d = drift_summary(held, 0.5, rho_t, rho_b)
    rho = np.r_[held["reward_chosen"], held["reward_rejected"]] / 0.5
    assert d["rho_mean"] == pytest.approx(rho.mean()) and d["rho_sd"] == pytest.approx(rho.std(ddof=1))
    assert (d["rho_min"], d["rho_max"]) == (pytest.approx(rho.min()), pytest.approx(rho.max()))
    assert d["kl"] == pytest.approx(rho_t.mean()) and d["kl_se"] == pytest.approx(stats.sem(rho_t))
    assert d["ess"] == pytest.approx(effective_sample_size(rho_b)) and d["n_samples"] == 30
    empty = drift_summary(held.iloc[:0], 0.5, None, None)
    assert all(math.isnan(v) for v in empty.values())


def test_the_verify_views_columns_are_the_verify_columns_but_the_fitted_scale():
    # The view spells its list out (views sit below verification); it must stay in step.
    from prefaudit.verify.channel_base import VERIFY_COLUMNS
    from prefaudit.views.verify_view import AGREEMENT_SHOWN

    assert [c for c in VERIFY_COLUMNS if c != "scale"] == AGREEMENT_SHOWN
