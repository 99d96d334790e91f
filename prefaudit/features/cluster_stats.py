"""Per-pair scores of feature clusters and their statistics: the paper's beside ours.

The clusters come from :func:`prefaudit.features.clusters.cofiring_clusters`; this module scores
them per response and tests chosen against rejected, with the paired statistics of
:func:`prefaudit.stats.paired_tests` (BH across clusters). Pure: sparse matrices in, a table out.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> on = rng.random((400, 2)) < [0.45, 0.3]          # concept 0 is planted more often on chosen
>>> on[200:, 0] = rng.random(200) < 0.15
>>> x = (np.repeat(on, 6, axis=1) & (rng.random((400, 12)) < 0.9)) * rng.exponential(size=(400, 12))
>>> audit = audit_clusters(x[:200], x[200:], n_boot=200)
>>> audit.table[["cluster", "n_members", "badge"]].values.tolist()
[['cluster:0', 6, 'chosen'], ['cluster:1', 6, 'neither']]

The paper's score, interval, badge and split half
--------------------------------------------------
A cluster **fires** in a response when its continuous score (below) is above max(0, q₉₀), q₉₀ its
90th percentile over the 2n responses (``fire_threshold``). For a cluster active in at most 10% of
the responses that is *any member active* (pooled value > 0); one active more often fires where it
is strongest — "the prompts that activate it strongly", as the paper's viewer says. Not "any
member" throughout: max-pooled codes have hundreds of active latents per response (≈ 25% on the
demo), so a cluster of a few dozen members is active in every response — with that rule 14 of the
demo's 15 clusters fired in every response, scored 0 in every pair and were badged "both" (tried
once, before this rule; ``fire_quantile=0`` gives it back). Per pair the score is +1 when the
cluster fires in chosen only, −1 in rejected only, 0 otherwise (``fire_score`` is the mean over
all pairs). With n_c pairs firing in chosen only, n_r in rejected only and n_b on both sides, the
**95% interval** of the mean score is exact-binomial, given the n_c + n_r discordant pairs:
π = n_c / (n_c + n_r) has the Clopper–Pearson interval [π_lo, π_hi] and the score's is
(n_c + n_r)/n · (2π_lo − 1, 2π_hi − 1) — it excludes 0 exactly when π's interval excludes ½. The **badge** (first rule that holds):

* ``chosen`` — the interval lies above 0; ``rejected`` — below 0;
* ``both`` — it fires on both sides in most of the pairs where it fires at all: the
  Clopper–Pearson lower bound of n_b / (n_b + n_c + n_r) is above ½ (a concept the prompts call
  for, whichever answer);
* ``neither`` — no reliable lean and no reliable presence on both sides.

The badge is per cluster at 95%, uncorrected, as in the paper; under a null about one cluster in
twenty leans by chance (more where clusters ride one signal: 3 of 15 in the demo's null), which is
why ``q_fire`` (the exact sign test on the discordant pairs,
``paired_tests(test="sign")``, BH across clusters) says which leans are significant.
``split_half`` is the paper's ✓/✗: the pairs are split once at random (seeded) and the mean scores
of the two halves have the same non-zero sign.

Our score
---------
Firing throws away how strongly a cluster is active, so beside it the **continuous score**: the
mean over members of the pooled value divided by the member's sd over all 2n responses (as
:mod:`prefaudit.features.groups` scores a group), Δ = chosen − rejected, tested with
:func:`~prefaudit.stats.paired_tests` (Wilcoxon, d_z, bootstrap CI, BH ``q`` across clusters,
split-half agreement over 20 splits, length-controlled effect) and the explained-by model of
:func:`prefaudit.features.groups.controlled_effects` (controlled for length and the 5 other
clusters of largest |d_z|; ``q_ctrl`` BH across clusters). A cluster is
*significant* when ``q`` < 0.05.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import special

from prefaudit.features import groups as fg
from prefaudit.features.clusters import CofiringClusters, cluster_id, cofiring_clusters
from prefaudit.stats import benjamini_hochberg, paired_tests
from prefaudit.stats.inputs import length_difference

BADGES: tuple[str, ...] = ("chosen", "rejected", "both", "neither")
FIRE_QUANTILE = 0.9

#: Columns of :attr:`ClusterAudit.table`, in order.
CLUSTER_COLUMNS: tuple[str, ...] = (
    "cluster",
    "n_members",
    "members",
    "fire_threshold",
    "n_chosen_only",
    "n_rejected_only",
    "n_both",
    "n_neither",
    "fire_score",
    "fire_ci_low",
    "fire_ci_high",
    "badge",
    "p_fire",
    "q_fire",
    "split_half",
    "delta_mean",
    "d_z",
    "ci_low",
    "ci_high",
    "p",
    "q",
    "split_half_agree",
    "delta_len_ctrl",
    "p_len_ctrl",
    "direction",
    "effect_ctrl",
    "se_ctrl",
    "p_ctrl",
    "q_ctrl",
    "d_z_controlled",
    "controlled_for",
)


@dataclass(frozen=True)
class ClusterAudit:
    """Clusters of SAE features, their per-pair scores and one table row per cluster.

    Attributes
    ----------
    clusters : CofiringClusters
        Membership, members and the unclustered features with their reasons.
    table : pandas.DataFrame
        Columns :data:`CLUSTER_COLUMNS`, row k is ``cluster:k`` (see the module docstring).
    fire_chosen, fire_rejected : scipy.sparse.csr_matrix, shape (n_pairs, n_clusters)
        1 where the cluster fires in that response.
    chosen_scores, rejected_scores : scipy.sparse.csr_matrix, shape (n_pairs, n_clusters)
        The continuous cluster scores.
    """

    clusters: CofiringClusters
    table: pd.DataFrame
    fire_chosen: sp.csr_matrix
    fire_rejected: sp.csr_matrix
    chosen_scores: sp.csr_matrix
    rejected_scores: sp.csr_matrix

    @property
    def membership(self) -> np.ndarray:
        """Cluster index of every feature, −1 for the unclustered."""
        return self.clusters.membership

    @property
    def unclustered(self) -> dict[str, np.ndarray]:
        """Reason → the features in no cluster for that reason."""
        return self.clusters.unclustered

    def fire_score(self) -> np.ndarray:
        """The paper's per-pair score, dense ``(n_pairs, n_clusters)`` int8 in {−1, 0, +1}."""
        return (self.fire_chosen - self.fire_rejected).toarray().astype(np.int8)


