"""Feature groups: SAE features that carry the same signal in *this* data, tested as one.

SAE features come in families — one concept split over many latents, many latents riding one
quality signal — so a table of thousands of significant features hides how few signals there
are. This module clusters features into groups, scores each group per response, labels it by
its contexts, lines it up with the text concepts and controls each effect for the others.
Pure: arrays in, arrays out; the tokenizer comes in as two callables.

Which similarity, and why
-------------------------
**Co-activation over responses**: the Pearson correlation of two features' pooled activations
across the 2n responses (chosen and rejected stacked, zeros included). What the audit tests is
that pooled value per response, so two features are redundant *for the audit* exactly when their
pooled values move together over these responses — whatever their decoder directions.
Decoder cosine finds the split latents of one concept but misses latents that fire on different
tokens of the same kind of response (the many features of "an evasive answer"), and needs the
SAE's weights, which a restored audit may not load. Co-activation needs only the pooled matrix.

**Which features are clustered**: those active (pooled value ≠ 0) in at least
``max(10, ceil(1% of the responses))`` of the responses the correlation is computed on and not
constant there; a correlation resting on fewer responses is decided by a handful of texts.
The rest are *unclustered* (dead ones included): they are in no group and
:attr:`FeatureGroups.unclustered` lists them, so nothing is dropped silently. The correlation
uses every response when there are at most ``MAX_CORR_ROWS`` (4,096); above that, 4,096 evenly
spaced rows of the stacked responses (deterministic; the standard error of r is then ≤ 0.016).

**Clustering**: average linkage (``scipy.cluster.hierarchy.linkage(method="average")``, no
seed) on the distance 1 − r, cut at ``MAX_DISTANCE`` = 0.5. Two clusters merge only while the
mean correlation between their members is ≥ 0.5: in a one-factor model x_f = λ_f·F + ε_f the
correlation of two members is λ_f·λ_g, so r ≥ 0.5 says that a common signal explains at least
half of a typical member's variance (λ ≥ 0.71). A clustered feature that joins no other forms a
singleton group. Groups are numbered by size (largest first), ties by their smallest feature.

Group score, label, aligned concepts
------------------------------------
* **Score** of group g in a response: the mean over its members of the pooled value divided by
  the member's sd over all responses (ddof = 1). Standardising first stops one loud latent from
  being the group; the mean keeps a group's score in the units of one standardised member. Not
  centred, so it stays sparse (no member active → 0); Δ and correlations do not depend on it.
* **Label**: the ``n_top`` responses with the highest score; in each, the peaks (stored
  ``top_pos``) of the ``n_peaks`` members with the largest standardised value there; around
  each peak a window of ±``window`` tokens of the re-tokenised response. The n-grams of 2 and 3
  tokens that contain a peak are counted once per response; the label joins the ``n_words``
  most frequent ones (ties: longer, then centred on the peak, then seen in a stronger response
  first; one inside another is skipped) with " · ". If none recurs, the strongest window.
* **Aligned concepts**: the Pearson r of the score with each text concept's value over the 2n
  responses; the ``top`` largest |r|, with their signed r.

Explained by: the model
-----------------------
For a target t (a group's score or one feature) and pairs i = 1…n::

    Δtᵢ = a + b·Δlenᵢ + Σₖ cₖ·Δgₖᵢ + εᵢ        (ordinary least squares, εᵢ i.i.d.)

where Δlen is chosen − rejected length and g₁…g_K are the K (default 5) other groups with the
largest |d_z| (finite d_z; never the target itself nor, for a feature, its own group). The
controlled effect is the intercept a — the mean Δ at equal length and with those groups equal
in both responses — with the usual OLS standard error se(a) = sqrt(σ̂²·[(XᵀX)⁻¹]₀₀),
σ̂² = RSS/(n − rank X), and the two-sided t-test p on n − rank X df. ``d_z_controlled`` is a/σ̂;
with no covariates it is exactly d_z = mean(Δ)/sd(Δ). A covariate with no variance is left out
(X is pseudo-inverted by SVD, so a collinear one cannot break the fit).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import special
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

MIN_ACTIVE_RESPONSES = 10
MIN_ACTIVE_FRACTION = 0.01
MAX_DISTANCE = 0.5
MAX_CORR_ROWS = 4096
N_CONTROL_GROUPS = 5


@dataclass(frozen=True)
class FeatureGroups:
    """The result of :func:`cluster_features`.

    Attributes
    ----------
    members : list of numpy.ndarray[int]
        Sorted feature indices of each group, group k at position k.
    unclustered : numpy.ndarray[int]
        Features in no group (too rarely active, or constant, on the correlation rows).
    n_features : int
    min_active : int
        The activity rule applied (responses with a non-zero pooled value).
    n_rows : int
        Responses the correlation was computed on.
    max_distance : float
    """

    members: list[np.ndarray]
    unclustered: np.ndarray
    n_features: int
    min_active: int
    n_rows: int
    max_distance: float = MAX_DISTANCE

    @property
    def n_groups(self) -> int:
        return len(self.members)

    @property
    def assignment(self) -> np.ndarray:
        """Group index of every feature, −1 for the unclustered."""
        out = np.full(self.n_features, -1, dtype=np.int64)
        for k, m in enumerate(self.members):
            out[m] = k
        return out


def min_active(n_rows: int) -> int:
    """The activity rule: a feature is clustered when active in at least this many of ``n_rows``."""
    return max(MIN_ACTIVE_RESPONSES, math.ceil(MIN_ACTIVE_FRACTION * n_rows))


def correlation_rows(n_rows: int, max_rows: int = MAX_CORR_ROWS) -> np.ndarray:
    """Rows the correlation uses: all, or ``max_rows`` evenly spaced ones."""
    if n_rows <= max_rows:
        return np.arange(n_rows)
    return np.unique(np.linspace(0, n_rows - 1, max_rows).round().astype(np.int64))


def cluster_features(
    values: Any,
    *,
    max_distance: float = MAX_DISTANCE,
    max_rows: int = MAX_CORR_ROWS,
    min_active_rows: int | None = None,
) -> FeatureGroups:
    """Group the columns of ``values`` (responses × features, any sparse or dense form).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> f = rng.exponential(size=(200, 2))
    >>> x = np.repeat(f, 3, axis=1) + 0.1 * rng.exponential(size=(200, 6))
    >>> [m.tolist() for m in cluster_features(x).members]
    [[0, 1, 2], [3, 4, 5]]
    """
    x = sp.csr_matrix(values)
    n_rows, n_features = x.shape
    rows = correlation_rows(n_rows, max_rows)
    xs = sp.csc_matrix(x[rows])
    rule = min_active(len(rows)) if min_active_rows is None else int(min_active_rows)
    active = np.diff(xs.indptr) >= rule
    cols = np.flatnonzero(active)
    dense = xs[:, cols].toarray().astype(np.float32)
    dense -= dense.mean(axis=0, dtype=np.float64).astype(np.float32)
    ss = np.einsum("ij,ij->j", dense, dense, dtype=np.float64)
    keep = ss > 0
    cols, dense, ss = cols[keep], dense[:, keep], ss[keep]
    unclustered = np.setdiff1d(np.arange(n_features), cols)
    if len(cols) == 0:
        return FeatureGroups([], unclustered, n_features, rule, len(rows), max_distance)
    if len(cols) == 1:
        labels = np.array([1])
    else:
        dist = (dense.T @ dense).astype(np.float64)  # in place from here: F × F is the big array
        del dense
        norm = np.sqrt(ss)
        dist /= norm[:, None]
        dist /= norm[None, :]
        np.subtract(1.0, dist, out=dist)  # 1 − r
        np.clip(dist, 0.0, 2.0, out=dist)
        np.fill_diagonal(dist, 0.0)
        tree = linkage(squareform(dist, checks=False), method="average")
        labels = fcluster(tree, t=max_distance, criterion="distance")
    order = np.argsort(labels, kind="stable")
    split = np.flatnonzero(np.diff(labels[order])) + 1
    members = [np.sort(cols[idx]) for idx in np.split(order, split)]
    members.sort(key=lambda m: (-len(m), int(m[0])))
    return FeatureGroups(members, unclustered, n_features, rule, len(rows), max_distance)


def response_scale(chosen: Any, rejected: Any) -> np.ndarray:
    """sd (ddof = 1) of each feature's pooled value over all 2n responses, zeros included."""
    x = sp.vstack([sp.csr_matrix(chosen), sp.csr_matrix(rejected)], format="csc").astype(np.float64)
    n = x.shape[0]
    mean = np.asarray(x.mean(axis=0)).ravel()
    sq = np.asarray(x.multiply(x).sum(axis=0)).ravel()
    var = np.maximum(sq - n * mean**2, 0.0) / max(n - 1, 1)
    return np.sqrt(var)


