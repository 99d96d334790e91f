"""``margin``: mᵢ enters the Bradley–Terry logit, loss −log σ(β·hᵢ − mᵢ) (``ShapedDPOTrainer``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .base import Intervention, RowPlan, dominated
from .registry import register

if TYPE_CHECKING:
    from ..audit.protocol import AuditState


@register
class Margin(Intervention):
    name = "margin"
    margin_in_loss = True

    def rows(
        self, core: AuditState, weights: dict[str, float], margins: np.ndarray, threshold: float
    ) -> RowPlan:
        plan = RowPlan.unchanged(len(margins))
        plan.loss_margin = np.asarray(margins, dtype=np.float64)
        return plan

    def summary(self, shaped: Any, head: str) -> str:
        # The same pairs the preview calls dominated (and filter would drop): m <= -τ.
        n = int(dominated(shaped.margins, shaped.threshold).sum())
        return f"{head}, {n} with m <= -{shaped.threshold:g}"
