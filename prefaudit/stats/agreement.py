"""How well a prediction agrees with what was observed, with the numbers that make a claim checkable.

Every agreement figure prefaudit reports comes from :func:`agreement_row`: over a feature set
fixed *before* looking at the outcome, the Pearson r between predicted and observed values,
its bootstrap 95% CI over the observation units (held-out pairs or prompts), a null
distribution of r when the observation carries no signal (each unit's two sides exchanged at
random), a split-half noise ceiling, and R².

Definitions
-----------
* ``r`` — Pearson correlation of predicted and observed across features.
* ``r2`` — ``1 − SS_res / SS_tot`` after fitting one scale ``k`` through the origin
  (``obs ≈ k·pred``, ``k = pred·obs / pred·pred``). The prediction is in data units, not in units of
  a training budget, so the scale is free; the intercept is not (a prediction of 0 means "no
  change"). ``r2`` can be negative (worse than predicting the mean) and is not r².
* ``r_low, r_high`` — percentile bootstrap 95% CI of r, resampling units with replacement
  (predicted values recomputed on the resample when they depend on the units). Read it as the
  spread of r over other held-out sets of this size: a resample repeats units, which adds noise
  to the observed values and pulls r down, so the interval sits low and can exclude r itself when
  r is near its ceiling. (Bias-corrected intervals — basic, BCa — then move above r: they estimate
  the noise-free correlation, a different quantity. Not used.)
* ``null_low, null_high`` — 2.5 and 97.5 percentiles of r when every unit's sides are
  exchanged with probability 1/2 (for a reward: ρ of chosen and rejected swapped within the
  prompt; for generations: trained and base swapped). Under "nothing was learned" this is the
  distribution r would have; a reported r inside it is not evidence of agreement.
* ``ceiling`` — the largest r a perfect predictor could expect given the observation noise:
  √(Spearman–Brown(r_half)), where r_half is the mean correlation of the observed values on two
  random halves of the units. NaN when the halves do not correlate positively.

Example
-------
>>> import numpy as np
>>> pred = np.array([1.0, 2.0, 3.0]); obs = np.array([2.0, 4.1, 5.9])
>>> round(pearson(pred, obs), 3), round(origin_r2(pred, obs), 3)
(0.999, 0.997)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

AGREEMENT_COLUMNS = (
    "channel",
    "r",
    "r_low",
    "r_high",
    "r2",
    "null_low",
    "null_high",
    "ceiling",
    "n_features",
    "n_units",
    "scale",
)

# observe(units, swap) -> observed value per feature; units index the observation units (with
# repeats in a bootstrap), swap[k] exchanges unit k's two sides (the null).
Observe = Callable[[np.ndarray, np.ndarray], np.ndarray]
Predict = Callable[[np.ndarray], np.ndarray]


def pearson(pred: np.ndarray, obs: np.ndarray) -> float:
    """Pearson r, NaN when either side is constant or fewer than 3 features."""
    pred, obs = np.asarray(pred, dtype=np.float64), np.asarray(obs, dtype=np.float64)
    ok = np.isfinite(pred) & np.isfinite(obs)
    pred, obs = pred[ok], obs[ok]
    if len(pred) < 3 or np.std(pred) == 0 or np.std(obs) == 0:
        return math.nan
    return float(np.corrcoef(pred, obs)[0, 1])


def origin_scale(pred: np.ndarray, obs: np.ndarray) -> float:
    """Least-squares ``k`` in ``obs ≈ k·pred`` (a line through the origin)."""
    pred, obs = np.asarray(pred, dtype=np.float64), np.asarray(obs, dtype=np.float64)
    den = float(pred @ pred)
    return float(pred @ obs) / den if den > 0 else math.nan


def origin_r2(pred: np.ndarray, obs: np.ndarray) -> float:
    """``1 − SS_res/SS_tot`` of the fit ``obs ≈ k·pred`` through the origin (see the module docstring)."""
    pred, obs = np.asarray(pred, dtype=np.float64), np.asarray(obs, dtype=np.float64)
    k = origin_scale(pred, obs)
    ss_tot = float(np.sum((obs - obs.mean()) ** 2))
    if not math.isfinite(k) or ss_tot == 0:
        return math.nan
    return 1.0 - float(np.sum((obs - k * pred) ** 2)) / ss_tot


def spearman_brown(r_half: float) -> float:
    """Reliability of the whole from the correlation of two halves: 2r / (1 + r)."""
    return 2 * r_half / (1 + r_half) if math.isfinite(r_half) and r_half > -1 else math.nan


@dataclass
class AgreementRow:
    """One row of an agreement table (columns :data:`AGREEMENT_COLUMNS`)."""

    channel: str
    r: float
    r_low: float
    r_high: float
    r2: float
    null_low: float
    null_high: float
    ceiling: float
    n_features: int
    n_units: int
    scale: float

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _percentiles(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if math.isfinite(x)])
    if len(v) < 10:
        return math.nan, math.nan
    lo, hi = np.percentile(v, [2.5, 97.5])
    return float(lo), float(hi)


def agreement_row(
    channel: str,
    n_units: int,
    observe: Observe,
    predict: Predict | np.ndarray,
    *,
    n_boot: int = 500,
    n_null: int = 500,
    n_splits: int = 50,
    seed: int = 0,
) -> AgreementRow:
    """r, R², bootstrap CI, null interval and split-half ceiling of one channel.

    Parameters
    ----------
    channel : str
        Name shown in the table (``"reward"``, ``"generation"``, ``"shaping change"``).
    n_units : int
        Observation units (held-out pairs, prompts).
    observe : callable ``(units, swap) -> ndarray (n_features,)``
        Observed value of every feature of the fixed set from the given units; ``swap`` (bool
        per unit) exchanges that unit's two sides.
    predict : ndarray (n_features,) or callable ``units -> ndarray``
        The prediction; a callable when it depends on the units (recomputed per resample).
    n_boot, n_null, n_splits, seed
        Resamples for the CI, the null and the ceiling; all draws come from one seeded generator.
    """
    rng = np.random.default_rng(seed)
    units = np.arange(n_units)
    no_swap = np.zeros(n_units, dtype=bool)

    def pred_of(idx: np.ndarray) -> np.ndarray:
        return np.asarray(predict(idx) if callable(predict) else predict, dtype=np.float64)

    pred, obs = pred_of(units), np.asarray(observe(units, no_swap), dtype=np.float64)
    r = pearson(pred, obs)
    boots = []
    for _ in range(n_boot if n_units > 1 else 0):
        idx = rng.integers(0, n_units, n_units)
        boots.append(pearson(pred_of(idx), observe(idx, no_swap)))
    nulls = [pearson(pred, observe(units, rng.random(n_units) < 0.5)) for _ in range(n_null)]
    halves = []
    for _ in range(n_splits if n_units >= 4 else 0):
        perm = rng.permutation(n_units)
        a, b = np.sort(perm[: n_units // 2]), np.sort(perm[n_units // 2 :])
        halves.append(pearson(observe(a, no_swap[a]), observe(b, no_swap[b])))
    finite = [h for h in halves if math.isfinite(h)]
    rel = spearman_brown(float(np.mean(finite))) if finite else math.nan
    ceiling = math.sqrt(rel) if math.isfinite(rel) and rel > 0 else math.nan
    lo, hi = _percentiles(boots)
    n_lo, n_hi = _percentiles(nulls)
    return AgreementRow(
        channel=channel,
        r=r,
        r_low=lo,
        r_high=hi,
        r2=origin_r2(pred, obs),
        null_low=n_lo,
        null_high=n_hi,
        ceiling=min(ceiling, 1.0) if math.isfinite(ceiling) else math.nan,
        n_features=len(pred),
        n_units=int(n_units),
        scale=origin_scale(pred, obs),
    )


def standardized_covariance(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """cov(y, x_f) / sd(x_f) for each column f of ``x`` (``(n,)`` and ``(n, F)``); 0 for constant columns.

    The loading of a response-level quantity ``y`` (an implicit reward) on each feature, in
    units of ``y`` per standard deviation of the feature.
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    n = len(y)
    if n < 2:
        return np.zeros(x.shape[1])
    yc = y - y.mean()
    xc = x - x.mean(axis=0)
    cov = (yc @ xc) / (n - 1)
    sd = xc.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, cov / sd, 0.0)


def fixed_feature_set(
    q: np.ndarray,
    varies: np.ndarray,
    *,
    alpha: float,
    n_random: int,
    seed: int,
    always: np.ndarray | None = None,
) -> np.ndarray:
    """Columns evaluated: every ``q < alpha`` feature that varies, plus a seeded random sample of the rest.

    Chosen from the audit alone (q-values and which features vary), never from observed outcomes,
    so the agreement is not a selection effect. ``always`` (e.g. the weighted features) is added.
    """
    q = np.asarray(q, dtype=np.float64)
    varies = np.asarray(varies, dtype=bool)
    sig = np.flatnonzero(varies & (q < alpha))
    rest = np.flatnonzero(varies & ~(q < alpha))
    rng = np.random.default_rng(seed)
    sample = rng.choice(rest, size=min(n_random, len(rest)), replace=False) if len(rest) else rest
    cols = np.concatenate([sig, sample, np.asarray(always if always is not None else [], dtype=int)])
    return np.unique(cols.astype(int))