def score_weights(groups: FeatureGroups, scale: np.ndarray) -> sp.csc_matrix:
    """(features × groups) weights: 1/(sd_f · n_members) for each member f of group g."""
    rows = np.concatenate([m for m in groups.members]) if groups.members else np.zeros(0, np.int64)
    cols = np.repeat(np.arange(groups.n_groups), [len(m) for m in groups.members])
    sizes = np.array([len(m) for m in groups.members], dtype=np.float64)
    with np.errstate(divide="ignore"):
        w = np.where(scale[rows] > 0, 1.0 / (scale[rows] * sizes[cols]), 0.0)
    return sp.csc_matrix((w, (rows, cols)), shape=(groups.n_features, groups.n_groups))


def group_scores(values: Any, weights: sp.csc_matrix) -> sp.csr_matrix:
    """Per-response group scores ``(n_rows, n_groups)`` (sparse): ``values @ weights``."""
    return sp.csr_matrix(sp.csr_matrix(values, dtype=np.float64) @ weights)


def correlate_columns(a: Any, b: np.ndarray) -> np.ndarray:
    """Pearson r of every column of ``a`` (sparse ok) with every column of ``b``: ``(a_cols, b_cols)``.

    A column with no variance correlates 0 with everything.
    """
    a = sp.csc_matrix(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = a.shape[0]
    a_mean = np.asarray(a.mean(axis=0)).ravel()
    a_ss = np.maximum(np.asarray(a.multiply(a).sum(axis=0)).ravel() - n * a_mean**2, 0.0)
    bc = b - b.mean(axis=0)
    b_ss = np.einsum("ij,ij->j", bc, bc)
    cross = np.asarray(a.T @ bc)  # Σ a·(b − b̄) = Σ (a − ā)(b − b̄)
    denom = np.sqrt(np.outer(a_ss, b_ss))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denom > 0, cross / denom, 0.0)
    return np.clip(r, -1.0, 1.0)


