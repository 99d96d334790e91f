"""Feature groups of an audit: ``session.groups()``, ``session.group_scores()``, ``session.explained_by()``.

A part owned by :class:`~prefaudit.audit.core.AuditCore` (``session.groups``; read-only). The method — co-activation clustering, group scores, labels,
aligned concepts and the explained-by regression — is :mod:`prefaudit.features.groups`.

Example
-------
>>> table = session.groups()                                    # doctest: +SKIP
>>> table.sort_values("d_z", key=abs, ascending=False).head()  # doctest: +SKIP
>>> session.groups.explained_by(17)["d_z_controlled"]                 # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import ids
from ..errors import ConfigError
from ..features import groups as fg
from .versions import Memo

if TYPE_CHECKING:
    from .core import AuditCore

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
class GroupState:
    """What ``groups()`` computed, kept by the :class:`Groups` part until the features change."""

    groups: fg.FeatureGroups
    chosen: sp.csr_matrix  # (n_pairs, n_groups) scores
    rejected: sp.csr_matrix
    table: pd.DataFrame
    coefficients: sp.csc_matrix  # (SAE features × groups) cⱼᵍ of the scores


class Groups:
    """Groups of co-activating SAE features, tested chosen vs rejected like features (``session.groups``).

    Calling the part (``session.groups()``) returns the table; the other reads are its methods.
    """

    def __init__(self, core: AuditCore) -> None:
        self.core = core
        self._state = Memo(core.versions, "data", "features")

    def __call__(self, *, refresh: bool = False) -> pd.DataFrame:
        """One row per feature group, columns :data:`GROUP_COLUMNS` (cached until features change).

        ``members`` are feature ids; ``d_z … p_len_ctrl`` are :func:`prefaudit.stats.paired_tests`
        of the group scores (Wilcoxon, n_boot = 1000, seed 0, length control, BH across groups);
        ``aligned`` holds the two text concepts whose values correlate most with the score over
        responses, as ``(concept id, r)``; ``effect_ctrl``, ``se_ctrl``, ``p_ctrl`` (``q_ctrl``: BH
        across groups), ``d_z_controlled`` and ``controlled_for`` (group ids) are the explained-by
        model of :mod:`prefaudit.features.groups`. ``attrs`` carries ``n_unclustered``,
        ``unclustered`` (feature ids in no group), ``min_active`` and ``max_distance``.
        """
        return self.state(refresh=refresh).table

    def computed(self) -> pd.DataFrame | None:
        """The table when already computed for the current features, else ``None`` (never clusters)."""
        state = self._state.peek("state")
        return None if state is None else state.table

    def scores(self, group: str | int) -> pd.DataFrame:
        """Per-pair score of one group: columns ``pair_id, chosen, rejected, delta``."""
        state = self.state()
        k = self.index(group)
        c = state.chosen[:, [k]].toarray().ravel()
        r = state.rejected[:, [k]].toarray().ravel()
        return pd.DataFrame(
            {"pair_id": self.core.data.df["pair_id"].to_numpy(), "chosen": c, "rejected": r, "delta": c - r}
        )

    def score_matrices(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """All groups' per-pair scores, ``(chosen, rejected)`` sparse ``(n_pairs, n_groups)`` (column k = ``group:k``)."""
        state = self.state()
        return state.chosen, state.rejected

    def of(self, feature: int | str) -> str | None:
        """The id of the group an SAE feature belongs to (``None``: unclustered, or a concept)."""
        fid = self.core.space.feature_id(feature)
        if not ids.is_sae(fid):
            return None
        k = int(self.state().groups.assignment[ids.sae_index(fid)])
        return None if k < 0 else ids.group_id(k)

    def members(self, group: str | int) -> list[str]:
        """Feature ids of a group's members."""
        return [ids.sae_id(f) for f in self.state().groups.members[self.index(group)]]

    def label(self, group: str | int) -> str:
        """A person's label of the group if set, else its label in the table."""
        k = self.index(group)
        return self.core.labels.get(ids.group_id(k)) or str(self.state().table["label"].iloc[k])

    def explained_by(self, feature: int | str, *, k: int = fg.N_CONTROL_GROUPS) -> dict[str, Any]:
        """The effect of a feature or group controlled for length and the ``k`` strongest other groups.

        Returns ``feature``, ``n_pairs``, ``delta_mean``, ``d_z`` (uncontrolled), ``effect``,
        ``stderr``, ``p``, ``d_z_controlled`` and ``controlled_for`` (group ids). The groups are
        those with the largest |d_z| in the table, never the feature's own group.
        """
        state = self.state()
        delta_groups = state.chosen - state.rejected
        space = self.core.space
        if isinstance(feature, str) and ids.is_group(feature):
            own = self.index(feature)
            fid = ids.group_id(own)
            y = delta_groups[:, [own]].toarray().ravel()
        else:
            fid = space.feature_id(feature)
            c, r = space.matrix.column(space.column(fid))
            y = c - r
            own = int(state.groups.assignment[ids.sae_index(fid)]) if ids.is_sae(fid) else -1
        controls = fg.strongest(state.table["d_z"].to_numpy(), int(k), exclude=[own])
        dlen = _delta_len(space.lengths())
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

    # ------------------------------------------------------------------ what a group weight reads
    def coefficients(self) -> sp.csc_matrix:
        """(SAE features × groups) cⱼᵍ of the group scores (``1/(sd_j · n_members)``)."""
        return self.state().coefficients

    def member_coefficients(self, group: str) -> tuple[np.ndarray, np.ndarray]:
        """(member columns, their cⱼᵍ) of a group id."""
        coef = self.coefficients()
        k = self.index(group)
        lo, hi = coef.indptr[k], coef.indptr[k + 1]
        return coef.indices[lo:hi], coef.data[lo:hi]

    def deltas(self, groups: list[str], matrix: Any = None) -> sp.csc_matrix:
        """Δ of each group's score over ``matrix``'s pairs (default: the audit's), ``(n, len(groups))``."""
        m = self.core.space.matrix if matrix is None else matrix
        cols = []
        for g in groups:
            rows, c = self.member_coefficients(g)
            cols.append(sp.csc_matrix((m.delta[:, rows] @ c).reshape(-1, 1)))
        return sp.hstack(cols, format="csc") if cols else sp.csc_matrix((m.shape[0], 0))

    # ------------------------------------------------------------------ ids and state
    def index(self, group: str | int) -> int:
        """The number k of a group given as ``group:k`` or k; a ConfigError when there is none."""
        if isinstance(group, (int, np.integer)) and not isinstance(group, bool):
            k = int(group)
        else:
            kind, k = ids.parse(str(group)) if ids.is_group(str(group)) else (None, -1)
            if kind != "group":
                raise ConfigError(f"{group!r} is not a group id (group:<k>).")
        n_groups = self.state().groups.n_groups
        if not 0 <= int(k) < n_groups:
            raise ConfigError(f"Unknown group {group!r}: this audit has groups 0..{n_groups - 1}.")
        return int(k)

    def state(self, *, refresh: bool = False) -> GroupState:
        """The clustering, scores and table (computed on first use, then cached)."""
        core = self.core
        if not core.uses_sae:
            raise ConfigError("Feature groups cluster SAE features; this audit has concepts only.")
        if core.encoded is None:
            core.encode()
        if refresh:
            self._state.clear()
        return self._state.get("state", self._compute)

    def _compute(self) -> GroupState:
        core, space = self.core, self.core.space
        core.status = "grouping features"
        try:
            backbone = core.backbone
            groups, chosen, rejected, table = compute_groups(
                (core.encoded.chosen, core.encoded.rejected),
                core.data.df["chosen"].tolist() + core.data.df["rejected"].tolist(),
                lambda s: backbone.response_ids(s)[0],
                backbone.decode_tokens,
                space.concept_values(),
                [ids.concept_id(c.name) for c in core.concepts],
                space.lengths(),
            )
        finally:
            core.status = ""
        scale = fg.response_scale(core.encoded.chosen.values, core.encoded.rejected.values)
        coefficients = sp.csc_matrix(fg.score_weights(groups, scale))
        return GroupState(groups, chosen, rejected, table, coefficients)


def _delta_len(lengths: tuple[np.ndarray, np.ndarray]) -> np.ndarray | None:
    d = np.asarray(lengths[0], dtype=np.float64) - np.asarray(lengths[1], dtype=np.float64)
    return d if d.max() > d.min() else None


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
