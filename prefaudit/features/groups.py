"""Feature groups: what the audit's groups are scored, read and controlled with.

The groups of ``session.groups()`` are the co-firing clusters of :mod:`.clusters` (why:
``docs/CONCEPTS.md``), scored and tested by :mod:`.cluster_stats`. This module holds what they
share with any grouping of features: the **score** (``response_scale``, ``score_weights``,
``group_scores``), the **aligned concepts**, the two **token readers** the labels are read
with (:func:`peak_reader`: no model pass; :func:`model_reader`: the model and SAE) and the
**explained-by** model; and the average-linkage grouping that came before the clusters
(:func:`cluster_features`), kept as the baseline ``benchmarks/bench_clusters.py`` times them
against. Pure: arrays in, arrays out; the tokenizer and model come in as callables.

The average-linkage baseline
----------------------------
Pearson correlation of the features' pooled values over the 2n responses (features active in at
least ``max(10, ceil(1% of the responses))`` of at most ``MAX_CORR_ROWS`` evenly spaced rows),
average linkage on 1 − r cut at ``MAX_DISTANCE`` = 0.5 (``scipy.cluster.hierarchy``). On the
demo it left 2,394 groups, 1,694 of them needed for 90% of the significant features: the
significant features barely co-activate linearly, which is why the clusters replaced it.

Group score, aligned concepts
-----------------------------
* **Score** of group g in a response: the mean over its members of the pooled value divided by
  the member's sd over all responses (ddof = 1). Standardising first stops one loud latent from
  being the group; the mean keeps a group's score in the units of one standardised member. Not
  centred, so it stays sparse (no member active → 0); Δ and correlations do not depend on it.
  The same coefficients cⱼᵍ = 1/(sdⱼ·|g|) turn a group weight into margins.
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

import math
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


def score_weights(groups: Any, scale: np.ndarray) -> sp.csc_matrix:
    """(features × groups) weights: 1/(sd_f · n_members) for each member f of group g.

    ``groups``: anything with ``members`` (feature indices per group) and ``n_features`` — a
    :class:`~prefaudit.features.clusters.CofiringClusters` or a :class:`FeatureGroups`.
    """
    members = list(groups.members)
    rows = np.concatenate(members) if members else np.zeros(0, np.int64)
    cols = np.repeat(np.arange(len(members)), [len(m) for m in members])
    sizes = np.array([len(m) for m in members], dtype=np.float64)
    with np.errstate(divide="ignore"):
        w = np.where(scale[rows] > 0, 1.0 / (scale[rows] * sizes[cols]), 0.0)
    return sp.csc_matrix((w, (rows, cols)), shape=(groups.n_features, len(members)))


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


def peak_reader(
    sides: Sequence[Any],
    texts: Sequence[str],
    tokenize: Callable[[str], Sequence[int]],
    decode: Callable[[Sequence[int]], list[str]],
) -> Callable[[Sequence[int], Sequence[int]], list[tuple[list[str], np.ndarray]]]:
    """A :class:`~prefaudit.features.labels.TokenReader` from what the encode stored: no model pass.

    For a response row and a feature active in it, the activation is the feature's pooled value
    at its stored peak token (``top_pos``) and 0 at every other token; with max pooling that is
    exact at the peak. A cluster's weighted sum then peaks where its strongest (standardised)
    member peaks, or where several members peak on one token. A stored peak whose token id
    differs from the re-tokenised response (tokenised differently than at encode time) is not
    used, so such a row reads as unread rather than as a wrong context.

    ``sides``: the chosen and rejected :class:`~prefaudit.features.encoded.SidePooled`;
    ``texts``: the 2n responses (chosen, then rejected); ``tokenize`` must tokenise a response as
    the encode did (``Backbone.response_ids(text)[0]``) and ``decode`` give one string per id.
    """
    n = sides[0].values.shape[0]
    token_ids: dict[int, list[int]] = {}

    def ids_of(row: int) -> list[int]:
        if row not in token_ids:
            token_ids[row] = [int(t) for t in tokenize(texts[row])]
        return token_ids[row]

    def read(rows: Sequence[int], features: Sequence[int]) -> list[tuple[list[str], np.ndarray]]:
        feats = np.asarray(list(features), dtype=np.int64)
        order = np.argsort(feats, kind="stable")
        out = []
        for row in rows:
            row = int(row)
            toks = ids_of(row)
            acts = np.zeros((len(toks), len(feats)))
            if len(feats):
                side, i = sides[row // n], row % n
                lo, hi = side.values.indptr[i], side.values.indptr[i + 1]
                cols = side.values.indices[lo:hi]
                at = np.searchsorted(feats[order], cols)
                hit = np.flatnonzero(
                    (at < len(feats)) & (feats[order][np.minimum(at, len(feats) - 1)] == cols)
                )
                pos, tok = side.top_pos[lo:hi][hit], side.top_token[lo:hi][hit]
                ok = (pos >= 0) & (pos < len(toks))
                ok[ok] = np.asarray(toks, dtype=np.int64)[pos[ok]] == tok[ok]
                acts[pos[ok], order[at[hit][ok]]] = side.values.data[lo:hi][hit][ok]
            out.append((decode(toks) if toks else [], acts))
        return out

    return read


def model_reader(
    backbone: Any, sae: Any, messages: Callable[[int], Any], texts: Sequence[str], *, batch: int = 8
) -> Callable[[Sequence[int], Sequence[int]], list[tuple[list[str], np.ndarray]]]:
    """A :class:`~prefaudit.features.labels.TokenReader` that reads responses through the model and SAE.

    Each needed pair is read once (its prompt, then both responses, as the encode and
    :func:`prefaudit.features.encode.token_activations` read it), ``batch`` pairs per forward
    pass; the per-token codes of the asked features are kept. ``messages(i)`` gives pair i's
    prompt messages; ``texts`` the 2n responses (chosen, then rejected). Rows with
    ``features=[]`` are only tokenised.
    """
    n = len(texts) // 2

    def read(rows: Sequence[int], features: Sequence[int]) -> list[tuple[list[str], np.ndarray]]:
        import torch

        rows = [int(r) for r in rows]
        ids = {r: backbone.response_ids(texts[r])[0] for r in rows}
        if not len(features):
            return [
                (backbone.decode_tokens(ids[r]) if ids[r] else [], np.zeros((len(ids[r]), 0))) for r in rows
            ]
        cols = torch.as_tensor(list(features), dtype=torch.long)
        pairs = sorted({r % n for r in rows})
        acts: dict[int, np.ndarray] = {}
        for start in range(0, len(pairs), batch):
            part = pairs[start : start + batch]
            side_ids = [[backbone.response_ids(texts[i + s * n])[0] for s in (0, 1)] for i in part]
            prompts = [backbone.prompt_ids(messages(i)) for i in part]
            # read_pairs needs non-empty sequences; an empty response reads a stand-in, dropped below.
            h, _ = backbone.read_pairs(
                prompts, [(c or [0], r or [0]) for c, r in side_ids], share_prompt=True
            )
            with torch.no_grad():
                for k, i in enumerate(part):
                    for s in (0, 1):
                        m = len(side_ids[k][s])
                        codes = sae.encode(h[2 * k + s, :m].float()) if m else None
                        acts[i + s * n] = (
                            codes[:, cols].float().cpu().numpy() if m else np.zeros((0, len(features)))
                        )
        return [(backbone.decode_tokens(ids[r]) if ids[r] else [], acts[r]) for r in rows]

    return read


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
