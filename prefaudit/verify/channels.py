"""Observation channels: three ways to see what DPO learned, each compared with the audit's prediction.

Every channel gives one row of the agreement table (:mod:`prefaudit.stats.agreement`: r, its
bootstrap CI, a null, a split-half ceiling, R² through the origin) over the same feature set F,
fixed from the audit alone before anything is observed (:func:`evaluated_features`).

Reward
------
For a held-out response y to prompt x, ρ(y) = log π_θ(y|x) − log π_ref(y|x) (β·ρ is DPO's
implicit reward), read teacher-forced in the trained window. The **observed loading** of feature
f is the standardised covariance over held-out responses (both sides of every pair; features
read in the run's training window, :mod:`prefaudit.training.window`):
``ℓ_f = cov(ρ, x_f) / sd(x_f)``.

The **predicted loading** is the same quantity for the reward the audit implies. At
initialisation DPO's gradient raises ρ(chosen_i) and lowers ρ(rejected_i) with weight
gᵢ = σ(mᵢ) (vanilla: ½). To first order the learned reward on the trained responses is then
ρ̂(c_i) = +gᵢ, ρ̂(r_i) = −gᵢ (mean 0), so

``cov(ρ̂, x_f) = Σᵢ gᵢ (x_f(cᵢ) − x_f(rᵢ)) / (2n − 1) ∝ Σᵢ gᵢ Δᵢᶠ``, and
``ℓ̂_f ∝ signal_f / sd_T(x_f)``,

where signal_f is the intervention's predicted learning signal over the trained pairs read in
the window (``Intervention.predict(..., positions=trained, delta=window Δ)``) and sd_T the spread
of x_f over the trained responses. The scale is free (a training budget); r and the origin R² do not depend on it. The
null exchanges ρ of the two responses of a held-out pair (ρ permuted within prompts).

Generation
----------
Base and trained policies sample from the same held-out prompts with the same seed; per prompt
dₚ = x(trained) − x(base), standardised by the audit's sᶠ. Observed: the mean of dₚ; a second
row controls for length — the intercept of dₚᶠ regressed on the length difference (concept
``length`` itself is left out of that row). Predicted: the intervention's ``predicted_z``. Null:
trained and base exchanged within a prompt.

Shaping change
--------------
Two runs a (vanilla) and b (shaped) from the same base and split: predicted (b − a) against
observed (b − a) per feature, on the same held-out responses (reward loadings) — noise common to
both runs cancels. Null: the two runs' ρ exchanged within a pair.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .. import ids
from ..stats.agreement import AgreementRow, agreement_row, fixed_feature_set, standardized_covariance

#: Features sampled at random (seeded) beside the significant ones.
N_RANDOM_FEATURES = 100


def evaluated_features(
    session: Any, weighted: list[str], *, n_random: int = N_RANDOM_FEATURES, seed: int = 0
) -> np.ndarray:
    """Columns of F: every feature with q < ALPHA in the audit that varies, a seeded random sample of
    the rest, and the weighted ones — decided before any generation or reward is read."""
    sd = session.matrix.sd
    varies = sd > 0
    q = (
        session.results["q"].to_numpy(dtype=np.float64)
        if session.results is not None
        else np.ones(len(sd))  # untested: no significant set, only the random sample
    )
    always = np.array([session.column(f) for f in weighted], dtype=int)
    return fixed_feature_set(q, varies, alpha=ids.ALPHA, n_random=n_random, seed=seed, always=always)


def response_features(matrix: Any, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense chosen and rejected features ``(n_pairs, len(cols))`` of a :class:`FeatureMatrix`."""
    return (
        matrix.chosen[:, cols].toarray().astype(np.float64),
        matrix.rejected[:, cols].toarray().astype(np.float64),
    )


def predicted_loadings(signal: np.ndarray, trained: Any, cols: np.ndarray) -> np.ndarray:
    """ℓ̂_f ∝ signal_f / sd_T(x_f) over the trained responses (``trained``: their FeatureMatrix)."""
    xc, xr = response_features(trained, cols)
    sd = np.concatenate([xc, xr]).std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, np.asarray(signal, dtype=np.float64)[cols] / sd, 0.0)


def reward_observer(rho_c: np.ndarray, rho_r: np.ndarray, xc: np.ndarray, xr: np.ndarray):
    """observe(units, swap) for the reward channel: loadings of ρ on the features of held-out responses."""

    def observe(units: np.ndarray, swap: np.ndarray) -> np.ndarray:
        yc = np.where(swap, rho_r[units], rho_c[units])
        yr = np.where(swap, rho_c[units], rho_r[units])
        return standardized_covariance(np.concatenate([yc, yr]), np.concatenate([xc[units], xr[units]]))

    return observe


