"""Feature groups of an audit: ``session.groups()``, ``session.groups.explain()``, ``session.explained_by()``.

A part owned by :class:`~prefaudit.audit.core.AuditCore` (``session.groups``; read-only). The
groups are the **co-firing clusters** of :mod:`prefaudit.features.clusters` (the paper's recipe:
mutual information of co-firing, kNN edges, seeded Louvain; ``docs/CONCEPTS.md`` says why they
replaced the average-linkage groups), scored and tested by :mod:`prefaudit.features.cluster_stats`
(our continuous score and the paper's fires-only-in-chosen score, badge and split half), labelled
by their distinctive contexts (:func:`prefaudit.features.labels.concept_contexts`). Ids stay
``group:N`` (``group:0`` the largest), so weights, the shaper, the volcano and the drivers take
them as before.

Example
-------
>>> table = session.groups()                                    # doctest: +SKIP
>>> table.sort_values("d_z", key=abs, ascending=False).head()  # doctest: +SKIP
>>> session.groups.explain("contexts")                         # doctest: +SKIP
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
from ..features.cluster_stats import cluster_table
from ..features.clusters import CofiringClusters, cofiring_clusters
from ..features.labels import ConceptContexts, concept_contexts
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
    # The paper's statistics (prefaudit.features.cluster_stats): where the group fires, the
    # per-pair +1/−1 score, its exact 95% interval, the badge, the sign test (BH over groups)
    # and the one-split half check; then how the label was made.
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
    "label_kind",
)

#: How group labels read the tokens of their top responses: ``"peaks"`` (default) from the peak
#: tokens the encode stored (no model pass), ``"model"`` through the model and the SAE.
READERS: tuple[str, ...] = ("peaks", "model")


@dataclass
class GroupState:
    """What ``groups()`` computed, kept by the :class:`Groups` part until the features change."""

    groups: CofiringClusters
    chosen: sp.csr_matrix  # (n_pairs, n_groups) scores
    rejected: sp.csr_matrix
    table: pd.DataFrame
    coefficients: sp.csc_matrix  # (SAE features × groups) cⱼᵍ of the scores
    contexts: list[ConceptContexts]  # what each group's label was read from (explainers read it too)


class Groups:
    """Clusters of co-firing SAE features, tested chosen vs rejected like features (``session.groups``).

    Calling the part (``session.groups()``) returns the table; the other reads are its methods.
    ``reader``: how labels read tokens (:data:`READERS`); set it before the first call.
    """

    def __init__(self, core: AuditCore, *, reader: str = "peaks") -> None:
        self.core = core
        self.reader = reader
        self._state = Memo(core.versions, "data", "features")

    def __call__(self, *, refresh: bool = False) -> pd.DataFrame:
        """One row per feature group (a co-firing cluster), columns :data:`GROUP_COLUMNS` (cached until features change).

        ``label`` is the group's distinctive contexts (``label_kind`` says how it was made);
        ``members`` are feature ids; ``d_z … p_len_ctrl`` are :func:`prefaudit.stats.paired_tests`
        of the group scores (Wilcoxon, n_boot = 1000, seed 0, length control, BH across groups);
        ``aligned`` holds the two text concepts whose values correlate most with the score over
        responses, as ``(concept id, r)``; ``effect_ctrl``, ``se_ctrl``, ``p_ctrl`` (``q_ctrl``: BH
        across groups), ``d_z_controlled`` and ``controlled_for`` (group ids) are the explained-by
        model of :mod:`prefaudit.features.groups`; ``fire_threshold … split_half`` the paper's
        statistics (:mod:`prefaudit.features.cluster_stats`). ``attrs`` carries ``n_unclustered``,
        ``unclustered`` (feature ids in no group, in order), ``unclustered_by_reason`` (reason →
        count; :meth:`unclustered` lists each feature with its reason), ``min_active``,
        ``min_size``, ``n_edges``, ``n_rows`` (responses the co-firing was counted on) and
        ``label_reader``.
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
        k = int(self.state().groups.membership[ids.sae_index(fid)])
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
            own = int(state.groups.membership[ids.sae_index(fid)]) if ids.is_sae(fid) else -1
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

    def unclustered(self) -> pd.DataFrame:
        """Every SAE feature in no group: ``feature`` (id), ``reason``, ``n_active``, ``why``."""
        table = self.state().groups.unclustered_table()
        table["feature"] = [ids.sae_id(f) for f in table["feature"]]
        return table

    def contexts(self, group: str | int) -> ConceptContexts:
        """What a group's label was read from: its top contexts, distinctive n-grams and contrast."""
        return self.state().contexts[self.index(group)]

    def explain(self, explainer: Any = "contexts", **options: Any) -> pd.DataFrame:
        """What each group is, in words, by an explainer: columns ``group``, ``explanation``, ``source``.

        ``explainer``: a registered name (:func:`prefaudit.features.explainers.explainer_names`:
        ``"contexts"``, ``"neuronpedia"``, ``"hf"``, ``"callable"``), an object with
        ``explain(contexts)`` or a function ``contexts -> str``; ``options`` build a named one.
        ``"neuronpedia"`` gets the SAE's Neuronpedia id and width unless given; ``"hf"`` without
        ``model=`` uses the audit's own model. ``explanation`` and ``source`` are ``None`` where
        the explainer had nothing to say. Cached per explainer and options until the features
        change. Explanations are for people: no statistic reads them.
        """
        from ..features.explainers import explain_all, resolve_explainer

        key = ("explain", _hashable(explainer), tuple((k, _hashable(v)) for k, v in sorted(options.items())))
        hit = self._state.peek(key)
        if hit is not None:
            return hit
        state = self.state()
        opts = dict(options)
        if explainer == "neuronpedia":
            from ..features.explainers.neuronpedia import neuronpedia_id_of

            opts.setdefault("neuronpedia_id", neuronpedia_id_of(self.core.sae))
            opts.setdefault("d_sae", int(self.core.encoded.d_sae))
        elif explainer == "hf" and "model" not in opts:
            opts["model"], opts["tokenizer"] = self.core.backbone.model, self.core.backbone.tokenizer
        said = explain_all(resolve_explainer(explainer, **opts), state.contexts)
        out = pd.DataFrame(
            {
                "group": state.table["group"].tolist(),
                "explanation": [None if e is None else e.text for e in said],
                "source": [None if e is None else e.source for e in said],
            }
        )
        self._state.put(key, out)
        return out

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
        n_groups = self.state().groups.n_clusters
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
        if self.reader not in READERS:
            raise ConfigError(f"session.groups.reader={self.reader!r}; choose one of {', '.join(READERS)}.")
        core.status = "grouping features"
        try:
            texts = core.data.df["chosen"].tolist() + core.data.df["rejected"].tolist()
            backbone = core.backbone
            sides = (core.encoded.chosen, core.encoded.rejected)
            if self.reader == "model":
                read = fg.model_reader(backbone, core.sae, core.data.messages, texts)
            else:
                read = fg.peak_reader(
                    sides, texts, lambda s: backbone.response_ids(s)[0], backbone.decode_tokens
                )
            clusters, chosen, rejected, table, contexts = compute_groups(
                sides,
                read,
                space.concept_values(),
                [ids.concept_id(c.name) for c in core.concepts],
                space.lengths(),
            )
            table.attrs["label_reader"] = self.reader
        finally:
            core.status = ""
        scale = fg.response_scale(core.encoded.chosen.values, core.encoded.rejected.values)
        coefficients = sp.csc_matrix(fg.score_weights(clusters, scale))
        return GroupState(clusters, chosen, rejected, table, coefficients, contexts)


