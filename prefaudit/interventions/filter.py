"""``filter``: dominated pairs (mᵢ ≤ −τ) are dropped; the prediction is the mean Δ of the rest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .base import Intervention, RowPlan, dominated
from .registry import register

if TYPE_CHECKING:
    from ..audit.protocol import AuditState
    from ..audit.shaping import Preview


@register
class Filter(Intervention):
    name = "filter"

    def rows(
        self, core: AuditState, weights: dict[str, float], margins: np.ndarray, threshold: float
    ) -> RowPlan:
        plan = RowPlan.unchanged(len(margins))
        plan.keep = ~dominated(margins, threshold)
        return plan

    def pair_weights(self, preview: Preview, threshold: float) -> np.ndarray:
        # Dropped pairs teach nothing; the rest are learned as in plain DPO.
        return (~dominated(np.asarray(preview.margins), threshold)).astype(np.float64)

    def summary(self, shaped: Any, head: str) -> str:
        return f"{head}; dropped {len(shaped.dropped)} with m <= -{shaped.threshold:g}"
