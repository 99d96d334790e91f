"""The interface every intervention implements: its rows, its prediction, its summary.

An intervention turns a person's weights into what trl trains on. Each one is a subclass of
:class:`Intervention` in its own module, registered with :func:`prefaudit.interventions.registry.register`;
:func:`prefaudit.interventions.shaped.shape_pairs` runs the common flow (weights → margins →
``rows`` → trl rows) and verification asks ``predict`` what the run should learn. A new
intervention is one file plus its registration.

Margins are those of the shaping preview (``session.shaping.preview``): mᵢ = clip(Σ_f wᶠ·Δᵢᶠ/sᶠ, ±4) with
the margin scale sᶠ of :func:`prefaudit.shaping.margin_scale`. "Dominated" has one definition,
:func:`prefaudit.shaping.dominated` (mᵢ ≤ −τ), shared by ``filter``, ``flip`` and the preview.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import shaping
from ..shaping import DOMINANCE_THRESHOLD

if TYPE_CHECKING:
    from ..audit.protocol import AuditState
    from ..audit.shaping import Preview


@dataclass
class RowPlan:
    """What an intervention does to the training pairs (arrays aligned with the requested positions)."""

    keep: np.ndarray
    swap: np.ndarray
    loss_margin: np.ndarray
    sample_weight: np.ndarray
    ablate_features: list[str] = field(default_factory=list)
    not_ablatable: list[str] = field(default_factory=list)

    @classmethod
    def unchanged(cls, n: int) -> RowPlan:
        """Every pair kept as labelled, plain DPO loss, uniform sampling."""
        return cls(np.ones(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros(n), np.ones(n))


def dominated(margins: np.ndarray, threshold: float = DOMINANCE_THRESHOLD) -> np.ndarray:
    """Mask of pairs the shaping dominates against their label, mᵢ ≤ −τ (:func:`prefaudit.shaping.dominated`)."""
    return shaping.dominated(margins, threshold)


def weighted_mean_delta(delta: Any, weights: np.ndarray) -> np.ndarray:
    """Σᵢ ωᵢ·Δᵢ / Σᵢ |ωᵢ| over the rows of ``delta`` (a signed ω flips a pair; 0 drops it)."""
    w = np.asarray(weights, dtype=np.float64)
    total = float(np.sum(np.abs(w)))
    if total == 0:
        return np.zeros(delta.shape[1])
    return np.asarray(sp.csr_matrix(delta).T @ w).ravel() / total


def prediction_table(
    features: Any, labels: Any, weights: Any, raw: np.ndarray, sd: np.ndarray
) -> pd.DataFrame:
    """The prediction's columns: ``feature, label, weight, predicted`` (raw), ``predicted_z`` (/sd), ``sd``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, raw / sd, 0.0)
    return pd.DataFrame(
        {
            "feature": features,
            "label": labels,
            "weight": weights,
            "predicted": raw,
            "predicted_z": z,
            "sd": sd,
        }
    )


