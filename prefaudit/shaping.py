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

Exact sums, and one weight at a time
------------------------------------
The uncapped sum is kept in integer **ticks** of 2⁻³² logit (:class:`MarginSum`): each entry's
term wᶠ·Δᵢᶠ/sᶠ is rounded to a tick once (±1.2e-10 logit), and integer addition is exact and
does not depend on order. So when one weight moves, ``mᵢ += (uᶠ_new − uᶠ_old)·Δᵢᶠ`` on the pairs
where f is active (uᶠ = wᶠ/sᶠ; O(kᶠ) instead of O(n · weighted features)) gives **the same
margins bit for bit** as summing every weight again — and so the same cap, the same
``n_capped`` and the same dominated pairs, which both read the uncapped sum. A margin of
exactly −1 (a one-sided feature at w = −1) stays exactly −1, on the threshold, however the
slider got there.

Margin coefficients
-------------------
A margin is linear in the Δ columns: mᵢ = Σ_j uⱼ·Δᵢⱼ with one coefficient uⱼ per column
(:func:`margin_unit`: wⱼ/sⱼ). Anything else that is a fixed linear combination of columns — a
feature group's score (:mod:`prefaudit.audit.shaping`) — adds to the coefficients of its
member columns, so every consumer of margins sees one definition.

Example
-------
>>> import numpy as np
>>> d = np.array([[1.0], [1.0], [-1.0], [1.0]])
>>> m = pair_margins(d, margin_scale(d), np.array([-1.0]))
>>> m.tolist(), predicted_signal(d, m).round(3).tolist()
([-1.0, -1.0, 1.0, -1.0], [0.049])
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

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