def membership_matrix(clusters: CofiringClusters, weights: np.ndarray | None = None) -> sp.csc_matrix:
    """(features × clusters): 1 (or ``weights[f]``) for each member f of cluster k."""
    rows = np.concatenate(clusters.members) if clusters.members else np.zeros(0, np.int64)
    cols = np.repeat(np.arange(clusters.n_clusters), [len(m) for m in clusters.members])
    w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=np.float64)[rows]
    return sp.csc_matrix((w, (rows, cols)), shape=(clusters.n_features, clusters.n_clusters))


def _merged_at(v: np.ndarray, neg: int, zeros: int, i: int) -> float:
    """The i-th value of a sorted column stored as ``v`` (its non-zeros): negatives, zeros, positives."""
    return float(v[i]) if i < neg else 0.0 if i < neg + zeros else float(v[i - zeros])


def column_quantile(m: Any, q: float) -> np.ndarray:
    """numpy's linear ``q``-quantile of every column of a sparse matrix, its zeros included."""
    m = sp.csc_matrix(m)
    n = m.shape[0]
    h = q * (n - 1)
    lo, frac = int(np.floor(h)), h - np.floor(h)
    out = np.zeros(m.shape[1])
    for j in range(m.shape[1]):
        v = np.sort(m.data[m.indptr[j] : m.indptr[j + 1]])
        neg, zeros = int(np.searchsorted(v, 0.0)), n - len(v)
        x0, x1 = (_merged_at(v, neg, zeros, i) for i in (lo, min(lo + 1, n - 1)))
        out[j] = x0 + frac * (x1 - x0)
    return out


