"""The math of the observation channels: how each reads what DPO learned, and what the audit predicts.

The channels themselves are registered classes (:mod:`prefaudit.verify.channel_registry`, one
file each: ``channel_reward``, ``channel_generation``, ``channel_weighted``, ``channel_change``);
this module holds what they compute. Every channel gives one row of the agreement table
(:mod:`prefaudit.stats.agreement`: r, its bootstrap CI, a null, a split-half ceiling, R² through
the origin) per level — over the feature set F fixed from the audit alone before anything is
observed (:func:`evaluated_features`), and over the audit's feature clusters
(:mod:`prefaudit.verify.levels`: a cluster's value is the mean of its members' standardised
values).

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
of x_f over the trained responses. The scale is free (a training budget); r and the origin R² do
not depend on it. The null exchanges ρ of the two responses of a held-out pair.

**Label-only baseline.** The same first-order argument applied to held-out pairs says a policy
that only learned "chosen above rejected" — ρ = +1 on chosen, −1 on rejected — has loadings
∝ the held-out pairs' own Δ: the audit repeated on fresh pairs. Its r against the same
prediction (with its bootstrap CI) is reported beside the row; the reward row shows learning
beyond the labels only where its r is above that baseline.

**Within pair** (``reward, within pair``): the loading of the margin ρ(cᵢ) − ρ(rᵢ) on the pair's
feature difference Δᵢ, ``cov(margin, Δ_f) / sd(Δ_f)`` over held-out pairs, against the same
predicted loadings. A label-only policy has a constant margin, so its loadings — and its
baseline — are 0 by construction: this row reads only what the policy learned about the
features. Null: a pair's two ρ exchanged (its margin's sign flipped).

Generation
----------
Base and trained policies sample from the same held-out prompts with the same seed; per sample
dₚ = x(trained) − x(base), standardised by the audit's sᶠ. Observed: the mean of dₚ; a second
row controls for length — the intercept of dₚᶠ regressed on the length difference (concept
``length`` itself is left out of that row). Predicted: the intervention's ``predicted_z``. Null:
trained and base exchanged within a sample. The importance-weighted variant is
:mod:`prefaudit.verify.channel_weighted`.

Shaping change
--------------
Two runs a (vanilla) and b (shaped) from the same base and split: predicted (b − a) against
observed (b − a) reward loadings on the held-out responses both runs share — noise common to
both runs cancels. Null: the two runs' ρ exchanged within a pair. Label-only baseline: both
policies label-only, b's labels read with the sign of b − a's mean held-out margin (a run that
only learned the labels more, or less, strongly than the other).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ids
from ..stats.agreement import fixed_feature_set, standardized_covariance

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
    always = np.array([session.space.column(f) for f in weighted], dtype=int)
    return fixed_feature_set(q, varies, alpha=ids.ALPHA, n_random=n_random, seed=seed, always=always)


def response_features(matrix: Any, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense chosen and rejected features ``(n_pairs, len(cols))`` of a :class:`FeatureMatrix`."""
    return (
        matrix.chosen[:, cols].toarray().astype(np.float64),
        matrix.rejected[:, cols].toarray().astype(np.float64),
    )


def predicted_loadings(signal_units: np.ndarray, trained_c: np.ndarray, trained_r: np.ndarray) -> np.ndarray:
    """ℓ̂ ∝ signal / sd_T per unit, sd_T the unit's spread over the trained responses (both sides)."""
    sd = np.concatenate([trained_c, trained_r]).std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, np.asarray(signal_units, dtype=np.float64) / sd, 0.0)


def reward_observer(rho_c: np.ndarray, rho_r: np.ndarray, xc: np.ndarray, xr: np.ndarray):
    """observe(units, swap) for the reward channel: loadings of ρ on the features of held-out responses."""

    def observe(units: np.ndarray, swap: np.ndarray) -> np.ndarray:
        yc = np.where(swap, rho_r[units], rho_c[units])
        yr = np.where(swap, rho_c[units], rho_r[units])
        return standardized_covariance(np.concatenate([yc, yr]), np.concatenate([xc[units], xr[units]]))

    return observe


def margin_observer(rho_c: np.ndarray, rho_r: np.ndarray, xc: np.ndarray, xr: np.ndarray):
    """observe(units, swap) for the within-pair row: loadings of ρ(c) − ρ(r) on Δ = x(c) − x(r)."""
    margin = np.asarray(rho_c, dtype=np.float64) - np.asarray(rho_r, dtype=np.float64)
    d = np.asarray(xc, dtype=np.float64) - np.asarray(xr, dtype=np.float64)

    def observe(units: np.ndarray, swap: np.ndarray) -> np.ndarray:
        return standardized_covariance(np.where(swap, -margin[units], margin[units]), d[units])

    return observe


def label_only_rho(n: int) -> tuple[np.ndarray, np.ndarray]:
    """ρ of a policy that knows only the labels: +1 on each of ``n`` chosen, −1 on each rejected."""
    return np.ones(n), -np.ones(n)


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
