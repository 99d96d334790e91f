"""The units an agreement row is computed over: single features, or feature clusters (the paper's unit).

A :class:`Level` says which feature columns are read and how they become units. At the
**feature** level a unit is one column of the evaluated set F (:func:`~prefaudit.verify.channels.
evaluated_features`) and values are used as they are. At the **cluster** level a unit is one
co-firing cluster of SAE features (:func:`prefaudit.features.clusters.cofiring_clusters` with its
defaults, on the audit's pooled responses); its value in a response is a cluster score as in
:mod:`prefaudit.features.cluster_stats` but in the unit of the audit's prediction — the mean over
members of the member's value divided by its audit sd (sd of Δ over the pairs, the unit of
``predicted_z``) — so a cluster's shift, prediction or signal is the mean of
its members' standardised ones. Every cluster is evaluated; members whose audit sd is 0 are left
out of their cluster's mean (they carry no standardised value), and a cluster left empty is not a
unit.

Both levels are fixed from the audit alone (its pooled responses and sd), before any generation
or reward is read; the clusters are computed once per session and kept in
``session.stage_cache("verify")`` (cleared when the data or features change).

Example
-------
>>> import numpy as np
>>> lv = Level("cluster", cols=np.array([0, 1, 2]), sd=np.array([1.0, 2.0, 1.0]),
...            mean=np.array([[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]]), unit_ids=["cluster:0", "cluster:1"])
>>> lv.scores(np.array([[2.0, 4.0, 3.0]])).tolist()     # (2/1 + 4/2) / 2, 3/1
[[2.0, 3.0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: The levels every channel reports, in table order.
LEVELS: tuple[str, ...] = ("feature", "cluster")


@dataclass(frozen=True)
class Level:
    """How the columns ``cols`` of the audit's feature matrix become units.

    Attributes
    ----------
    name : str
        ``"feature"`` or ``"cluster"``.
    cols : numpy.ndarray[int]
        Feature columns read, in order.
    sd : numpy.ndarray
        The audit's sd of each of ``cols`` (used at the cluster level only).
    mean : numpy.ndarray or None
        ``(len(cols), n_units)``: column k averages the members of unit k (rows sum to 1 per
        member's share); ``None`` at the feature level (each column is its own unit).
    unit_ids : list of str
        Feature ids or ``cluster:<k>``.
    """

    name: str
    cols: np.ndarray
    sd: np.ndarray
    mean: np.ndarray | None
    unit_ids: list[str]

    @property
    def n_units(self) -> int:
        return len(self.unit_ids)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Values of the units from raw values of ``cols`` (``(n, len(cols))`` → ``(n, n_units)``)."""
        x = np.asarray(x, dtype=np.float64)
        if self.mean is None:
            return x
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(self.sd > 0, x / np.where(self.sd > 0, self.sd, 1.0), 0.0)
        return z @ self.mean

    def from_z(self, z: np.ndarray) -> np.ndarray:
        """Units from values already standardised by the audit's sd (the generation channel's z)."""
        z = np.asarray(z, dtype=np.float64)
        return z if self.mean is None else z @ self.mean


def feature_level(session: Any, cols: np.ndarray) -> Level:
    """Each evaluated feature is its own unit (the single-feature rows, computed as before)."""
    cols = np.asarray(cols, dtype=np.int64)
    fids = session.feature_ids
    return Level("feature", cols, session.matrix.sd[cols], None, [fids[j] for j in cols])


def audit_clusters(session: Any) -> Any:
    """The co-firing clusters of the audit's SAE features (cached per session; ``None`` without an SAE).

    Computed from the audit's pooled chosen and rejected responses with the clustering's own
    defaults and seed 0 — nothing read from a run.
    """
    if not session.uses_sae:
        return None
    cache = session.stage_cache("verify")
    if "clusters" not in cache:
        from ..features.clusters import cofiring_clusters

        if session.encoded is None:
            session.encode(progress=False)
        enc = session.encoded
        cache["clusters"] = cofiring_clusters(enc.chosen.values, enc.rejected.values, seed=0)
    return cache["clusters"]


def cluster_level(session: Any) -> Level | None:
    """Every co-firing cluster of the audit as a unit (``None`` without an SAE or without clusters)."""
    from ..features.clusters import cluster_id

    clusters = audit_clusters(session)
    if clusters is None or not clusters.n_clusters:
        return None
    sd_all = session.matrix.sd
    kept = [(k, m[sd_all[m] > 0]) for k, m in enumerate(clusters.members)]
    kept = [(k, m) for k, m in kept if len(m)]
    if not kept:
        return None
    cols = np.unique(np.concatenate([m for _, m in kept]))
    where = {int(c): i for i, c in enumerate(cols)}
    mean = np.zeros((len(cols), len(kept)))
    for u, (_k, m) in enumerate(kept):
        mean[[where[int(c)] for c in m], u] = 1.0 / len(m)
    return Level("cluster", cols, sd_all[cols], mean, [cluster_id(k) for k, _ in kept])


def run_levels(session: Any, cols: np.ndarray) -> dict[str, Level]:
    """The levels a verification reports: ``feature`` always, ``cluster`` when the audit has clusters."""
    levels = {"feature": feature_level(session, cols)}
    clusters = cluster_level(session)
    if clusters is not None:
        levels["cluster"] = clusters
    return levels
