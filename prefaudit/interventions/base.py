"""The interface every intervention implements: its rows, its prediction, its summary.

An intervention turns a person's weights into what trl trains on. Each one is a subclass of
:class:`Intervention` in its own module, registered with :func:`prefaudit.interventions.registry.register`;
:func:`prefaudit.interventions.shaped.shape_pairs` runs the common flow (weights → margins →
``rows`` → trl rows) and verification asks ``predict`` what the run should learn. A new
intervention is one file plus its registration.

Margins are those of the shaping preview (``AuditCore.predict``): mᵢ = clip(Σ_f wᶠ·Δᵢᶠ/sᶠ, ±4) with
the margin scale sᶠ of :func:`prefaudit.shaping.margin_scale`. "Dominated" has one definition,
:func:`prefaudit.shaping.dominated` (mᵢ ≤ −τ), shared by ``filter``, ``flip`` and the preview.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import shaping
from ..shaping import DOMINANCE_THRESHOLD


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


def weighted_mean_delta(core: Any, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σᵢ ωᵢ·Δᵢ / Σᵢ ωᵢ over ``rows`` of the audit's Δ (signed ω flips a pair; 0 drops it)."""
    delta = sp.csr_matrix(core.delta_matrix())[rows]
    total = float(np.sum(np.abs(weights)))
    return np.asarray(delta.T @ np.asarray(weights, dtype=np.float64)).ravel() / max(total, 1e-300)


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

    def rows(self, core: Any, weights: dict[str, float], margins: np.ndarray, threshold: float) -> RowPlan:
        """Which of the requested pairs are kept or swapped, their loss margins and sampling weights."""
        return RowPlan.unchanged(len(margins))

    def signal(
        self, core: Any, preview: pd.DataFrame, threshold: float, ablated: list[str], rows: np.ndarray | None
    ) -> np.ndarray:
        """Predicted learning signal per feature (raw units, ``feature_ids`` order).

        ``preview`` is ``core.predict(weights)``; ``rows`` the pairs trained on (``None``: all).
        The default is the σ(mᵢ)-weighted mean Δ over those pairs: at initialisation pair i's DPO
        gradient weight is σ(mᵢ) (over all pairs this is the preview's ``signal_after``).
        """
        if rows is None:
            return preview["signal_after"].to_numpy().copy()
        return weighted_mean_delta(core, rows, np.asarray(preview.attrs["gradient_weight"])[rows])

    def summary(self, shaped: Any, head: str) -> str:
        """One line a person can read; ``head`` already says the intervention and the pair count."""
        return head

    def predict(
        self,
        core: Any,
        weights: dict[str, float],
        *,
        threshold: float = DOMINANCE_THRESHOLD,
        ablated: Any = (),
        positions: Any = None,
    ) -> pd.DataFrame:
        """Predicted learning signal per feature for this intervention at ``weights``.

        ``positions``: the pairs the run trains on (default: every pair of the audit). Margins and
        the unit sᶠ are those of the whole audit, as in the preview. Returns ``feature``,
        ``label``, ``weight``, ``predicted`` (raw), ``predicted_z`` (/sᶠ) and ``sd``, in
        ``core.feature_ids`` order — what verification compares the observed shift with.
        """
        pv = core.predict(weights)
        sd = pv["sd"].to_numpy()
        rows = None if positions is None else np.asarray(positions, dtype=np.int64)
        raw = self.signal(core, pv, threshold, list(ablated), rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(sd > 0, raw / sd, 0.0)
        return pd.DataFrame(
            {
                "feature": pv["feature"],
                "label": pv["label"],
                "weight": pv["weight"],
                "predicted": raw,
                "predicted_z": z,
                "sd": sd,
            }
        )