def reward_channel(
    heldout: pd.DataFrame, beta: float, signal: np.ndarray, trained: Any, held: Any, cols: np.ndarray,
    **resampling: Any,
) -> tuple[AgreementRow, np.ndarray, np.ndarray]:  # fmt: skip
    """(row, predicted loadings, observed loadings) from the held-out pairs' implicit rewards.

    ``trained`` and ``held`` are the FeatureMatrix of the trained and the held-out pairs (rows in
    the order of ``heldout``), read in the training window.
    """
    rho_c = heldout["reward_chosen"].to_numpy(dtype=np.float64) / beta
    rho_r = heldout["reward_rejected"].to_numpy(dtype=np.float64) / beta
    xc, xr = response_features(held, cols)
    observe = reward_observer(rho_c, rho_r, xc, xr)
    pred = predicted_loadings(signal, trained, cols)
    n = len(heldout)
    row = agreement_row("reward", n, observe, pred, **resampling)
    return row, pred, observe(np.arange(n), np.zeros(n, dtype=bool))


def length_adjusted_mean(d: np.ndarray, dlen: np.ndarray) -> np.ndarray:
    """Intercept of each column of ``d`` regressed on ``dlen`` (OLS); the plain mean if dlen is constant."""
    x = dlen - dlen.mean()
    sxx = float(x @ x)
    mean = d.mean(axis=0)
    if sxx == 0:
        return mean
    slope = (x @ (d - mean)) / sxx
    # The intercept is the shift at zero length difference: mean(d) − slope·mean(dlen).
    return mean - slope * dlen.mean()


def generation_channels(
    deltas_z: np.ndarray, dlen: np.ndarray, pred_z: np.ndarray, keep_for_length: np.ndarray, **resampling: Any
) -> tuple[AgreementRow, AgreementRow]:
    """Rows ``generation`` and ``generation, length-adjusted`` from per-prompt standardised deltas."""
    n = deltas_z.shape[0]

    def plain(units: np.ndarray, swap: np.ndarray) -> np.ndarray:
        d = deltas_z[units]
        return np.where(swap[:, None], -d, d).mean(axis=0)

    def adjusted(units: np.ndarray, swap: np.ndarray) -> np.ndarray:
        sign = np.where(swap, -1.0, 1.0)
        return length_adjusted_mean(deltas_z[units][:, keep_for_length] * sign[:, None], dlen[units] * sign)

    return (
        agreement_row("generation", n, plain, pred_z, **resampling),
        agreement_row("generation, length-adjusted", n, adjusted, pred_z[keep_for_length], **resampling),
    )


def shaping_change_channel(
    a: Any, b: Any, cols: np.ndarray, held_matrix: Any, **resampling: Any
) -> AgreementRow | None:
    """Predicted (b − a) vs observed (b − a) reward loadings on the held-out pairs both runs share.

    ``a``, ``b``: :class:`~prefaudit.verify.result.VerifyResult` with ``heldout`` rewards, the
    predicted signals over their trained pairs (``signal``) and those pairs' window features
    (``trained_matrix``); ``held_matrix(positions)`` gives the held-out pairs' window features.
    ``None`` when the runs share fewer than 4 held-out pairs.
    """
    ha, hb = a.heldout.set_index("position"), b.heldout.set_index("position")
    common = np.array(sorted(set(ha.index) & set(hb.index)), dtype=np.int64)
    if len(common) < 4:
        return None
    xc, xr = response_features(held_matrix(common), cols)
    rho = {
        k: (
            h.loc[common, "reward_chosen"].to_numpy() / beta,
            h.loc[common, "reward_rejected"].to_numpy() / beta,
        )
        for k, h, beta in (("a", ha, a.beta), ("b", hb, b.beta))
    }
    obs_a = reward_observer(*rho["a"], xc, xr)
    obs_b = reward_observer(*rho["b"], xc, xr)

    def observe(units: np.ndarray, swap: np.ndarray) -> np.ndarray:
        # The null exchanges the two runs' ρ within a pair: then b − a carries no shaping effect.
        keep = np.zeros(len(units), dtype=bool)
        diff_direct = obs_b(units, keep) - obs_a(units, keep)
        if not swap.any():
            return diff_direct
        ra = {k: np.where(swap, rho["b"][i][units], rho["a"][i][units]) for i, k in enumerate("cr")}
        rb = {k: np.where(swap, rho["a"][i][units], rho["b"][i][units]) for i, k in enumerate("cr")}
        x = np.concatenate([xc[units], xr[units]])
        return standardized_covariance(np.concatenate([rb["c"], rb["r"]]), x) - standardized_covariance(
            np.concatenate([ra["c"], ra["r"]]), x
        )

    pred = predicted_loadings(b.signal, b.trained_matrix, cols) - predicted_loadings(
        a.signal, a.trained_matrix, cols
    )
    return agreement_row("shaping change", len(common), observe, pred, **resampling)
