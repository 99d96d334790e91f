"""``Shaping``: what the reward weights would teach — margins, gradient weights and each feature's signal.

A part owned by :class:`~prefaudit.audit.core.AuditCore` (``session.shaping``). Its one product
is a typed :class:`Preview`: the per-feature signal table and the per-pair margins behind it.
Every consumer of margins reads them here — the shaper's histogram, the interventions (margin,
reweight, filter, flip), the training plan, the drivers and verification's prediction — so a
weight means the same thing everywhere. The arithmetic is :mod:`prefaudit.shaping` (pure).

What a group weight means
-------------------------
A weight may name a feature group (``group:<k>``, :mod:`prefaudit.audit.groups`) as well as a
feature. **The group score is one feature with its own margin scale.** Group g's score in a
response is the mean of its members' pooled values, each divided by the member's sd over the
audit's responses (:func:`prefaudit.features.groups.group_scores`): a fixed linear combination
scoreᵍ = Σ_j cⱼᵍ·pooledⱼ. Its Δ is Δᵍ = Σ_j cⱼᵍ·Δⱼ, its margin scale sᵍ is
:func:`prefaudit.shaping.margin_scale` of Δᵍ, and weight wᵍ adds wᵍ·Δᵢᵍ/sᵍ to pair i's margin —
so one slider unit means what it means for a feature: about wᵍ logits where the group is active,
whatever the number of members. (Each member at the weight instead would move a pair by up to
|members|·w logits and saturate the ±4 cap for any sizeable group.) Because Δᵍ is linear in the
member columns, the group adds wᵍ·cⱼᵍ/sᵍ to the margin coefficient uⱼ of each member j
(:meth:`Shaping.margin_weights`). ``preview(features=[…, "group:k"])`` reports the group's own
signal: the gradient-weighted mean of Δᵍ, standardised by sd(Δᵍ).

Pair edits (:mod:`prefaudit.audit.pair_edits`) apply to the audit's own pairs: a flipped pair's
margin changes sign (m is linear in Δ and the cap is symmetric) and it teaches −Δ; an excluded
pair gets gradient weight 0 and leaves every sum and count.

Example
-------
>>> session.set_weight("group:3", -1.0)               # doctest: +SKIP
>>> pv = session.shaping.preview(features=["group:3"])   # doctest: +SKIP
>>> pv.table[["feature", "signal_before_z", "signal_after_z"]], pv.n_dominated   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import ids
from ..shaping import MarginSum, ShapingPreview, delta_sd, dominated, gradient_weights, margin_scale, preview
from .pair_edits import edited_signal
from .versions import Memo

if TYPE_CHECKING:
    from ..features.matrix import FeatureMatrix
    from .core import AuditCore


@dataclass(frozen=True)
class Preview:
    """What the weights would teach, before any training.

    Attributes
    ----------
    table : DataFrame
        One row per feature (or group) asked for: ``feature, label, weight, signal_before,
        signal_after`` (gradient-weighted mean Δ, raw units), their standardised versions
        ``signal_before_z, signal_after_z`` (/sd), ``change_z`` and ``sd``.
    margins : ndarray
        Per pair (rows of the matrix read), the shaping margin mᵢ as trained: scaled by the
        margin scale, capped at ±``cap`` (:mod:`prefaudit.shaping`); a person-flipped pair's sign
        follows its swapped sides.
    gradient_weight : ndarray
        σ(mᵢ), the DPO gradient weight of each pair at initialisation (0 for an excluded pair).
    n_dominated : int
        Pairs whose margin is at or below −``threshold`` (the weights outvote their label).
    threshold, cap : float
    n_capped : int
        Pairs whose uncapped margin exceeded the cap.
    """

    table: pd.DataFrame
    margins: np.ndarray
    gradient_weight: np.ndarray
    n_dominated: int
    threshold: float
    n_capped: int
    cap: float


class Shaping:
    """Margins and the predicted learning signal of the current (or given) weights."""

    def __init__(self, core: AuditCore) -> None:
        self.core = core
        # Per Δ object, the kept uncapped margin sum the incremental slider moves
        # (prefaudit.shaping.MarginSum); emptied when the features change.
        self._sums = Memo(core.versions, "data", "features")

    def preview(
        self,
        weights: dict[int | str, float] | None = None,
        *,
        features: list[int | str] | None = None,
        matrix: FeatureMatrix | None = None,
    ) -> Preview:
        """Predicted learning signal per feature before and after shaping (no training).

        Uses ``session.weights`` unless ``weights`` is given; rows for every feature, or for
        ``features`` (feature or group ids; ``[]`` costs only the margins). ``matrix``: predict
        from these pooled values (same columns; e.g. the trained pairs read in the training
        window) instead of the audit's — pair edits then do not apply (its rows are not the
        session's pairs in order).
        """
        core, space = self.core, self.core.space
        m = space.matrix if matrix is None else matrix
        w_map = (
            core.weights if weights is None else {space.decision_id(k): float(v) for k, v in weights.items()}
        )
        w_margin = self.margin_weights(w_map, m)
        rows, cols, combine, row_sd = self.rows(features, m)
        pv = self._edited(m, w_margin, cols, own_pairs=matrix is None)
        sd, before, after = pv.sd, pv.signal_before, pv.signal_after
        if combine is not None:  # feature rows pick their column, group rows combine their members'
            sd, before, after = row_sd, combine @ before, combine @ after
        with np.errstate(divide="ignore", invalid="ignore"):
            before_z = np.where(sd > 0, before / sd, 0.0)
            after_z = np.where(sd > 0, after / sd, 0.0)
        table = pd.DataFrame(
            {
                "feature": rows,
                "label": [core.label(f) for f in rows],
                "weight": [w_map.get(f, 0.0) for f in rows],
                "signal_before": before,
                "signal_after": after,
                "signal_before_z": before_z,
                "signal_after_z": after_z,
                "change_z": after_z - before_z,
                "sd": sd,
            }
        )
        return Preview(
            table=table,
            margins=pv.margins,
            gradient_weight=pv.gradient_weight,
            n_dominated=pv.n_dominated,
            threshold=pv.threshold,
            n_capped=pv.n_capped,
            cap=pv.cap,
        )

    def margins(self, weights: dict[int | str, float] | None = None) -> np.ndarray:
        """mᵢ of every pair as trained (person-flipped pairs with their sign) under ``weights``."""
        return self.preview(weights, features=[]).margins

    def gradient_weights(self, weights: dict[int | str, float] | None = None) -> np.ndarray:
        """σ(mᵢ) of every pair as trained (0 for an excluded pair) under ``weights``."""
        return np.asarray(self.preview(weights, features=[]).gradient_weight, dtype=np.float64)

    def unedited_margins(self, weights: dict[int | str, float] | None = None) -> np.ndarray:
        """mᵢ of every pair as labelled, under ``weights`` (default ``session.weights``)."""
        m = np.asarray(self.margins(weights), dtype=np.float64)
        return np.where(self.core.edits.signs() < 0, -m, m)

    def delta_of(self, feature: int | str) -> tuple[str, np.ndarray]:
        """The id and per-pair Δ of an ``sae:``/``concept:`` feature or a ``group:`` id."""
        core, space = self.core, self.core.space
        if isinstance(feature, str) and ids.is_group(feature):
            gid = ids.group_id(core.groups.index(feature))
            return gid, core.groups.scores(gid)["delta"].to_numpy(dtype=np.float64)
        fid = space.feature_id(feature)
        c, r = space.matrix.column(space.column(fid))
        return fid, np.asarray(c - r, dtype=np.float64)

    # ------------------------------------------------------------------ weights -> margin coefficients
    def margin_weights(self, weights: dict[str, float], matrix: FeatureMatrix | None = None) -> np.ndarray:
        """Per column of ``matrix``: the features' weights with each weighted group's share added.

        ``margin_weights / margin_scale`` are the margin coefficients: for each weighted group g, member j
        (sⱼ > 0) gets sⱼ·wᵍ·cⱼᵍ/sᵍ added, so that its coefficient grows by wᵍ·cⱼᵍ/sᵍ (module
        docstring). Δᵍ and sᵍ are taken over the members with sⱼ > 0 — a member never active or
        constant in every pair is what a feature with sⱼ = 0 is: no contribution.
        """
        core = self.core
        m = core.space.matrix if matrix is None else matrix
        w = np.zeros(m.shape[1])
        plain = [f for f in weights if not ids.is_group(f)]
        if plain:
            w[core.space.columns(plain)] = [weights[f] for f in plain]
        scale = m.margin_scale
        for g, v in weights.items():
            if ids.is_group(g):
                rows, c = core.groups.member_coefficients(g)
                live = scale[rows] > 0
                rows, c = rows[live], c[live]
                s_g = float(margin_scale(sp.csc_matrix((m.delta[:, rows] @ c).reshape(-1, 1)))[0])
                if s_g > 0:
                    w[rows] += scale[rows] * (float(v) * c / s_g)
        return w

    def weighted_features(self, weights: dict[str, float]) -> list[str]:
        """The features behind ``weights``: feature ids as they are, a group by its members."""
        out: list[str] = []
        for f in weights:
            out += self.core.groups.members(f) if ids.is_group(f) else [f]
        return list(dict.fromkeys(out))

    def rows(
        self, features: Any, matrix: FeatureMatrix | None = None
    ) -> tuple[list[str], np.ndarray | None, sp.csr_matrix | None, np.ndarray | None]:
        """What ``preview(features=…)`` reads: (row ids, columns, combination, sd of each row).

        A group's signal is linear in its members' (Σ cⱼᵍ·signalⱼ, the signal of Δᵍ), so the
        preview reads feature and member columns and each row is a combination of them.
        ``features=None``: every feature, columns ``None`` (all) and no combination needed.
        """
        core, space = self.core, self.core.space
        m = space.matrix if matrix is None else matrix
        if features is None:
            return list(space.feature_ids), None, None, None
        rows = [space.decision_id(f) for f in features]
        cols: list[int] = []
        entries: list[tuple[int, int, float]] = []
        sd: list[float] = []
        for r, f in enumerate(rows):
            if ids.is_group(f):
                members, c = core.groups.member_coefficients(f)
                entries += [(r, len(cols) + k, v) for k, v in enumerate(c)]
                cols += members.tolist()
                sd.append(float(delta_sd(core.groups.deltas([f], m))[0]))
            else:
                j = int(space.columns([f])[0])
                entries.append((r, len(cols), 1.0))
                cols.append(j)
                sd.append(float(m.sd[j]))
        rr, cc, vv = (np.array(x) for x in zip(*entries, strict=True)) if entries else ([], [], [])
        combine = sp.csr_matrix((vv, (rr, cc)), shape=(len(rows), len(cols)))
        return rows, np.asarray(cols, dtype=int), combine, np.asarray(sd, dtype=np.float64)

    # ------------------------------------------------------------------ internals
    def _kept_sum(self, delta: Any) -> MarginSum:
        """The :class:`MarginSum` kept for this Δ object (Δ must not change in place)."""
        entry = self._sums.peek(id(delta))
        if entry is None or entry[0]() is not delta or entry[1].shape != delta.shape:
            entry = (weakref.ref(delta), MarginSum(delta))
            self._sums.put(id(delta), entry)
        return entry[1]

    def _edited(
        self, matrix: FeatureMatrix, w: np.ndarray, columns: np.ndarray | None, *, own_pairs: bool
    ) -> ShapingPreview:
        """:func:`prefaudit.shaping.preview` of ``matrix`` as training sees the pairs (module docstring)."""
        delta = matrix.delta
        pv = preview(
            delta, w, sd=matrix.sd, scale=matrix.margin_scale, columns=columns, sums=self._kept_sum(delta)
        )
        edits = self.core.pair_edits
        if not edits or not own_pairs:
            return pv
        signs = self.core.edits.signs(edits)
        kept = signs != 0
        margins = np.where(signs < 0, -pv.margins, pv.margins)
        cols = (
            delta
            if columns is None
            else (sp.csc_matrix(delta)[:, columns] if sp.issparse(delta) else np.asarray(delta)[:, columns])
        )
        before = edited_signal(cols, np.zeros_like(margins), signs)
        return dataclasses.replace(
            pv,
            margins=margins,
            gradient_weight=gradient_weights(margins) * kept,
            signal_before=before,
            signal_after=edited_signal(cols, pv.margins, signs),
            n_dominated=int((dominated(margins, pv.threshold) & kept).sum()),
        )