def margin_unit(weights: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Margin coefficient per column, ``u = w / s`` (0 where the scale is 0: no contribution)."""
    weights = np.asarray(weights, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    if scale.shape != weights.shape:
        raise ConfigError(f"Shapes do not match: scale {scale.shape}, weights {weights.shape}.")
    if not np.all(np.isfinite(weights)):
        raise ConfigError("Weights must be finite numbers.")
    return np.divide(weights, scale, out=np.zeros_like(weights), where=scale > 0)


#: Ticks per logit of the exact margin sum (a power of two: scaling by it is exact).
MARGIN_TICKS = 2.0**32
# |Σ ticks| stays below 2^62 (int64) when Σ_j max_i |uⱼ·Δᵢⱼ| is below this many logits.
_MAX_LOGITS = 2.0**30


def _ticks(values: np.ndarray, unit: np.ndarray | float) -> np.ndarray:
    # The one rounding of a term; the full sum and an update both call it on the same products.
    return np.rint(values * unit * MARGIN_TICKS).astype(np.int64)


class MarginSum:
    """Uncapped margins ``Σ_j uⱼ·Δᵢⱼ`` of one Δ, kept in exact integer ticks between updates.

    :meth:`set_unit` moves to new coefficients: only the columns whose coefficient changed are
    read (``incremental=True``), and the result equals :meth:`recompute` exactly (see the module
    docstring). A full recompute is used instead when the changed columns hold more entries than
    all weighted columns together (many weights changed at once).

    >>> d = sp.csc_matrix(np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 0.0]]))
    >>> s = MarginSum(d)
    >>> _ = s.set_unit(np.array([0.5, 0.0])); _ = s.set_unit(np.array([0.5, -1.0]))
    >>> s.raw().tolist(), bool(np.array_equal(s.ticks, MarginSum(d, np.array([0.5, -1.0])).ticks))
    ([-1.5, 1.0, 1.5], True)
    """

    def __init__(self, delta: np.ndarray | sp.spmatrix, unit: np.ndarray | None = None) -> None:
        d = sp.csc_matrix(delta, dtype=np.float64)
        if not d.has_canonical_format:
            d = d.copy()
            d.sum_duplicates()
        self.delta = d
        n, p = d.shape
        self.counts = np.diff(d.indptr)
        self.unit = np.zeros(p)
        self.ticks = np.zeros(n, dtype=np.int64)
        self._colmax = np.zeros(p)  # max_i |uⱼ·Δᵢⱼ| per column: the overflow bound
        self.lock = threading.Lock()  # a run's plan may read margins while a slider moves
        # What capped() last returned, and the rows whose sum moved since (None: all rows).
        self._read: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._moved: list[np.ndarray] | None = None
        self._signal: tuple[bytes | None, Any, np.ndarray] | None = None  # signal_columns()
        if unit is not None:
            self.set_unit(unit, incremental=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.delta.shape

    def raw(self) -> np.ndarray:
        """The uncapped margins in logits (float64)."""
        return self.ticks / MARGIN_TICKS

    def capped(self, cap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(uncapped, clipped to ±cap, σ(clipped)) margins, fresh arrays. Between two reads only
        the rows whose sum moved are converted, clipped and through σ again (elementwise, as a
        full pass: the arrays equal a full pass exactly)."""
        cap = float(cap)
        read, moved = self._read, self._moved
        if read is None or read[0] != cap or moved is None:
            raw = self.raw()
            m = np.clip(raw, -cap, cap)
            g = expit(m)
        else:
            _, raw, m, g = read
            # A row repeated (it moved with two columns) is written twice with the same value.
            rows = np.concatenate(moved) if moved else np.zeros(0, dtype=np.int64)
            raw[rows] = self.ticks[rows] / MARGIN_TICKS
            m[rows] = np.clip(raw[rows], -cap, cap)
            g[rows] = expit(m[rows])
        self._read, self._moved = (cap, raw, m, g), []
        return raw.copy(), m.copy(), g.copy()

    def signal_columns(
        self, delta: np.ndarray | sp.spmatrix, columns: np.ndarray | None
    ) -> tuple[Any, np.ndarray]:
        """(``columns`` of ``delta``, their plain mean), kept: a slider asks for the same few
        columns on every drop, and their vanilla signal does not depend on any weight."""
        key = None if columns is None else np.asarray(columns, dtype=np.int64).tobytes()
        kept = self._signal
        if kept is None or kept[0] != key:
            sub = delta if columns is None else _columns(delta, columns)
            kept = self._signal = (key, sub, _weighted_means(sub, np.full(delta.shape[0], 0.5)))
        return kept[1], kept[2]

    def set_unit(self, unit: np.ndarray, *, incremental: bool = True) -> np.ndarray:
        """Move to coefficients ``unit`` (one per column); returns the columns that changed."""
        unit = np.asarray(unit, dtype=np.float64)
        if unit.shape != self.unit.shape:
            raise ConfigError(f"unit has shape {unit.shape}; expected {self.unit.shape}.")
        if not np.all(np.isfinite(unit)):
            raise ConfigError("Margin coefficients must be finite numbers.")
        changed = np.flatnonzero(unit != self.unit)
        if not changed.size:
            return changed
        if incremental and self.counts[changed].sum() <= self.counts[unit != 0].sum():
            self._update(changed, unit)
        else:
            self.recompute(unit)
        return changed

    def recompute(self, unit: np.ndarray) -> None:
        """Sum every weighted column again (what :meth:`set_unit` must equal)."""
        unit = np.asarray(unit, dtype=np.float64)
        cols = np.flatnonzero(unit)
        sub = self.delta[:, cols]
        counts = np.diff(sub.indptr)
        prod = sub.data * np.repeat(unit[cols], counts)
        colmax = np.zeros(len(self.unit))
        has = counts > 0
        if prod.size:
            colmax[cols[has]] = np.maximum.reduceat(np.abs(prod), sub.indptr[:-1][has])
        self._check(colmax)
        ticks = np.zeros(self.delta.shape[0], dtype=np.int64)
        np.add.at(ticks, sub.indices, _ticks(sub.data, np.repeat(unit[cols], counts)))
        self.ticks, self.unit, self._colmax = ticks, unit.copy(), colmax
        self._moved = None

    def _update(self, changed: np.ndarray, unit: np.ndarray) -> None:
        d = self.delta
        colmax = self._colmax.copy()
        for j in changed:
            v = d.data[d.indptr[j] : d.indptr[j + 1]]
            colmax[j] = float(np.abs(v * unit[j]).max()) if v.size else 0.0
        self._check(colmax)
        for j in changed:
            lo, hi = d.indptr[j], d.indptr[j + 1]
            v = d.data[lo:hi]
            # Row indices within one column are unique: a fancy-index add is exact here.
            self.ticks[d.indices[lo:hi]] += _ticks(v, unit[j]) - _ticks(v, self.unit[j])
            if self._moved is not None:
                self._moved.append(d.indices[lo:hi])
        self.unit[changed] = unit[changed]
        self._colmax = colmax

    @staticmethod
    def _check(colmax: np.ndarray) -> None:
        if colmax.sum() >= _MAX_LOGITS:
            raise ConfigError(
                f"Weights this large give margins of up to {colmax.sum():.3g} logits before the "
                f"±{MARGIN_CAP:g} cap; use weights of a few units."
            )


