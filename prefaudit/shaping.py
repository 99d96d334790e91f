"""Feature-level reward shaping: margins from weights, and the learning signal they predict.

Pure numpy/scipy — no torch, no widgets. Conventions (``docs/DESIGN.md``):

* Δᵢᶠ = pooled(chosenᵢ)ᶠ − pooled(rejectedᵢ)ᶠ over n pairs.
* The pair margin, in logits, is ``mᵢ = clip(Σ_f wᶠ · Δᵢᶠ / sᶠ, −C, C)`` with the **margin scale**
  sᶠ of :func:`margin_scale` and the cap ``C =`` :data:`MARGIN_CAP` = 4.
* The shaped DPO loss is ``−log σ(β·hᵢ − mᵢ)``; at initialisation (h = 0) a pair's gradient weight
  is ``σ(mᵢ)`` (vanilla: 0.5 for every pair). wᶠ < 0 suppresses f: pairs whose chosen response has
  more of f get less gradient ("explained away"); wᶠ > 0 amplifies it.
* A pair is **dominated** when ``mᵢ ≤ −τ`` (:func:`dominated`, τ = :data:`DOMINANCE_THRESHOLD`):
  the weighted features explain the preference against the label. ``filter`` drops these pairs,
  ``flip`` swaps them, and the preview counts exactly them (``ShapingPreview.n_dominated``).
* The **predicted learning signal** of a feature is the gradient-weighted mean of its Δ:
  ``Σᵢ σ(mᵢ)·Δᵢᶠ / Σᵢ σ(mᵢ)``. Before shaping it is the plain mean Δ. It is reported in raw units
  and standardised by ``sd(Δᶠ)`` over all pairs (:func:`delta_sd`), as every audit effect is.

The margin scale — what one slider unit means
---------------------------------------------
Let Aᶠ = {i : Δᵢᶠ ≠ 0} be the pairs where f is active, kᶠ = |Aᶠ|, and over Aᶠ only

    aᶠ = mean |Δᵢᶠ|            (the typical size of a difference where f is active)
    vᶠ = sd(Δᵢᶠ), ddof=1       (its spread there; 0 when kᶠ = 1)
    sᶠ = max(vᶠ, aᶠ)           (``MARGIN_SCALE_FLOOR`` = 1 times aᶠ is the floor)

and sᶠ = 0 — **no contribution** — when f is never active or Δᶠ is exactly the same in every pair:
a column constant over all pairs shifts every margin alike and cannot tell pairs apart.

*Why.* The old unit, sd(Δᶠ) over **all** pairs, shrinks like √(k/n)·rms for a rare feature, so
"w = −1" gave a margin of ≈ −√(n/k) where it is active (−44.7 for 5 pairs of 10,000; σ = 4e-20)
and a near-constant Δ (sd → 0) gave margins of any size. Because sᶠ ≥ aᶠ, at weight w the mean
|wᶠ·Δᵢᶠ/sᶠ| over the pairs where f is active is **at most |w| logits, whatever f's rarity**; for a
one-sided feature (Δ > 0 wherever active — a binary concept that only chosen responses have) it
is exactly |w|. The spread vᶠ takes over when Δ varies more than its typical size (two-sided or
heavy-tailed features), so that a single outlying pair is still measured against the others.

*Relation to the old unit.* For a feature active in every pair (kᶠ = n) vᶠ = sd(Δᶠ) exactly, so
sᶠ = sd(Δᶠ) whenever sd(Δᶠ) ≥ mean|Δᶠ| — any roughly symmetric Δ (a normal Δ with mean 0 has
mean|Δ| = 0.80·sd); such features keep their old margins. A dense feature with a consistent sign
and small spread gets the larger aᶠ: that is the near-constant case that exploded before.

*Cap.* A sum over several features, or one outlying Δ, can still be large; beyond
|m| = 4 the gradient weight is σ(−4) ≈ 0.018 or σ(4) ≈ 0.982 and a larger |m| says nothing more,
so margins are clipped to ±C after the sum and the clipped pairs are counted
(``ShapingPreview.n_capped``). Keep τ < C, or no pair can be dominated.

Example
-------
>>> import numpy as np
>>> d = np.array([[1.0], [1.0], [-1.0], [1.0]])
>>> m = pair_margins(d, margin_scale(d), np.array([-1.0]))
>>> m.tolist(), predicted_signal(d, m).round(3).tolist()
([-1.0, -1.0, 1.0, -1.0], [0.049])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from .errors import ConfigError

# m ≤ −τ moves a pair's gradient weight σ(m) to at most 0.27 (vanilla 0.5): the shaping term,
# not the data, then decides how much the pair teaches — against its label.
DOMINANCE_THRESHOLD = 1.0

#: |mᵢ| is clipped here after the sum over features (logits; σ(−4) ≈ 0.018).
MARGIN_CAP = 4.0

#: sᶠ ≥ this × mean |Δᶠ| over the pairs where f is active (see the module docstring).
MARGIN_SCALE_FLOOR = 1.0

#: What a person may decide about a feature (``AuditCore.set_verdict``).
VERDICTS = ("allow", "suppress", "amplify")


@dataclass
class _ActiveMoments:
    """Per column: k (active pairs), their mean Δ, mean |Δ|, centred sum of squares, constancy."""

    k: np.ndarray
    mean: np.ndarray
    mean_abs: np.ndarray
    centred_ss: np.ndarray
    constant: np.ndarray  # every active Δ identical (exactly)
    col: np.ndarray  # column of each active entry, with its value ``v``
    v: np.ndarray


def _active_moments(delta: np.ndarray | sp.spmatrix) -> _ActiveMoments:
    # Two passes over the non-zero entries of each column, no Σx² − n·mean² cancellation. The
    # mean is taken of the values shifted by the column's first active value, so a column whose
    # active values are all equal has mean exactly that value and spread exactly 0.
    d = sp.csc_matrix(delta, dtype=np.float64)
    if not d.has_canonical_format:
        d = d.copy()
        d.sum_duplicates()
    p = d.shape[1]
    col = np.repeat(np.arange(p), np.diff(d.indptr))
    v = np.asarray(d.data, dtype=np.float64)
    nz = v != 0
    col, v = col[nz], v[nz]
    k = np.bincount(col, minlength=p)
    has = k > 0
    first = np.zeros(p)
    first[has] = v[np.searchsorted(col, np.flatnonzero(has))]
    shifted = v - first[col]
    kf = np.maximum(k, 1).astype(np.float64)
    mean = first + np.bincount(col, shifted, minlength=p) / kf
    centred_ss = np.bincount(col, (v - mean[col]) ** 2, minlength=p)
    constant = has & (np.bincount(col, shifted != 0, minlength=p) == 0)
    mean_abs = np.bincount(col, np.abs(v), minlength=p) / kf
    return _ActiveMoments(k, mean, mean_abs, centred_ss, constant, col, v)


def delta_sd(delta: np.ndarray | sp.spmatrix) -> np.ndarray:
    """Sample standard deviation (ddof=1) of each column of Δ over all pairs, dense or sparse.

    The unit of standardised signals and effects (``signal_*_z``, verification); not the margin
    scale (:func:`margin_scale`). The sparse path is two-pass (it equals ``np.std(ddof=1)``
    also for a constant or nearly constant column, where Σx² − n·mean² would cancel).
    """
    n = delta.shape[0]
    if n < 2:
        raise ConfigError("At least two pairs are needed to standardise feature differences.")
    if not sp.issparse(delta):
        return np.std(np.asarray(delta, dtype=np.float64), axis=0, ddof=1)
    a = _active_moments(delta)
    # The mean over all n pairs; k = n gives the active mean exactly (k / n = 1.0).
    mean = a.mean * (a.k / n)
    ss = np.bincount(a.col, (a.v - mean[a.col]) ** 2, minlength=len(a.k)) + (n - a.k) * mean**2
    return np.sqrt(ss / (n - 1))


def margin_scale(delta: np.ndarray | sp.spmatrix) -> np.ndarray:
    """The margin scale sᶠ = max(sd over active pairs, mean |Δ| over active pairs) per column.

    0 (no contribution) for a column that is never active or identical in every pair. See the
    module docstring for the definition and why.

    >>> margin_scale(np.array([[2.0, 0.7], [0.0, 0.7], [0.0, 0.7], [4.0, 0.7]])).round(3).tolist()
    [3.0, 0.0]
    """
    n = delta.shape[0]
    a = _active_moments(delta)
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.where(a.k >= 2, np.sqrt(a.centred_ss / np.maximum(a.k - 1, 1)), 0.0)
    scale = np.maximum(spread, MARGIN_SCALE_FLOOR * a.mean_abs)
    scale[(a.k == 0) | ((a.k == n) & a.constant)] = 0.0
    return scale


def pair_margins(
    delta_w: np.ndarray, scale_w: np.ndarray, weights: np.ndarray, *, cap: float | None = MARGIN_CAP
) -> np.ndarray:
    """Margins ``m = clip(Δ_w @ (w / s), −cap, cap)`` for the weighted columns of ``delta_w``.

    ``scale_w`` is :func:`margin_scale` of those columns; a column with scale 0 contributes
    nothing. ``cap=None`` returns the unclipped sum.
    """
    delta_w = np.asarray(delta_w, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    scale_w = np.asarray(scale_w, dtype=np.float64)
    if delta_w.ndim != 2 or delta_w.shape[1] != weights.shape[0] or scale_w.shape != weights.shape:
        raise ConfigError(
            f"Shapes do not match: delta {delta_w.shape}, scale {scale_w.shape}, weights {weights.shape}."
        )
    if not np.all(np.isfinite(weights)):
        raise ConfigError("Weights must be finite numbers.")
    unit = np.divide(weights, scale_w, out=np.zeros_like(weights), where=scale_w > 0)
    m = delta_w @ unit
    return m if cap is None else np.clip(m, -float(cap), float(cap))


def dominated(margins: np.ndarray, threshold: float = DOMINANCE_THRESHOLD) -> np.ndarray:
    """Mask of the pairs the shaping dominates against their label: ``mᵢ ≤ −τ``.

    The one definition: ``filter`` drops these pairs, ``flip`` swaps them, and the preview (its
    ``n_dominated`` and histogram) counts them.
    """
    if not threshold > 0:
        raise ConfigError(f"threshold must be > 0 (a margin in logit units), got {threshold!r}.")
    return np.asarray(margins) <= -float(threshold)


def gradient_weights(margins: np.ndarray) -> np.ndarray:
    """Per-pair DPO gradient weight at initialisation, σ(m)."""
    return expit(np.asarray(margins, dtype=np.float64))


def predicted_signal(delta: np.ndarray | sp.spmatrix, margins: np.ndarray | None) -> np.ndarray:
    """Gradient-weighted mean Δ per feature (``margins=None``: vanilla, the plain mean)."""
    n = delta.shape[0]
    g = np.full(n, 0.5) if margins is None else gradient_weights(margins)
    total = g.sum()
    if sp.issparse(delta):
        return np.asarray(sp.csr_matrix(delta).T @ g).ravel() / total
    return (g @ np.asarray(delta, dtype=np.float64)) / total


@dataclass
class ShapingPreview:
    """What a set of weights would change, before any training.

    Attributes
    ----------
    margins : ndarray, shape (n_pairs,) — capped at ±``cap``
    gradient_weight : ndarray, shape (n_pairs,)  — σ(m)
    signal_before, signal_after : ndarray, shape (n_columns,) — in raw Δ units
    sd : ndarray, shape (n_columns,) — sd(Δ) over all pairs, the unit of standardised signals
    scale : ndarray, shape (n_columns,) — the margin scale sᶠ (:func:`margin_scale`)
    n_dominated : int — pairs with ``m <= -threshold`` (:func:`dominated`)
    threshold : float
    n_capped : int — pairs whose summed margin exceeded ``cap`` in absolute value
    cap : float
    """

    margins: np.ndarray
    gradient_weight: np.ndarray
    signal_before: np.ndarray
    signal_after: np.ndarray
    sd: np.ndarray
    n_dominated: int
    threshold: float
    scale: np.ndarray | None = None
    n_capped: int = 0
    cap: float = MARGIN_CAP


def _columns(delta: np.ndarray | sp.spmatrix, cols: np.ndarray) -> np.ndarray | sp.csc_matrix:
    return sp.csc_matrix(delta)[:, cols] if sp.issparse(delta) else np.asarray(delta)[:, cols]


def preview(
    delta: np.ndarray | sp.spmatrix,
    weights: np.ndarray,
    *,
    sd: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    threshold: float = DOMINANCE_THRESHOLD,
    cap: float = MARGIN_CAP,
    columns: np.ndarray | None = None,
) -> ShapingPreview:
    """Margins and predicted signal given per-column ``weights``.

    ``weights`` has one entry per column of ``delta`` (zeros for unweighted features); only the
    non-zero columns enter the margins. ``sd`` (:func:`delta_sd`) and ``scale``
    (:func:`margin_scale`), one entry per column, are computed when not given (pass cached ones).
    Signals are reported for ``columns`` (default: all), so a slider preview over a few features
    costs a few sparse column reads, not a full product.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (delta.shape[1],):
        raise ConfigError(f"weights has shape {weights.shape}; expected ({delta.shape[1]},).")
    if not cap > 0:
        raise ConfigError(f"cap must be > 0 (a margin in logit units), got {cap!r}.")
    sd = delta_sd(delta) if sd is None else np.asarray(sd, dtype=np.float64)
    scale = margin_scale(delta) if scale is None else np.asarray(scale, dtype=np.float64)
    cols = np.flatnonzero(weights)
    if cols.size:
        delta_w = _columns(delta, cols)
        delta_w = delta_w.toarray() if sp.issparse(delta_w) else np.asarray(delta_w, dtype=np.float64)
        raw = pair_margins(delta_w, scale[cols], weights[cols], cap=None)
    else:
        raw = np.zeros(delta.shape[0])
    m = np.clip(raw, -float(cap), float(cap))
    if columns is not None:
        columns = np.asarray(columns, dtype=int)
        delta, sd, scale = _columns(delta, columns), sd[columns], scale[columns]
    return ShapingPreview(
        margins=m,
        gradient_weight=gradient_weights(m),
        signal_before=predicted_signal(delta, None),
        signal_after=predicted_signal(delta, m),
        sd=sd,
        n_dominated=int(dominated(m, threshold).sum()),
        threshold=float(threshold),
        scale=scale,
        n_capped=int(np.sum(np.abs(raw) > cap)),
        cap=float(cap),
    )