def _hashable(value: Any) -> Any:
    """A cache key part: the value where hashable (a name, a function), else its repr."""
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _delta_len(lengths: tuple[np.ndarray, np.ndarray]) -> np.ndarray | None:
    d = np.asarray(lengths[0], dtype=np.float64) - np.asarray(lengths[1], dtype=np.float64)
    return d if d.max() > d.min() else None


def compute_groups(
    sides: tuple[Any, Any],
    read: Any,
    concepts: tuple[np.ndarray, np.ndarray],
    concept_ids: list[str],
    lengths: tuple[np.ndarray, np.ndarray],
    *,
    seed: int = 0,
) -> tuple[CofiringClusters, sp.csr_matrix, sp.csr_matrix, pd.DataFrame, list[ConceptContexts]]:
    """Everything ``groups()`` computes, from plain parts (the benchmarks call it directly).

    ``sides`` are the chosen and rejected :class:`~prefaudit.features.encoded.SidePooled`;
    ``read`` a :class:`~prefaudit.features.labels.TokenReader` over the 2n responses (chosen,
    then rejected; :func:`prefaudit.features.groups.peak_reader` or ``model_reader``);
    ``concepts`` the (chosen, rejected) concept values ``(n_pairs, n_concepts)``; ``lengths``
    the length control's (chosen, rejected). Every default of the clustering, the statistics and
    the labels is the pure modules' (fixed before the demo was looked at); ``seed`` seeds them.
    Returns the clusters, the group scores (chosen, rejected), the table and the label contexts.
    """
    cv, rv = sides[0].values, sides[1].values
    clusters = cofiring_clusters(cv, rv, seed=seed)
    audit = cluster_table(cv, rv, clusters, lengths=lengths, seed=seed, controls=fg.N_CONTROL_GROUPS)
    chosen, rejected = audit.chosen_scores, audit.rejected_scores
    both = sp.vstack([chosen, rejected], format="csr")
    gids = [ids.group_id(k) for k in range(clusters.n_clusters)]
    scale = fg.response_scale(cv, rv)
    inverse_sd = np.divide(
        1.0, scale, out=np.zeros_like(scale), where=scale > 0
    )  # as the score weighs members
    contexts = (
        concept_contexts(both, clusters.members, read, unit_ids=gids, weights=inverse_sd, seed=seed)
        if clusters.n_clusters
        else []
    )
    table = audit.table.rename(columns={"cluster": "group"})
    table["group"] = gids
    table["label"] = [c.label for c in contexts]
    table["label_kind"] = [c.label_kind for c in contexts]
    table["members"] = [[ids.sae_id(f) for f in m] for m in clusters.members]
    table["n_pairs"] = cv.shape[0]
    table["aligned"] = fg.aligned_concepts(both, np.vstack(concepts), concept_ids)
    to_group = dict(zip(clusters.ids, gids, strict=True))
    table["controlled_for"] = [[to_group[c] for c in cs] for cs in table["controlled_for"]]
    table = table[list(GROUP_COLUMNS)].reset_index(drop=True)
    unclustered = np.sort(
        np.concatenate([v for v in clusters.unclustered.values()] or [np.zeros(0, np.int64)])
    )
    table.attrs.update(
        n_unclustered=len(unclustered),
        unclustered=[ids.sae_id(f) for f in unclustered],
        unclustered_by_reason={r: len(v) for r, v in clusters.unclustered.items()},
        min_active=clusters.params["min_active"],
        min_size=clusters.params["min_size"],
        n_edges=clusters.n_edges,
        n_rows=clusters.n_rows,
    )
    return clusters, chosen, rejected, table, contexts