class Intervention:
    """Base class: plain DPO on every pair. Subclasses override what they change.

    Class attributes
    ----------------
    name : str
        The ``intervention=`` value.
    margin_in_loss : bool
        Whether the loss receives mᵢ (the run panel then shows the shaped margins).
    """

    name: ClassVar[str] = ""
    margin_in_loss: ClassVar[bool] = False

    def rows(
        self, core: AuditState, weights: dict[str, float], margins: np.ndarray, threshold: float
    ) -> RowPlan:
        """Which of the requested pairs are kept or swapped, their loss margins and sampling weights."""
        return RowPlan.unchanged(len(margins))

    def pair_weights(self, preview: Preview, threshold: float) -> np.ndarray:
        """Each audit pair's weight in the learning signal (length n_pairs; signed, 0 = not learned).

        The default is σ(mᵢ): at initialisation pair i's DPO gradient weight (vanilla: ½ each).
        """
        return np.asarray(preview.gradient_weight, dtype=np.float64)

    def zeroed(self, ablated: list[str]) -> list[str]:
        """Features whose signal the intervention removes outright (``ablate``: its directions)."""
        return []

    def summary(self, shaped: Any, head: str) -> str:
        """One line a person can read; ``head`` already says the intervention and the pair count."""
        return head

    def predict(
        self,
        core: AuditState,
        weights: dict[str, float],
        *,
        threshold: float = DOMINANCE_THRESHOLD,
        ablated: Any = (),
        positions: Any = None,
        delta: Any = None,
    ) -> pd.DataFrame:
        """Predicted learning signal per feature for this intervention at ``weights``.

        signal_f = Σᵢ ωᵢ·Δᵢᶠ / Σᵢ |ωᵢ| over ``positions`` (default: every pair of the audit), with
        the intervention's pair weights ω (:meth:`pair_weights`) and its zeroed features. ``delta``
        (rows aligned with ``positions``) replaces the audit's Δ — e.g. the trained pairs read in
        the training window; margins, and the unit sd used for ``predicted_z``, stay the audit's. Returns ``feature``,
        ``label``, ``weight``, ``predicted`` (raw), ``predicted_z`` (/sᶠ) and ``sd``, in
        ``core.feature_ids`` order — what verification compares the observed shift with.
        """
        preview = core.shaping.preview(weights)
        pv = preview.table
        sd = pv["sd"].to_numpy()
        rows = np.arange(len(core.data)) if positions is None else np.asarray(positions, dtype=np.int64)
        omega = (self.pair_weights(preview, threshold) * core.edits.signs())[
            rows
        ]  # person's flips/exclusions
        if delta is None:
            delta = sp.csr_matrix(core.space.delta())[rows]
        elif delta.shape[0] != len(rows):
            raise ValueError(f"delta has {delta.shape[0]} rows for {len(rows)} positions.")
        raw = weighted_mean_delta(delta, omega)
        index = {f: j for j, f in enumerate(pv["feature"])}
        for f in self.zeroed(list(ablated)):
            raw[index[f]] = 0.0
        return prediction_table(pv["feature"], pv["label"], pv["weight"], raw, sd)

    def predict_run(self, core: AuditState, run: Any, matrix: Any) -> pd.DataFrame:
        """What a finished run should have learned: the prediction over exactly what it trained on.

        Over the pairs its plan trained on (``run.plan.trained_positions``), read in its window
        (``matrix``, rows aligned with them), each pair weighted by ωᵢ = drawsᵢ·σ(mᵢ)·sᵢ: how often
        the sampler drew it, its gradient weight at initialisation under the loss margin the run
        used (mᵢ = 0 unless the margin enters the loss), and sᵢ = −1 for a pair the run trained with
        chosen and rejected swapped. Features the intervention removes (:meth:`zeroed`) predict 0.
        Same columns as :meth:`predict`; the unit of ``predicted_z`` is the audit's sd.
        """
        plan = run.plan.table.set_index("position")
        trained = np.asarray(run.plan.trained_positions, dtype=np.int64)
        if matrix.shape[0] != len(trained):
            raise ValueError(f"matrix has {matrix.shape[0]} rows for {len(trained)} trained pairs.")
        loss = dict(zip(np.asarray(run.shaped.positions).tolist(), run.shaped.dataset["margin"], strict=True))
        draws = np.maximum(
            plan.loc[trained, "draws"].to_numpy(dtype=np.float64), 1.0
        )  # -1: order not reproduced
        sign = np.where(plan.loc[trained, "flipped"].to_numpy(dtype=bool), -1.0, 1.0)
        omega = draws * shaping.gradient_weights(np.array([loss[i] for i in trained])) * sign
        raw = weighted_mean_delta(matrix.delta, omega)
        fids = list(core.feature_ids)
        index = {f: j for j, f in enumerate(fids)}
        for f in self.zeroed(list(run.shaped.ablate_features)):
            raw[index[f]] = 0.0
        w = np.zeros(len(fids))
        for f, v in run.weights.items():
            if f in index:  # a group's weight has no feature row (its members' signals move)
                w[index[f]] = v
        labels = [core.labels.get(f) or core.auto_labels.get(f, "") for f in fids]
        return prediction_table(fids, labels, w, raw, core.matrix.sd)
