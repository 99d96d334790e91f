"""``flip``: dominated pairs (mᵢ ≤ −τ) have chosen and rejected swapped; the prediction flips their Δ."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .base import Intervention, RowPlan, dominated
from .registry import register

if TYPE_CHECKING:
    from ..audit.protocol import AuditState
    from ..audit.shaping import Preview


@register
class Flip(Intervention):
    name = "flip"

    def rows(
        self, core: AuditState, weights: dict[str, float], margins: np.ndarray, threshold: float
    ) -> RowPlan:
        plan = RowPlan.unchanged(len(margins))
        plan.swap = dominated(margins, threshold)
        return plan

    def pair_weights(self, preview: Preview, threshold: float) -> np.ndarray:
        # A swapped pair teaches its Δ with the opposite sign.
        return np.where(dominated(np.asarray(preview.margins), threshold), -1.0, 1.0)

    def summary(self, shaped: Any, head: str) -> str:
        return f"{head}; flipped {len(shaped.flipped)} with m <= -{shaped.threshold:g}"
