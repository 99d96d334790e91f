"""Feature groups of an audit: ``session.groups()``, ``session.group_scores()``, ``session.explained_by()``.

Read-only queries, mixed into :class:`~prefaudit.audit.core.AuditCore` (which provides ``data``,
``encoded``, ``encode``, ``matrix``, ``lengths``, ``concepts``, ``concept_values``, ``backbone``,
``column`` and ``feature_id``). The method — co-activation clustering, group scores, labels,
aligned concepts and the explained-by regression — is :mod:`prefaudit.features.groups`.

Example
-------
>>> table = session.groups()                                    # doctest: +SKIP
>>> table.sort_values("d_z", key=abs, ascending=False).head()  # doctest: +SKIP
>>> session.explained_by(17)["d_z_controlled"]                 # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import ids
from ..errors import ConfigError
from ..features import groups as fg

#: Columns of ``session.groups()``, in order.
GROUP_COLUMNS: tuple[str, ...] = (
    "group",
    "label",
    "members",
    "n_members",
    "n_pairs",
    "delta_mean",
    "d_z",
    "p",
    "q",
    "ci_low",
    "ci_high",
    "split_half_agree",
    "delta_len_ctrl",
    "p_len_ctrl",
    "direction",
    "aligned",
    "effect_ctrl",
    "se_ctrl",
    "p_ctrl",
    "q_ctrl",
    "d_z_controlled",
    "controlled_for",
)


@dataclass
class _GroupState:
    """What ``groups()`` computed, kept on the core until the features change."""

    encoded: Any  # the EncodedFeatures it was computed from (a reference keeps identity checks sound)
    groups: fg.FeatureGroups
    chosen: sp.csr_matrix  # (n_pairs, n_groups) scores
    rejected: sp.csr_matrix
    table: pd.DataFrame


class GroupsMixin:
    """Groups of co-activating SAE features, tested chosen vs rejected like features."""

    data: Any
    encoded: Any
    _groups_cache: _GroupState | None = None

    def groups(self, *, refresh: bool = False) -> pd.DataFrame:
        """One row per feature group, columns :data:`GROUP_COLUMNS` (cached until features change).

        ``members`` are feature ids; ``d_z … p_len_ctrl`` are :func:`prefaudit.stats.paired_tests`
        of the group scores (Wilcoxon, n_boot = 1000, seed 0, length control, BH across groups);
        ``aligned`` holds the two text concepts whose values correlate most with the score over
        responses, as ``(concept id, r)``; ``effect_ctrl``, ``se_ctrl``, ``p_ctrl`` (``q_ctrl``: BH
        across groups), ``d_z_controlled`` and ``controlled_for`` (group ids) are the explained-by
        model of :mod:`prefaudit.features.groups`. ``attrs`` carries ``n_unclustered``,
        ``unclustered`` (feature ids in no group), ``min_active`` and ``max_distance``.
        """
        return self._group_state(refresh=refresh).table

    def group_scores(self, group: str | int) -> pd.DataFrame:
        """Per-pair score of one group: columns ``pair_id, chosen, rejected, delta``."""
        state = self._group_state()
        k = self._group_index(group, state)
        c = state.chosen[:, [k]].toarray().ravel()
        r = state.rejected[:, [k]].toarray().ravel()
        return pd.DataFrame(
            {"pair_id": self.data.df["pair_id"].to_numpy(), "chosen": c, "rejected": r, "delta": c - r}
        )

    def group_of(self, feature: int | str) -> str | None:
        """The id of the group an SAE feature belongs to (``None``: unclustered, or a concept)."""
        fid = self.feature_id(feature)
        if not ids.is_sae(fid):
            return None
        k = int(self._group_state().groups.assignment[ids.sae_index(fid)])
        return None if k < 0 else ids.group_id(k)

    def explained_by(self, feature: int | str, *, k: int = fg.N_CONTROL_GROUPS) -> dict[str, Any]:
        """The effect of a feature or group controlled for length and the ``k`` strongest other groups.

        Returns ``feature``, ``n_pairs``, ``delta_mean``, ``d_z`` (uncontrolled), ``effect``,
        ``stderr``, ``p``, ``d_z_controlled`` and ``controlled_for`` (group ids). The groups are
        those with the largest |d_z| in ``session.groups()``, never the feature's own group.
        """
        state = self._group_state()
        table = state.table
        delta_groups = state.chosen - state.rejected
        if isinstance(feature, str) and ids.is_group(feature):
            fid = ids.group_id(self._group_index(feature, state))
            own = ids.parse(fid)[1]
            y = delta_groups[:, [own]].toarray().ravel()
        else:
            fid = self.feature_id(feature)
            c, r = self.matrix.column(self.column(fid))
            y = c - r
            own = int(state.groups.assignment[ids.sae_index(fid)]) if ids.is_sae(fid) else -1
        controls = fg.strongest(table["d_z"].to_numpy(), int(k), exclude=[own])
        dlen = self._delta_len()
        parts = ([] if dlen is None else [dlen[:, None]]) + [delta_groups[:, controls].toarray()]
        fit = fg.ols_intercept(y, np.hstack(parts))
        sd = float(np.std(y, ddof=1)) if len(y) > 1 else float("nan")
        return {
            "feature": fid,
            "n_pairs": len(y),
            "delta_mean": float(np.mean(y)),
            "d_z": float(np.mean(y) / sd) if sd > 0 else float("nan"),
            "effect": float(fit.effect[0]),
            "stderr": float(fit.stderr[0]),
            "p": float(fit.p[0]),
            "d_z_controlled": float(fit.d_z_controlled[0]),
            "controlled_for": [ids.group_id(j) for j in controls],
        }

    # ------------------------------------------------------------------ internals
    def _group_index(self, group: str | int, state: _GroupState) -> int:
        if isinstance(group, (int, np.integer)) and not isinstance(group, bool):
            k = int(group)
        else:
            kind, k = ids.parse(str(group)) if ids.is_group(str(group)) else (None, -1)
            if kind != "group":
                raise ConfigError(f"{group!r} is not a group id (group:<k>).")
        if not 0 <= int(k) < state.groups.n_groups:
            raise ConfigError(
                f"Unknown group {group!r}: this audit has groups 0..{state.groups.n_groups - 1}."
            )
        return int(k)

    def _delta_len(self) -> np.ndarray | None:
        lc, lr = self.lengths()
        d = np.asarray(lc, dtype=np.float64) - np.asarray(lr, dtype=np.float64)
        return d if d.max() > d.min() else None

    def _group_state(self, *, refresh: bool = False) -> _GroupState:
        if not self.uses_sae:
            raise ConfigError("Feature groups cluster SAE features; this audit has concepts only.")
        if self.encoded is None:
            self.encode()
        state = self._groups_cache
        if state is not None and not refresh and state.encoded is self.encoded:
            return state
        self.status = "grouping features"
        try:
            backbone = self.backbone
            groups, chosen, rejected, table = compute_groups(
                (self.encoded.chosen, self.encoded.rejected),
                self.data.df["chosen"].tolist() + self.data.df["rejected"].tolist(),
                lambda s: backbone.response_ids(s)[0],
                backbone.decode_tokens,
                self.concept_values(),
                [ids.concept_id(c.name) for c in self.concepts],
                self.lengths(),
            )
        finally:
            self.status = ""
        self._groups_cache = _GroupState(self.encoded, groups, chosen, rejected, table)
        return self._groups_cache


def compute_groups(
    sides: tuple[Any, Any],
    texts: list[str],
    tokenize: Any,
    decode: Any,
    concepts: tuple[np.ndarray, np.ndarray],
    concept_ids: list[str],
    lengths: tuple[np.ndarray, np.ndarray],
) -> tuple[fg.FeatureGroups, sp.csr_matrix, sp.csr_matrix, pd.DataFrame]:
    """Everything ``groups()`` computes, from plain parts (the benchmark calls it directly).

    ``sides`` are the chosen and rejected :class:`~prefaudit.features.encoded.SidePooled`;
    ``texts`` the 2n responses (chosen, then rejected); ``tokenize``/``decode`` as for
    :func:`prefaudit.features.groups.group_labels`; ``concepts`` the (chosen, rejected) concept
    values ``(n_pairs, n_concepts)``; ``lengths`` the length control's (chosen, rejected).
    """
    from ..stats import benjamini_hochberg, paired_tests

    cv, rv = sides[0].values, sides[1].values
    groups = fg.cluster_features(sp.vstack([cv, rv], format="csr"))
    scale = fg.response_scale(cv, rv)
    weights = fg.score_weights(groups, scale)
    chosen, rejected = fg.group_scores(cv, weights), fg.group_scores(rv, weights)
    both = sp.vstack([chosen, rejected], format="csr")
    gids = [ids.group_id(k) for k in range(groups.n_groups)]
    labels = fg.group_labels(groups, both, sides, texts, scale, tokenize, decode)
    aligned = fg.aligned_concepts(both, np.vstack(concepts), concept_ids)
    tests = paired_tests(chosen, rejected, lengths=lengths, names=gids, source="group", labels=labels)
    dlen = np.asarray(lengths[0], dtype=np.float64) - np.asarray(lengths[1], dtype=np.float64)
    ctrl, controls = fg.controlled_effects(
        chosen - rejected, tests["d_z"].to_numpy(), dlen if dlen.max() > dlen.min() else None
    )
    q_ctrl = np.full(groups.n_groups, np.nan)
    ok = np.isfinite(ctrl.p)
    q_ctrl[ok] = benjamini_hochberg(ctrl.p[ok])
    table = tests.rename(columns={"feature": "group"})
    table["members"] = [[ids.sae_id(f) for f in m] for m in groups.members]
    table["n_members"] = [len(m) for m in groups.members]
    table["aligned"] = aligned
    table["effect_ctrl"], table["se_ctrl"], table["p_ctrl"] = ctrl.effect, ctrl.stderr, ctrl.p
    table["q_ctrl"], table["d_z_controlled"] = q_ctrl, ctrl.d_z_controlled
    table["controlled_for"] = [[ids.group_id(j) for j in c] for c in controls]
    table = table[list(GROUP_COLUMNS)].reset_index(drop=True)
    table.attrs.update(
        n_unclustered=len(groups.unclustered),
        unclustered=[ids.sae_id(f) for f in groups.unclustered],
        min_active=groups.min_active,
        max_distance=groups.max_distance,
        n_rows_correlated=groups.n_rows,
    )
    return groups, chosen, rejected, table
