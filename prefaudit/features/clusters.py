"""Feature clusters: SAE features that fire together over the responses, found as graph communities.

SAE features come in families — one concept split over many latents — and the significant ones
barely co-activate *linearly* (median r 0.02 on the demo), so a correlation tree fragments them.
Following arXiv 2606.12360 (App. B), this module links features by how they **co-fire**
(active or not), keeps the strongest links and finds communities. Pure: sparse matrices in,
arrays out. Per-pair scores and statistics of the clusters are :mod:`.cluster_stats`.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> on = rng.random((300, 2)) < 0.3              # two hidden concepts, per response
>>> x = np.repeat(on, 6, axis=1) & (rng.random((300, 12)) < 0.9)
>>> c = cofiring_clusters(x[:150], x[150:])      # chosen, rejected: pairs × features
>>> [m.tolist() for m in c.members]
[[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]

What is linked, and how strongly
--------------------------------
**Activity**: the chosen and rejected responses are stacked (2n rows); a feature is *active* in
a response when its pooled value is > 0. At most ``max_rows`` (65,536) rows are used, evenly
spaced and so deterministic; the co-occurrence count costs rows × (active per response)², and
over 65,536 responses a feature active in 0.1% of them is still seen ~65 times.

**Which features**: those active in at least ``min_active`` (10) of the rows used and in at most
``max_frac`` (95%) of them. Fewer than 10 co-firings decide nothing; a feature on in nearly every
response carries almost no co-firing information (its entropy bounds its MI) and would link
concepts that have nothing else in common. The others are *unclustered* with a reason
(:data:`REASONS`), never dropped silently.

**Association: mutual information** of the 2×2 active/inactive table of two features over the
rows, in nats, as in the paper. Why MI rather than NPMI: 2N·MI is the G statistic of the test of
independence, so ranking a feature's partners by MI ranks them by the evidence that they co-fire;
NPMI ignores how much evidence there is (two rare features sharing 2 of 1,280 responses score
near 1). Only **positive, significant** association links: the pair co-fires more often than
chance, and its G-test of independence (G = 2N·MI) has p < ``edge_p`` / (F − 1) — 0.001,
Bonferroni-corrected over the F − 1 partners a feature is tested with, so a feature without a real
partner gets a link with probability < 0.001. Why: MI is as high for two features that exclude
each other, which are not one concept; and at p < 0.001 uncorrected, 4,096 independent features
would get ~8,000 chance links that drag them into clusters. A feature with no such partner is
unclustered ("no_edge"). Computed by blocks of features: the counts are Bᵀ·B on the binary
matrix (a sparse product, or BLAS on a dense copy when ≥ 10% of B is active, as in max-pooled
codes), the MI only where a pair co-fires beyond chance (a one-log bound on G prunes first).

**Edges: each feature's ``k`` (10) strongest partners** (a k-nearest-neighbour graph, union of
both directions), decided before any planted-concept outcome was seen, because (1) a global
threshold — the paper's top 1% of pairs — left 1,185 of the demo's 3,063 significant features
outside every cluster, many of them without any edge (``FACTS.md``); (2) MI grows with a feature's entropy, so a global cut keeps the
frequent features' links and drops the rare ones', while a per-feature rank does not; (3) the
edges grow as k·F, so networkx's Louvain stays feasible at 65,536 features (the top 1% is
2·10⁷ edges there). k = 10 is the usual range of kNN community detection (scanpy: 15) and what
fits the time target at 65,536 features. The paper's rule can be added: ``top_fraction=0.01``
keeps the global top 1% of pairs *in addition*.

Communities
-----------
``networkx.community.louvain_communities(weight=MI, resolution=1, seed=0)`` on that graph (nodes
and edges inserted in sorted order, so the same input gives the same communities). Leiden would
guarantee connected communities but lives in GPL packages; instead each Louvain community is split
into its connected components. Communities of fewer than ``min_size`` (4, the paper's) features are
unclustered ("small_community"). Clusters are numbered by size (largest first), ties by their
smallest feature: ``cluster:0`` is the largest.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import special, stats

from prefaudit.errors import ConfigError

MIN_ACTIVE = 10
MAX_FRAC = 0.95
N_NEIGHBOURS = 10
EDGE_P = 0.001
MIN_SIZE = 4
MAX_ROWS = 65_536
RESOLUTION = 1.0
CLUSTER_PREFIX = "cluster:"

#: Why a feature is in no cluster, in the order they are checked.
REASONS: tuple[str, ...] = ("rare", "ubiquitous", "no_edge", "small_community")
_REASON_TEXT = {
    "rare": "active in fewer than min_active of the responses used",
    "ubiquitous": "active in more than max_frac of the responses used",
    "no_edge": "co-fires more often than chance (G-test p < edge_p / (F − 1)) with no other feature",
    "small_community": "its community has fewer than min_size features",
}
# Co-occurrence entries (before filtering) computed per block of features: bounds the memory of
# one Bᵀ·B block (≈ 12 bytes an entry plus the MI temporaries).
_BLOCK_ENTRIES = 1 << 23
# Bᵀ·B by BLAS on a dense copy of B when at least this share of it is active and it is at most
# this many cells (float32: 512 MB); else the sparse product. 0.1: where the two cost the same on
# random codes (4,096 features; at 5% sparse is 2× faster, at 25% dense 2.7×).
_DENSE_DENSITY = 0.1
_DENSE_CELLS = 1 << 27
_DENSE_BLOCK = 1 << 22  # cells of one dense block (its float64 temporaries: ~40 MB each)


def cluster_id(k: int) -> str:
    """``cluster:<k>``, the id of cluster k."""
    return f"{CLUSTER_PREFIX}{int(k)}"


@dataclass(frozen=True)
class CofiringClusters:
    """The result of :func:`cofiring_clusters`.

    Attributes
    ----------
    membership : numpy.ndarray[int64], shape (n_features,)
        Cluster index of every feature, −1 for the unclustered.
    members : list of numpy.ndarray[int64]
        Sorted feature indices of cluster k at position k (largest first).
    unclustered : dict of str to numpy.ndarray[int64]
        For each reason of :data:`REASONS`, the sorted features in no cluster for that reason.
    n_active : numpy.ndarray[int64], shape (n_features,)
        Responses (of the rows used) in which each feature is active.
    n_rows : int
        Responses the co-firing was counted on.
    n_edges : int
        Edges of the co-firing graph.
    params : dict
        The rule applied (``min_active``, ``max_frac``, ``k``, ``edge_p``, ``top_fraction``,
        ``min_size``, ``resolution``, ``seed``, ``max_rows``).
    """

    membership: np.ndarray
    members: list[np.ndarray]
    unclustered: dict[str, np.ndarray]
    n_active: np.ndarray
    n_rows: int
    n_edges: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return len(self.membership)

    @property
    def n_clusters(self) -> int:
        return len(self.members)

    @property
    def ids(self) -> list[str]:
        """``cluster:0 …`` in cluster order."""
        return [cluster_id(k) for k in range(self.n_clusters)]

    def unclustered_table(self) -> pd.DataFrame:
        """One row per unclustered feature: ``feature`` (index), ``reason``, ``n_active``, ``why``."""
        feats = [self.unclustered[r] for r in REASONS]
        f = np.concatenate(feats) if feats else np.zeros(0, np.int64)
        reason = np.repeat(np.array(REASONS, dtype=object), [len(x) for x in feats])
        order = np.argsort(f, kind="stable")
        return pd.DataFrame(
            {
                "feature": f[order],
                "reason": reason[order],
                "n_active": self.n_active[f[order]],
                "why": [_REASON_TEXT[r] for r in reason[order]],
            }
        )


def stacked_activity(chosen: Any, rejected: Any, *, max_rows: int = MAX_ROWS) -> sp.csr_matrix:
    """Binary (float32) responses × features: chosen rows, then rejected rows, value > 0 → 1.

    Above ``max_rows`` responses, ``max_rows`` evenly spaced ones (deterministic).
    """
    c, r = sp.csr_matrix(chosen), sp.csr_matrix(rejected)
    if c.shape != r.shape:
        raise ConfigError(f"chosen has shape {c.shape} but rejected has shape {r.shape}")
    x = sp.vstack([c, r], format="csr")
    if x.shape[0] > max_rows:
        x = x[np.unique(np.linspace(0, x.shape[0] - 1, max_rows).round().astype(np.int64))]
    x = x.astype(np.float32)
    x.sum_duplicates()
    x.data = (x.data > 0).astype(np.float32)
    x.eliminate_zeros()
    return x


def mutual_information(n11: np.ndarray, a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """MI (nats) of two binary variables from the count of both (``n11``), each (``a``, ``b``) and ``n``.

    MI = (Σ n_xy·ln n_xy − Σ n_x·ln n_x − Σ n_y·ln n_y + n·ln n) / n over the 2×2 table.
    """
    n11, a, b = (np.asarray(v, dtype=np.float64) for v in (n11, a, b))
    n10, n01 = a - n11, b - n11
    n00 = n - a - b + n11
    cells = special.xlogy(n11, n11) + special.xlogy(n10, n10) + special.xlogy(n01, n01)
    cells += special.xlogy(n00, n00)
    margins = special.xlogy(a, a) + special.xlogy(n - a, n - a) + special.xlogy(b, b)
    margins += special.xlogy(n - b, n - b)
    return np.maximum((cells - margins + n * math.log(n)) / n, 0.0)


def _top_per_row(rows: np.ndarray, cols: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """Positions of each row's ``k`` largest ``w`` (ties: smaller column first)."""
    order = np.lexsort((cols, -w, rows))
    r = rows[order]
    start = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    rank = np.arange(len(r)) - np.repeat(start, np.diff(np.r_[start, len(r)]))
    return order[rank < k]