def aligned_concepts(
    scores: Any, concepts: np.ndarray, names: Sequence[str], *, top: int = 2
) -> list[list[tuple[str, float]]]:
    """For each group, the ``top`` concepts with the largest |r| over responses, as ``(name, r)``."""
    if len(names) == 0:
        return [[] for _ in range(scores.shape[1])]
    r = correlate_columns(scores, concepts)
    out = []
    for row in r:
        order = np.lexsort((np.arange(len(row)), -np.abs(row)))[:top]
        out.append([(str(names[j]), float(row[j])) for j in order if row[j] != 0])
    return out


def group_labels(
    groups: FeatureGroups,
    scores: Any,
    sides: Sequence[Any],
    texts: Sequence[str],
    scale: np.ndarray,
    tokenize: Callable[[str], Sequence[int]],
    decode: Callable[[Sequence[int]], list[str]],
    *,
    n_top: int = 20,
    n_peaks: int = 3,
    window: int = 2,
    n_words: int = 3,
) -> list[str]:
    """A label per group from the n-grams around its members' peaks in its strongest responses.

    ``scores`` are the per-response group scores (chosen rows, then rejected rows); ``sides`` the
    two :class:`~prefaudit.features.encoded.SidePooled` (``values``, ``top_pos``, ``top_token``),
    ``texts`` the 2n response texts in the same order; ``tokenize`` must tokenise a response as
    the encode did (``Backbone.response_ids(text)[0]``).
    """
    n = sides[0].values.shape[0]
    n_groups = groups.n_groups
    # Every stored entry of a clustered feature as (group, response) key, strongest first.
    parts = []
    for s, side in enumerate(sides):
        v = side.values
        rows = np.repeat(np.arange(v.shape[0]), np.diff(v.indptr)) + s * n
        parts.append((rows, v.indices, v.data, side.top_pos, side.top_token))
    rows, feats, vals, pos, tok = (np.concatenate(x) for x in zip(*parts, strict=True))
    # The n_top strongest responses of each group (ties: lower row first).
    sc = sp.coo_matrix(scores)
    by = np.lexsort((sc.row, -sc.data, sc.col))
    g_top, r_top = sc.col[by].astype(np.int64), sc.row[by].astype(np.int64)
    first = np.searchsorted(g_top, np.arange(n_groups))
    rank = np.arange(len(g_top)) - first[g_top]
    g_top, r_top = g_top[rank < n_top], r_top[rank < n_top]
    want = g_top * (2 * n) + r_top
    # Only the entries of those (group, response) keys are sorted: a small share of all stored
    # entries, and their order within a key is the same as in a sort of all of them.
    g_of = groups.assignment[feats]
    key = g_of * (2 * n) + rows
    keep = (g_of >= 0) & np.isin(key, want)
    key, feats, vals, pos, tok = (a[keep] for a in (key, feats, vals, pos, tok))
    order = np.lexsort((feats, -vals / scale[feats], key))
    key, pos, tok = key[order], pos[order], tok[order]
    # Their n_peaks strongest members' peaks.
    cand = np.searchsorted(key, want)[:, None] + np.arange(n_peaks)
    ok = cand < len(key)
    ok[ok] = key[cand[ok]] == np.broadcast_to(want[:, None], cand.shape)[ok]
    token_cache: dict[int, list[int]] = {}
    windows: list[list[list[tuple[int, ...]]]] = [[] for _ in range(n_groups)]
    for g, r, c, o in zip(g_top.tolist(), r_top.tolist(), cand, ok, strict=True):
        if r not in token_cache:
            token_cache[r] = list(tokenize(texts[r]))
        ids = token_cache[r]
        wins = []
        for k in c[o]:
            p = int(pos[k])
            if not 0 <= p < len(ids) or ids[p] != int(tok[k]):
                continue  # tokenised differently than at encode time: no trustworthy context
            start = max(0, p - window)
            wins.append((*ids[start : p + window + 1], p - start))
        windows[g].append(wins)
    vocab = sorted({t for per in windows for ws in per for w in ws for t in w[:-1]})
    text = dict(zip(vocab, decode(vocab), strict=True)) if vocab else {}
    return [_label(per, text, n_words) for per in windows]


