"""``reweight``: pair i is sampled with probability ∝ ωᵢ = σ(mᵢ) / mean σ(m).

Sampling ∝ σ(mᵢ) has the same expected gradient as the margin's initial weighting, so its
prediction is the default σ(mᵢ)-weighted mean Δ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..shaping import gradient_weights
from .base import Intervention, RowPlan
from .registry import register

if TYPE_CHECKING:
    from ..audit.protocol import AuditState


@register
class Reweight(Intervention):
    name = "reweight"

    def rows(
        self, core: AuditState, weights: dict[str, float], margins: np.ndarray, threshold: float
    ) -> RowPlan:
        plan = RowPlan.unchanged(len(margins))
        g = gradient_weights(margins)
        plan.sample_weight = g / g.mean()
        return plan

    def summary(self, shaped: Any, head: str) -> str:
        w = shaped.sample_weights
        return f"{head}, sampling weights {w.min():.2f}..{w.max():.2f} (mean 1)" if len(w) else head