def pair_margins(
    delta_w: np.ndarray, scale_w: np.ndarray, weights: np.ndarray, *, cap: float | None = MARGIN_CAP
) -> np.ndarray:
    """Margins ``m = clip(Δ_w @ (w / s), −cap, cap)`` for the weighted columns of ``delta_w``.

    ``scale_w`` is :func:`margin_scale` of those columns; a column with scale 0 contributes
    nothing. ``cap=None`` returns the unclipped sum. Summed exactly, as :class:`MarginSum`.
    """
    weights = np.asarray(weights, dtype=np.float64)
    delta_w = delta_w if sp.issparse(delta_w) else np.asarray(delta_w, dtype=np.float64)
    if delta_w.ndim != 2 or delta_w.shape[1] != weights.shape[0] or np.shape(scale_w) != weights.shape:
        raise ConfigError(
            f"Shapes do not match: delta {delta_w.shape}, scale {np.shape(scale_w)}, weights {weights.shape}."
        )
    m = MarginSum(delta_w, margin_unit(weights, scale_w)).raw()
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
    return _weighted_means(delta, g)


def _weighted_means(delta: np.ndarray | sp.spmatrix, g: np.ndarray) -> np.ndarray:
    """Σᵢ gᵢ·Δᵢⱼ / Σᵢ gᵢ per column of ``delta``."""
    total = g.sum()
    if sp.issparse(delta):
        return np.asarray(delta.T @ g).ravel() / total
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


#: Whether :func:`preview` moves the kept margin sum of a Δ column by column when weights
#: change (False: sum every weight again each time). The margins are identical either way; the
#: slider benchmark compares the two.
INCREMENTAL_MARGINS = True


def preview(
    delta: np.ndarray | sp.spmatrix,
    weights: np.ndarray,
    *,
    sd: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    threshold: float = DOMINANCE_THRESHOLD,
    cap: float = MARGIN_CAP,
    columns: np.ndarray | None = None,
    incremental: bool | None = None,
    sums: MarginSum | None = None,
) -> ShapingPreview:
    """Margins and predicted signal given per-column ``weights``.

    ``weights`` has one entry per column of ``delta`` (zeros for unweighted features); only the
    non-zero columns enter the margins. ``sd`` (:func:`delta_sd`) and ``scale``
    (:func:`margin_scale`), one entry per column, are computed when not given (pass cached ones).
    Signals are reported for ``columns`` (default: all), so a slider preview over a few features
    costs a few sparse column reads, not a full product.

    ``sums`` is the :class:`MarginSum` of this Δ kept by the caller between previews (the
    session's shaping part keeps one per Δ): when one weight moved since the last preview, only
    that column's active pairs are read (``incremental``, default :data:`INCREMENTAL_MARGINS`);
    the result is exactly that of a full recompute. Without ``sums`` every call sums afresh.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (delta.shape[1],):
        raise ConfigError(f"weights has shape {weights.shape}; expected ({delta.shape[1]},).")
    if not cap > 0:
        raise ConfigError(f"cap must be > 0 (a margin in logit units), got {cap!r}.")
    sd = delta_sd(delta) if sd is None else np.asarray(sd, dtype=np.float64)
    scale = margin_scale(delta) if scale is None else np.asarray(scale, dtype=np.float64)
    unit = margin_unit(weights, scale)
    kept = MarginSum(delta) if sums is None else sums
    incremental = INCREMENTAL_MARGINS if incremental is None else incremental
    with kept.lock:
        kept.set_unit(unit, incremental=incremental)
        if incremental:
            raw, m, g = kept.capped(cap)
        else:  # every pair converted, clipped and through σ again
            raw = kept.raw()
            m = np.clip(raw, -float(cap), float(cap))
            g = gradient_weights(m)
    if columns is not None:
        columns = np.asarray(columns, dtype=int)
        sd, scale = sd[columns], scale[columns]
    delta, before = kept.signal_columns(delta, columns)
    return ShapingPreview(
        margins=m,
        gradient_weight=g,  # σ(m), computed once: the signal and the caller read the same
        signal_before=before.copy(),
        signal_after=_weighted_means(delta, g),
        sd=sd,
        n_dominated=int(dominated(m, threshold).sum()),
        threshold=float(threshold),
        scale=scale,
        n_capped=int(np.sum(np.abs(raw) > cap)),
        cap=float(cap),
    )
