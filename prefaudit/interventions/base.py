"""The interface every intervention implements: its rows, its prediction, its summary.

An intervention turns a person's weights into what trl trains on. Each one is a subclass of
:class:`Intervention` in its own module, registered with :func:`prefaudit.interventions.registry.register`;
:func:`prefaudit.interventions.shaped.shape_pairs` runs the common flow (weights → margins →
``rows`` → trl rows) and verification asks ``predict`` what the run should learn. A new
intervention is one file plus its registration.

Margins are those of the shaping preview: mᵢ = Σ_f wᶠ·Δᵢᶠ/sᶠ (``AuditCore.predict``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..errors import ConfigError
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
    """Mask of pairs the shaping dominates in the suppressing direction: mᵢ ≤ −τ."""
    if not threshold > 0:
        raise ConfigError(f"threshold must be > 0 (a margin in logit units), got {threshold!r}.")
    return np.asarray(margins) <= -float(threshold)


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

    def signal(self, core: Any, preview: pd.DataFrame, threshold: float, ablated: list[str]) -> np.ndarray:
        """Predicted learning signal per feature (raw units, ``feature_ids`` order).

        ``preview`` is ``core.predict(weights)``; the default is its σ(mᵢ)-weighted mean Δ
        (``signal_after``): at initialisation pair i's DPO gradient weight is σ(mᵢ).
        """
        return preview["signal_after"].to_numpy().copy()

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
    ) -> pd.DataFrame:
        """Predicted learning signal per feature for this intervention at ``weights``.

        Returns ``feature``, ``label``, ``weight``, ``predicted`` (raw), ``predicted_z`` (/sᶠ) and
        ``sd``, in ``core.feature_ids`` order — what verification compares the observed shift with.
        """
        pv = core.predict(weights)
        sd = pv["sd"].to_numpy()
        raw = self.signal(core, pv, threshold, list(ablated))
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