@functools.lru_cache(maxsize=4096)  # a pure function of three small ints: bounded, never stale
def _starts(p: int, length: int, size: int) -> tuple[int, ...]:
    """Starts of the ``size``-grams of a window of ``length`` that contain index ``p``, centred first."""
    starts = range(max(0, p - size + 1), min(p, length - size) + 1)
    return tuple(sorted(starts, key=lambda s: (abs(2 * (p - s) - (size - 1)), s)))


def _label(per_response: list, text: dict[int, str], n_words: int) -> str:
    counts: Counter[tuple[int, ...]] = Counter()
    first: list[tuple[int, ...]] = []
    for wins in per_response:
        grams: dict[tuple[int, ...], None] = {}  # ordered: longer first, centred on the peak first
        for w in wins:
            toks, p = w[:-1], w[-1]
            for size in (3, 2):
                for s in _starts(p, len(toks), size):
                    grams.setdefault(toks[s : s + size], None)
        for gram in sorted(grams, key=len, reverse=True):
            if gram not in counts:
                first.append(gram)
            counts[gram] += 1
    chosen: list[str] = []
    rank = {g: j for j, g in enumerate(first)}
    for gram in sorted(counts, key=lambda g: (-counts[g], -len(g), rank[g])):
        if counts[gram] < 2 or len(chosen) == n_words:
            break
        s = _show("".join(text[t] for t in gram))
        if s and not any(s in c or c in s for c in chosen):
            chosen.append(s)
    if chosen:
        return " · ".join(chosen)
    for wins in per_response:
        for w in wins:
            s = _show("".join(text[t] for t in w[:-1]))
            if s:
                return s
    return "(no context)"


def _show(s: str) -> str:
    return " ".join(s.replace("\n", " ⏎ ").split())


