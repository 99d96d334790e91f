"""``flip``: dominated pairs (mᵢ ≤ −τ) have chosen and rejected swapped; the prediction flips their Δ."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .base import Intervention, RowPlan, dominated, weighted_mean_delta
from .registry import register


@register
class Flip(Intervention):
    name = "flip"

    def rows(self, core: Any, weights: dict[str, float], margins: np.ndarray, threshold: float) -> RowPlan:
        plan = RowPlan.unchanged(len(margins))
        plan.swap = dominated(margins, threshold)
        return plan

    def signal(
        self, core: Any, preview: pd.DataFrame, threshold: float, ablated: list[str], rows: np.ndarray | None
    ) -> np.ndarray:
        sign = np.where(dominated(np.asarray(preview.attrs["margins"]), threshold), -1.0, 1.0)
        if rows is not None:
            return weighted_mean_delta(core, rows, sign[rows])
        return np.asarray(sp.csr_matrix(core.delta_matrix()).T @ sign).ravel() / len(sign)

    def summary(self, shaped: Any, head: str) -> str:
        return f"{head}; flipped {len(shaped.flipped)} with m <= -{shaped.threshold:g}"
