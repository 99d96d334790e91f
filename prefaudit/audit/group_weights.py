"""Weights on feature groups, and the margin coefficients of a person's weights.

A weight may name a feature group (``group:<k>``, :mod:`prefaudit.audit.groups`) as well as a
feature. Mixed into :class:`~prefaudit.audit.core.AuditCore` (which provides ``feature_id``,
``_group_state``, ``_group_index``, ``encoded``, ``matrix``, ``feature_ids`` and ``labels``).

What a group weight means
-------------------------
**The group score is one feature with its own margin scale.** Group g's score in a response is
the mean of its members' pooled values, each divided by the member's sd over the audit's
responses (:func:`prefaudit.features.groups.group_scores`): a fixed linear combination
scoreᵍ = Σ_j cⱼᵍ·pooledⱼ. Its Δ is Δᵍ = Σ_j cⱼᵍ·Δⱼ, its margin scale sᵍ is
:func:`prefaudit.shaping.margin_scale` of Δᵍ, and weight wᵍ adds wᵍ·Δᵢᵍ/sᵍ to pair i's margin —
so one slider unit means what it means for a feature: about wᵍ logits where the group is active,
whatever the number of members. (Each member at the weight instead would move a pair by up to
|members|·w logits and saturate the ±4 cap for any sizeable group.)

Because Δᵍ is linear in the member columns, the group adds wᵍ·cⱼᵍ/sᵍ to the margin coefficient
uⱼ of each member j (:meth:`GroupWeightsMixin.margin_weights`). Every consumer reads
margins through ``AuditCore.predict`` and so through these coefficients: the preview, the
interventions' margins (margin, reweight, filter, flip), the training plan (the trained pairs
read in the training window — a group's score there uses the audit's cⱼᵍ on the window's pooled
values, and sᵍ of that Δᵍ, as a feature's scale is that of its window column) and verification's
prediction. ``predict(features=[…, "group:k"])`` reports the group's own signal: the
gradient-weighted mean of Δᵍ, standardised by sd(Δᵍ).

Groups need the SAE features grouped (``session.groups()``, computed on first use); a
concepts-only audit has none and refuses group ids.

Example
-------
>>> session.set_weight("group:3", -1.0)               # doctest: +SKIP
>>> session.predict(features=["group:3"])             # doctest: +SKIP
>>> session.group_members("group:3")                  # doctest: +SKIP
['sae:17', 'sae:204', 'sae:311']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .. import ids
from ..features import groups as fg
from ..shaping import delta_sd, margin_scale


class GroupWeightsMixin:
    """Group ids in decisions (weights, selection, verdicts, notes) and the margin coefficients."""

    _score_coef: tuple[Any, sp.csc_matrix] | None = None

    def decision_id(self, feature: int | str) -> str:
        """A feature id (``feature_id``) or the id of a group that exists (``group:<k>``)."""
        if isinstance(feature, str) and ids.is_group(feature):
            return ids.group_id(self._group_index(feature, self._group_state()))
        return self.feature_id(feature)

    def group_members(self, group: str | int) -> list[str]:
        """Feature ids of a group's members."""
        state = self._group_state()
        return [ids.sae_id(f) for f in state.groups.members[self._group_index(group, state)]]

    def group_label(self, group: str | int) -> str:
        """A person's label of the group if set, else its label in ``session.groups()``."""
        state = self._group_state()
        k = self._group_index(group, state)
        return self.labels.get(ids.group_id(k)) or str(state.table["label"].iloc[k])

    def weighted_features(self, weights: dict[str, float]) -> list[str]:
        """The features behind ``weights``: feature ids as they are, a group by its members."""
        out: list[str] = []
        for f in weights:
            out += self.group_members(f) if ids.is_group(f) else [f]
        return list(dict.fromkeys(out))

    # ------------------------------------------------------------------ margins
    def group_coefficients(self) -> sp.csc_matrix:
        """(SAE features × groups) cⱼᵍ of the group scores (``1/(sd_j · n_members)``; cached)."""
        state = self._group_state()
        if self._score_coef is None or self._score_coef[0] is not state:
            scale = fg.response_scale(self.encoded.chosen.values, self.encoded.rejected.values)
            self._score_coef = (state, sp.csc_matrix(fg.score_weights(state.groups, scale)))
        return self._score_coef[1]

    def _members(self, group: str) -> tuple[np.ndarray, np.ndarray]:
        """(member columns, their cⱼᵍ) of a valid group id."""
        coef = self.group_coefficients()
        k = int(ids.parse(group)[1])
        lo, hi = coef.indptr[k], coef.indptr[k + 1]
        return coef.indices[lo:hi], coef.data[lo:hi]

    def group_deltas(self, groups: list[str], matrix: Any = None) -> sp.csc_matrix:
        """Δ of each group's score over ``matrix``'s pairs (default: the audit's), ``(n, len(groups))``."""
        m = self.matrix if matrix is None else matrix
        cols = []
        for g in groups:
            rows, c = self._members(self.decision_id(g))
            cols.append(sp.csc_matrix((m.delta[:, rows] @ c).reshape(-1, 1)))
        return sp.hstack(cols, format="csc") if cols else sp.csc_matrix((m.shape[0], 0))

    def margin_weights(self, weights: dict[str, float], matrix: Any = None) -> np.ndarray:
        """Per column of ``matrix``: the features' weights with each weighted group's share added.

        ``margin_weights / margin_scale`` are the margin coefficients: for each weighted group g, member j
        (sⱼ > 0) gets sⱼ·wᵍ·cⱼᵍ/sᵍ added, so that its coefficient grows by wᵍ·cⱼᵍ/sᵍ (module
        docstring). Δᵍ and sᵍ are taken over the members with sⱼ > 0 — a member never active or
        constant in every pair is what a feature with sⱼ = 0 is: no contribution.
        """
        m = self.matrix if matrix is None else matrix
        _ = self.feature_ids  # refreshes the index when features changed
        index = self._ids_index
        w = np.zeros(m.shape[1])
        for f, v in weights.items():
            if not ids.is_group(f):
                w[index[f]] = v
        scale = m.margin_scale
        for g, v in weights.items():
            if ids.is_group(g):
                rows, c = self._members(g)
                live = scale[rows] > 0
                rows, c = rows[live], c[live]
                s_g = float(margin_scale(sp.csc_matrix((m.delta[:, rows] @ c).reshape(-1, 1)))[0])
                if s_g > 0:
                    w[rows] += scale[rows] * (float(v) * c / s_g)
        return w

    def predict_rows(
        self, features: Any, matrix: Any = None
    ) -> tuple[list[str], np.ndarray | None, sp.csr_matrix | None, np.ndarray | None]:
        """What ``predict(features=…)`` reads: (row ids, columns, combination, sd of each row).

        A group's signal is linear in its members' (Σ cⱼᵍ·signalⱼ, the signal of Δᵍ), so the
        preview reads feature and member columns and each row is a combination of them.
        ``features=None``: every feature, columns ``None`` (all) and no combination needed.
        """
        m = self.matrix if matrix is None else matrix
        fids = self.feature_ids
        if features is None:
            return list(fids), None, None, None
        rows = [self.decision_id(f) for f in features]
        index, cols, entries, sd = self._ids_index, [], [], []
        for r, f in enumerate(rows):
            if ids.is_group(f):
                members, c = self._members(f)
                entries += [(r, len(cols) + k, v) for k, v in enumerate(c)]
                cols += members.tolist()
                sd.append(float(delta_sd(self.group_deltas([f], m))[0]))
            else:
                entries.append((r, len(cols), 1.0))
                cols.append(index[f])
                sd.append(float(m.sd[index[f]]))
        rr, cc, vv = (np.array(x) for x in zip(*entries, strict=True)) if entries else ([], [], [])
        combine = sp.csr_matrix((vv, (rr, cc)), shape=(len(rows), len(cols)))
        return rows, np.asarray(cols, dtype=int), combine, np.asarray(sd, dtype=np.float64)