def _keep_top(key: np.ndarray, w: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` largest ``w`` (ties: smaller key first)."""
    if len(w) <= m:
        return key, w
    order = np.lexsort((key, -w))[:m]
    return key[order], w[order]


def _candidates(n11: np.ndarray, a_row: np.ndarray, a_col: np.ndarray, n: int, g_min: float) -> np.ndarray:
    """Which counts can be links: co-firing ≥ 2 times, more often than chance, and a G that may pass.

    The bound on G needs one log, not eight: with n11 > E11 the cells 10 and 01 add O·ln(O/E) < 0,
    and cell 00 adds at most δ + δ²/E00 (ln x ≤ x − 1), δ = n11 − E11. Any shapes that broadcast.
    """
    e11 = a_row * a_col / n
    d = n11 - e11
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = 2 * (n11 * np.log(n11 / e11) + d + d * d / ((n - a_row) * (n - a_col) / n))
    # One shared response is never evidence, however rare the two features are.
    return (n11 >= 2) & (d > 0) & ~(bound <= g_min)


def _cooccurrences(
    active: sp.csr_matrix, a: np.ndarray, g_min: float
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The candidate entries of Bᵀ·B (co-firing counts), a block of rows at a time: (rows, cols, n11).

    ``a``: each column's count of active rows.
    """
    n, f = active.shape
    dtype = np.float32 if n < (1 << 24) else np.float64  # counts stay exact
    if active.nnz >= _DENSE_DENSITY * n * f and n * f <= _DENSE_CELLS:
        # Max-pooled SAE codes are dense (≈ 25% of the demo's latents are active in a response):
        # nearly every pair co-fires, so the sparse product and per-entry gathers cost more than
        # BLAS and array-wide filters on a dense block.
        dense = active.astype(dtype).toarray()
        step = max(1, _DENSE_BLOCK // f)
        for start in range(0, f, step):
            block = (dense[:, start : start + step].T @ dense).astype(np.float64)
            ok = _candidates(block, a[start : start + step, None], a[None, :], n, g_min)
            ok[np.arange(len(block)), start + np.arange(len(block))] = False
            rows, cols = np.nonzero(ok)
            yield rows.astype(np.int64) + start, cols.astype(np.int64), block[rows, cols]
        return
    at, act = sp.csr_matrix(active.T).astype(dtype), active.astype(dtype)  # features × rows
    # Work of row g of Bᵀ·B: the active features of the responses g is active in.
    work = at @ np.diff(active.indptr).astype(np.float64)
    n_blocks = math.ceil(work.sum() / _BLOCK_ENTRIES)
    bounds = np.searchsorted(np.cumsum(work), np.arange(1, n_blocks + 1) * float(_BLOCK_ENTRIES))
    start = 0
    for stop in np.unique(np.r_[np.minimum(bounds + 1, f), f]).astype(np.int64):
        if stop <= start:
            continue
        block = at[start:stop] @ act
        keep = np.flatnonzero(block.data >= 2)  # the cheapest filter first, before any gather
        rows = (np.searchsorted(block.indptr, keep, side="right") - 1 + start).astype(np.int64)
        cols, n11 = block.indices[keep].astype(np.int64), block.data[keep].astype(np.float64)
        ok = _candidates(n11, a[rows], a[cols], n, g_min) & (rows != cols)
        yield rows[ok], cols[ok], n11[ok]
        start = stop


def cofiring_edges(
    active: sp.csr_matrix,
    *,
    k: int = N_NEIGHBOURS,
    edge_p: float = EDGE_P,
    top_fraction: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges ``(u, v, mi)`` with u < v over the columns of a binary ``active`` (rows × features).

    An edge joins two features when one is among the other's ``k`` partners of largest MI, or
    (``top_fraction`` > 0) the pair is in the global top ``top_fraction`` of all pairs by MI; only
    pairs that co-fire more often than chance with G-test p < ``edge_p`` / (F − 1) are candidates.
    Sorted by (u, v).
    """
    n, f = active.shape
    a = np.diff(active.tocsc().indptr).astype(np.float64)
    g_min = float(stats.chi2.isf(edge_p / max(f - 1, 1), 1))
    m_global = math.ceil(top_fraction * f * (f - 1) / 2) if top_fraction > 0 else 0
    knn_key: list[np.ndarray] = []
    knn_w: list[np.ndarray] = []
    pool_key, pool_w = np.zeros(0, np.int64), np.zeros(0)
    for rows, cols, n11 in _cooccurrences(active, a, g_min):
        mi = mutual_information(n11, a[rows], a[cols], n)
        keep = 2 * n * mi > g_min
        rows, cols, mi = rows[keep], cols[keep], mi[keep]
        top = _top_per_row(rows, cols, mi, k) if k > 0 else np.zeros(0, np.int64)
        lo, hi = np.minimum(rows[top], cols[top]), np.maximum(rows[top], cols[top])
        knn_key.append(lo * f + hi)
        knn_w.append(mi[top])
        if m_global:
            upper = rows < cols  # each pair once
            pool_key, pool_w = _keep_top(
                np.r_[pool_key, rows[upper] * f + cols[upper]], np.r_[pool_w, mi[upper]], m_global
            )
    keys = np.concatenate([*knn_key, pool_key]).astype(np.int64)
    w = np.concatenate([*knn_w, pool_w])
    keys, first = np.unique(keys, return_index=True)  # the same pair's MI is the same either way
    return keys // f, keys % f, w[first]


def _communities(
    u: np.ndarray, v: np.ndarray, w: np.ndarray, resolution: float, seed: int
) -> list[np.ndarray]:
    """Louvain communities of the graph, each split into its connected components."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(np.unique(np.r_[u, v]).tolist())
    g.add_weighted_edges_from(zip(u.tolist(), v.tolist(), w.tolist(), strict=True))
    out = []
    for community in nx.community.louvain_communities(g, weight="weight", resolution=resolution, seed=seed):
        out += [
            np.array(sorted(part), dtype=np.int64) for part in nx.connected_components(g.subgraph(community))
        ]
    return out


def cofiring_clusters(
    chosen: Any,
    rejected: Any,
    *,
    min_active: int = MIN_ACTIVE,
    max_frac: float = MAX_FRAC,
    k: int = N_NEIGHBOURS,
    edge_p: float = EDGE_P,
    top_fraction: float = 0.0,
    min_size: int = MIN_SIZE,
    resolution: float = RESOLUTION,
    seed: int = 0,
    max_rows: int = MAX_ROWS,
) -> CofiringClusters:
    """Cluster the features of pooled ``chosen`` / ``rejected`` (pairs × features) by co-firing.

    The method and every default are in the module docstring. Any sparse or dense form; values
    > 0 count as active. Deterministic: the same input and ``seed`` give the same clusters.
    """
    if k < 0 or min_active < 1 or min_size < 1 or max_rows < 2:
        raise ConfigError("k must be ≥ 0 and min_active, min_size ≥ 1, max_rows ≥ 2")
    if not 0 < max_frac <= 1 or not 0 <= top_fraction <= 1 or not 0 < edge_p <= 1:
        raise ConfigError(
            "max_frac and edge_p must be in (0, 1] and top_fraction in [0, 1]; "
            f"got {max_frac}, {edge_p}, {top_fraction}"
        )
    if k == 0 and top_fraction == 0:
        raise ConfigError("no edge rule: k = 0 and top_fraction = 0")
    active = stacked_activity(chosen, rejected, max_rows=max_rows)
    n_rows, n_features = active.shape
    n_active = np.bincount(active.indices, minlength=n_features).astype(np.int64)
    rare = n_active < min_active
    ubiquitous = ~rare & (n_active > max_frac * n_rows)
    eligible = np.flatnonzero(~rare & ~ubiquitous)
    u, v, w = cofiring_edges(active[:, eligible], k=k, edge_p=edge_p, top_fraction=top_fraction)
    linked = np.zeros(len(eligible), dtype=bool)
    linked[u], linked[v] = True, True
    parts = _communities(u, v, w, resolution, seed) if len(u) else []
    parts = [eligible[p] for p in parts]
    small = [p for p in parts if len(p) < min_size]
    members = sorted((p for p in parts if len(p) >= min_size), key=lambda m: (-len(m), int(m[0])))
    membership = np.full(n_features, -1, dtype=np.int64)
    for j, m in enumerate(members):
        membership[m] = j
    unclustered = {
        "rare": np.flatnonzero(rare),
        "ubiquitous": np.flatnonzero(ubiquitous),
        "no_edge": eligible[~linked],
        "small_community": np.sort(np.concatenate(small)) if small else np.zeros(0, np.int64),
    }
    params = dict(
        min_active=min_active,
        max_frac=max_frac,
        k=k,
        edge_p=edge_p,
        top_fraction=top_fraction,
        min_size=min_size,
        resolution=resolution,
        seed=seed,
        max_rows=max_rows,
    )
    return CofiringClusters(membership, members, unclustered, n_active, n_rows, len(u), params)