def fire_matrices(
    chosen_scores: Any, rejected_scores: Any, *, quantile: float = FIRE_QUANTILE
) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """Where each cluster fires, (n_pairs × n_clusters) 0/1 for chosen and rejected, and the thresholds.

    A cluster fires where its score is above max(0, its ``quantile`` over the 2n responses).
    """
    sc, sr = sp.csr_matrix(chosen_scores), sp.csr_matrix(rejected_scores)
    threshold = (
        np.maximum(column_quantile(sp.vstack([sc, sr]), quantile), 0.0)
        if quantile > 0
        else np.zeros(sc.shape[1])
    )
    out = []
    for x in (sc, sr):
        cols = x.indices
        on = (x.data > threshold[cols]).astype(np.float64)
        hits = sp.csr_matrix((on, cols.copy(), x.indptr.copy()), shape=x.shape)  # not shared: pruned below
        hits.eliminate_zeros()
        out.append(hits)
    return out[0], out[1], threshold


def score_matrices(
    chosen: Any, rejected: Any, clusters: CofiringClusters
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Continuous scores (n_pairs × n_clusters): mean of the members' values / their sd over responses."""
    scale = fg.response_scale(chosen, rejected)
    sizes = np.zeros(clusters.n_features)
    for m in clusters.members:
        sizes[m] = len(m)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where((scale > 0) & (sizes > 0), 1.0 / (scale * sizes), 0.0)
    weights = membership_matrix(clusters, w)
    return tuple(sp.csr_matrix(sp.csr_matrix(x, dtype=np.float64) @ weights) for x in (chosen, rejected))


def clopper_pearson(k: np.ndarray, n: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper–Pearson) 1 − alpha interval of a binomial proportion k/n; n = 0 gives [0, 1]."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, special.betaincinv(k, n - k + 1, alpha / 2), 0.0)
        hi = np.where(k < n, special.betaincinv(k + 1, n - k, 1 - alpha / 2), 1.0)
    return np.nan_to_num(lo, nan=0.0), np.nan_to_num(hi, nan=1.0)


def fire_statistics(fire_chosen: Any, fire_rejected: Any, *, alpha: float = 0.05) -> pd.DataFrame:
    """Counts, mean score, its exact interval and the badge per cluster (rules in the module docstring)."""
    fc, fr = sp.csc_matrix(fire_chosen), sp.csc_matrix(fire_rejected)
    n = fc.shape[0]
    fired_c, fired_r = np.diff(fc.indptr), np.diff(fr.indptr)
    n_both = np.diff(sp.csc_matrix(fc.multiply(fr)).indptr)
    n_c, n_r = fired_c - n_both, fired_r - n_both
    disc = n_c + n_r
    lo, hi = clopper_pearson(n_c, disc, alpha)
    both_lo, _ = clopper_pearson(n_both, n_both + disc, alpha)
    ci_low, ci_high = disc / n * (2 * lo - 1), disc / n * (2 * hi - 1)
    badge = np.where(
        ci_low > 0, "chosen", np.where(ci_high < 0, "rejected", np.where(both_lo > 0.5, "both", "neither"))
    )
    return pd.DataFrame(
        {
            "n_chosen_only": n_c.astype(np.int64),
            "n_rejected_only": n_r.astype(np.int64),
            "n_both": n_both.astype(np.int64),
            "n_neither": (n - n_c - n_r - n_both).astype(np.int64),
            "fire_score": (n_c - n_r) / n,
            "fire_ci_low": ci_low,
            "fire_ci_high": ci_high,
            "badge": badge.tolist(),
        }
    )


def cluster_table(
    chosen: Any,
    rejected: Any,
    clusters: CofiringClusters,
    *,
    lengths: Any = None,
    n_boot: int = 1000,
    n_splits: int = 20,
    seed: int = 0,
    alpha: float = 0.05,
    controls: int = fg.N_CONTROL_GROUPS,
    fire_quantile: float = FIRE_QUANTILE,
) -> ClusterAudit:
    """Score and test every cluster of ``clusters`` on pooled ``chosen`` / ``rejected`` (pairs × features).

    ``lengths``: ``(len_chosen, len_rejected)`` or Δ_len, for the length control and the
    explained-by model (``controls`` other clusters; 0 skips the model); ``fire_quantile``: where a
    cluster fires (0: wherever a member is active). ``n_boot``, ``n_splits``,
    ``seed`` and ``alpha`` go to :func:`~prefaudit.stats.paired_tests`.
    """
    names = clusters.ids
    sc, sr = score_matrices(chosen, rejected, clusters)
    fc, fr, threshold = fire_matrices(sc, sr, quantile=fire_quantile)
    n_pairs = fc.shape[0]
    fire = fire_statistics(fc, fr, alpha=alpha)
    paper = paired_tests(fc, fr, test="sign", n_boot=0, n_splits=1, seed=seed, names=names, source="cluster")
    ours = paired_tests(
        sc,
        sr,
        lengths=lengths,
        n_boot=n_boot,
        n_splits=n_splits,
        seed=seed,
        names=names,
        source="cluster",
        alpha=alpha,
    )
    table = pd.DataFrame(
        {
            "cluster": names,
            "n_members": [len(m) for m in clusters.members],
            "members": [m.tolist() for m in clusters.members],
            "fire_threshold": threshold,
        }
    )
    table = pd.concat([table, fire], axis=1)
    table["p_fire"], table["q_fire"] = paper["p"].to_numpy(), paper["q"].to_numpy()
    table["split_half"] = paper["split_half_agree"].to_numpy() == 1.0
    for col in ("delta_mean", "d_z", "ci_low", "ci_high", "p", "q", "split_half_agree"):
        table[col] = ours[col].to_numpy()
    for col in ("delta_len_ctrl", "p_len_ctrl", "direction"):
        table[col] = ours[col].to_numpy()
    k = clusters.n_clusters
    nan = np.full(k, np.nan)
    effect, se, p_ctrl, dz_ctrl, controlled_for = nan, nan, nan, nan, [[] for _ in range(k)]
    if controls > 0 and k > 0:
        dlen = length_difference(lengths, n_pairs)
        fit, which = fg.controlled_effects(sc - sr, table["d_z"].to_numpy(), dlen, k=int(controls))
        effect, se, p_ctrl, dz_ctrl = fit.effect, fit.stderr, fit.p, fit.d_z_controlled
        controlled_for = [[cluster_id(j) for j in c] for c in which]
    table["effect_ctrl"], table["se_ctrl"], table["p_ctrl"] = effect, se, p_ctrl
    table["q_ctrl"] = benjamini_hochberg(np.asarray(p_ctrl, dtype=np.float64))
    table["d_z_controlled"], table["controlled_for"] = dz_ctrl, controlled_for
    return ClusterAudit(clusters, table[list(CLUSTER_COLUMNS)], fc, fr, sc, sr)


def audit_clusters(
    chosen: Any,
    rejected: Any,
    *,
    lengths: Any = None,
    n_boot: int = 1000,
    n_splits: int = 20,
    seed: int = 0,
    alpha: float = 0.05,
    controls: int = fg.N_CONTROL_GROUPS,
    fire_quantile: float = FIRE_QUANTILE,
    **cluster_options: Any,
) -> ClusterAudit:
    """:func:`~prefaudit.features.clusters.cofiring_clusters` then :func:`cluster_table`.

    ``cluster_options`` go to the clustering (``min_active``, ``max_frac``, ``k``, ``edge_p``,
    ``top_fraction``, ``min_size``, ``resolution``, ``max_rows``); ``seed`` seeds both.
    """
    clusters = cofiring_clusters(chosen, rejected, seed=seed, **cluster_options)
    return cluster_table(
        chosen,
        rejected,
        clusters,
        lengths=lengths,
        n_boot=n_boot,
        n_splits=n_splits,
        seed=seed,
        alpha=alpha,
        controls=controls,
        fire_quantile=fire_quantile,
    )