# ---------------------------------------------------------------------- explained by
@dataclass(frozen=True)
class ControlledEffect:
    """The intercept of the model in the module docstring, for one or more targets (arrays)."""

    effect: np.ndarray
    stderr: np.ndarray
    p: np.ndarray
    d_z_controlled: np.ndarray
    dof: int


def ols_intercept(y: Any, covariates: np.ndarray | None) -> ControlledEffect:
    """OLS of each column of ``y`` (n × m, or n) on an intercept and ``covariates`` (n × p).

    Returns the intercept, its standard error, two-sided p and intercept/σ̂ per column.
    Covariates with no variance are dropped; X is pseudo-inverted (SVD), which equals
    ``numpy.linalg.lstsq`` and (XᵀX)⁻¹ for a full-rank design.
    """
    y2 = y.toarray() if sp.issparse(y) else np.asarray(y, dtype=np.float64)
    y2 = y2.reshape(len(y2), -1).astype(np.float64)
    n = y2.shape[0]
    cov = np.zeros((n, 0)) if covariates is None else np.asarray(covariates, dtype=np.float64)
    cov = cov.reshape(n, -1)
    cov = cov[:, cov.std(axis=0) > 0] if cov.shape[1] else cov
    x = np.column_stack([np.ones(n), cov])
    # One SVD per design (x⁺ = the least-squares solution operator), applied to every column.
    pinv = np.linalg.pinv(x)
    beta = pinv @ y2
    resid = y2 - x @ beta
    rank = int(np.linalg.matrix_rank(x))
    dof = n - rank
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = (
            np.sqrt(np.einsum("ij,ij->j", resid, resid) / dof) if dof > 0 else np.full(y2.shape[1], np.nan)
        )
        c00 = float(pinv[0] @ pinv[0])  # [(XᵀX)⁺]₀₀ = [X⁺ X⁺ᵀ]₀₀
        se = sigma * np.sqrt(c00)
        t = beta[0] / se
        p = 2 * special.stdtr(dof, -np.abs(t)) if dof > 0 else np.full(y2.shape[1], np.nan)
        dz = np.where(sigma > 0, beta[0] / sigma, np.nan)
    return ControlledEffect(beta[0], se, p, dz, dof)


def strongest(d_z: np.ndarray, k: int, exclude: Sequence[int] = ()) -> list[int]:
    """Indices of the ``k`` largest finite |d_z| not in ``exclude`` (ties: lower index first)."""
    d = np.abs(np.asarray(d_z, dtype=np.float64))
    idx = np.flatnonzero(np.isfinite(d))
    idx = idx[np.lexsort((idx, -d[idx]))]
    skip = set(int(e) for e in exclude)
    return [int(i) for i in idx if int(i) not in skip][:k]


def controlled_effects(
    delta: Any, d_z: np.ndarray, dlen: np.ndarray | None, *, k: int = N_CONTROL_GROUPS
) -> tuple[ControlledEffect, list[list[int]]]:
    """The explained-by model for every column of ``delta`` (pairs × groups) against the others.

    Returns the effects (arrays over groups) and, per group, the groups it was controlled for.
    Groups outside the strongest ``k`` share one design, so this is one least-squares solve
    plus one per strong group.
    """
    delta = sp.csc_matrix(delta, dtype=np.float64)
    n, g = delta.shape
    base = [] if dlen is None else [np.asarray(dlen, dtype=np.float64).reshape(n, 1)]
    top = strongest(d_z, k + 1)
    controls = [[c for c in top if c != j][:k] for j in range(g)]
    out = {f: np.full(g, np.nan) for f in ("effect", "stderr", "p", "d_z_controlled")}
    dof = n
    designs: dict[tuple[int, ...], list[int]] = {}
    for j, c in enumerate(controls):
        designs.setdefault(tuple(c), []).append(j)
    for c, cols in designs.items():
        x = np.hstack([*base, delta[:, list(c)].toarray()]) if (base or c) else None
        for start in range(0, len(cols), 256):
            chunk = cols[start : start + 256]
            fit = ols_intercept(delta[:, chunk], x)
            for f in out:
                out[f][chunk] = getattr(fit, f)
            dof = fit.dof
    return ControlledEffect(out["effect"], out["stderr"], out["p"], out["d_z_controlled"], dof), controls
