"""Feature-level reward shaping: margins from weights, and the learning signal they predict.

Pure numpy/scipy — no torch, no widgets. Conventions (``docs/DESIGN.md``):

* Δᵢᶠ = pooled(chosenᵢ)ᶠ − pooled(rejectedᵢ)ᶠ, and sᶠ = sd(Δᶠ) (ddof=1).
* A weight wᶠ is in standardised units. The pair margin is ``mᵢ = Σ_f wᶠ · Δᵢᶠ / sᶠ``.
* The shaped DPO loss is ``−log σ(β·hᵢ − mᵢ)``; at initialisation (h = 0) a pair's gradient weight
  is ``σ(mᵢ)`` (vanilla: 0.5 for every pair). wᶠ < 0 suppresses f: pairs whose chosen response has
  more of f get less gradient ("explained away"); wᶠ > 0 amplifies it.
* The **predicted learning signal** of a feature is the gradient-weighted mean of its Δ:
  ``Σᵢ σ(mᵢ)·Δᵢᶠ / Σᵢ σ(mᵢ)``. Before shaping it is the plain mean Δ.

Example
-------
>>> import numpy as np
>>> d = np.array([[1.0], [1.0], [-1.0], [1.0]])
>>> m = pair_margins(d, np.array([1.0]), np.array([-1.0]))
>>> predicted_signal(d, m).round(3).tolist()
[0.049]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from .errors import ConfigError

# |m| above this moves a pair's gradient weight σ(m) outside [0.27, 0.73] (vanilla 0.5): the
# shaping term, not the data, then decides how much the pair teaches.
DOMINANCE_THRESHOLD = 1.0

#: What a person may decide about a feature (``AuditCore.set_verdict``).
VERDICTS = ("allow", "suppress", "amplify")


def delta_sd(delta: np.ndarray | sp.spmatrix) -> np.ndarray:
    """Sample standard deviation (ddof=1) of each column of Δ, dense or sparse."""
    n = delta.shape[0]
    if n < 2:
        raise ConfigError("At least two pairs are needed to standardise feature differences.")
    if sp.issparse(delta):
        d = sp.csc_matrix(delta)
        mean = np.asarray(d.mean(axis=0)).ravel()
        sq = np.asarray(d.multiply(d).sum(axis=0)).ravel()
        var = (sq - n * mean**2) / (n - 1)
    else:
        var = np.var(np.asarray(delta, dtype=np.float64), axis=0, ddof=1)
    return np.sqrt(np.clip(var, 0.0, None))


def pair_margins(delta_w: np.ndarray, sd_w: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Margins ``m = Δ_w @ (w / s)`` for the weighted features (columns of ``delta_w``).

    Features with zero spread (sd = 0) carry no signal and contribute nothing.
    """
    delta_w = np.asarray(delta_w, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    sd_w = np.asarray(sd_w, dtype=np.float64)
    if delta_w.ndim != 2 or delta_w.shape[1] != weights.shape[0] or sd_w.shape != weights.shape:
        raise ConfigError(
            f"Shapes do not match: delta {delta_w.shape}, sd {sd_w.shape}, weights {weights.shape}."
        )
    if not np.all(np.isfinite(weights)):
        raise ConfigError("Weights must be finite numbers.")
    scale = np.divide(weights, sd_w, out=np.zeros_like(weights), where=sd_w > 0)
    return delta_w @ scale


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
    margins : ndarray, shape (n_pairs,)
    gradient_weight : ndarray, shape (n_pairs,)  — σ(m)
    signal_before, signal_after : ndarray, shape (n_columns,) — in raw Δ units
    sd : ndarray, shape (n_columns,)
    n_dominated : int — pairs with ``|m| >= threshold``
    """

    margins: np.ndarray
    gradient_weight: np.ndarray
    signal_before: np.ndarray
    signal_after: np.ndarray
    sd: np.ndarray
    n_dominated: int
    threshold: float


def preview(
    delta: np.ndarray | sp.spmatrix,
    weights: np.ndarray,
    *,
    sd: np.ndarray | None = None,
    threshold: float = DOMINANCE_THRESHOLD,
    columns: np.ndarray | None = None,
) -> ShapingPreview:
    """Margins and predicted signal given per-column ``weights``.

    ``weights`` has one entry per column of ``delta`` (zeros for unweighted features); only the
    non-zero columns enter the margins. Signals are reported for ``columns`` (default: all), so
    a slider preview over a few features costs a few sparse column reads, not a full product.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (delta.shape[1],):
        raise ConfigError(f"weights has shape {weights.shape}; expected ({delta.shape[1]},).")
    sd = delta_sd(delta) if sd is None else np.asarray(sd, dtype=np.float64)
    cols = np.flatnonzero(weights)
    if sp.issparse(delta):
        delta_w = sp.csc_matrix(delta)[:, cols].toarray()
    else:
        delta_w = np.asarray(delta, dtype=np.float64)[:, cols]
    m = pair_margins(delta_w, sd[cols], weights[cols]) if cols.size else np.zeros(delta.shape[0])
    if columns is not None:
        columns = np.asarray(columns, dtype=int)
        delta = sp.csc_matrix(delta)[:, columns] if sp.issparse(delta) else np.asarray(delta)[:, columns]
        sd = sd[columns]
    return ShapingPreview(
        margins=m,
        gradient_weight=gradient_weights(m),
        signal_before=predicted_signal(delta, None),
        signal_after=predicted_signal(delta, m),
        sd=sd,
        n_dominated=int(np.sum(np.abs(m) >= threshold)),
        threshold=float(threshold),
    )
