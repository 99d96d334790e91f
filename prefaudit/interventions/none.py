"""``none``: plain DPO (the vanilla run goes through the same code as a shaped one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from .base import Intervention
from .registry import register

if TYPE_CHECKING:
    from ..audit.protocol import AuditState


@register
class NoIntervention(Intervention):
    name = "none"

    def predict(
        self,
        core: AuditState,
        weights: dict[str, float],
        *,
        threshold: float = 1.0,
        ablated: Any = (),
        positions: Any = None,
        delta: Any = None,
    ) -> pd.DataFrame:
        # Plain DPO ignores any weights: its prediction is the unweighted mean Δ.
        return super().predict(
            core, {}, threshold=threshold, ablated=ablated, positions=positions, delta=delta
        )
