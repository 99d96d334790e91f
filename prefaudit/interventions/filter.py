"""``filter``: dominated pairs (mᵢ ≤ −τ) are dropped; the prediction is the mean Δ of the rest."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .base import Intervention, RowPlan, dominated, weighted_mean_delta
from .registry import register


@register
class Filter(Intervention):
    name = "filter"

    def rows(self, core: Any, weights: dict[str, float], margins: np.ndarray, threshold: float) -> RowPlan:
        plan = RowPlan.unchanged(len(margins))
        plan.keep = ~dominated(margins, threshold)
        return plan

    def signal(
        self, core: Any, preview: pd.DataFrame, threshold: float, ablated: list[str], rows: np.ndarray | None
    ) -> np.ndarray:
        keep = (~dominated(np.asarray(preview.attrs["margins"]), threshold)).astype(np.float64)
        if rows is not None:
            return weighted_mean_delta(core, rows, keep[rows]) if keep[rows].any() else np.zeros(len(preview))
        return np.asarray(sp.csr_matrix(core.delta_matrix()).T @ keep).ravel() / max(keep.sum(), 1.0)

    def summary(self, shaped: Any, head: str) -> str:
        return f"{head}; dropped {len(shaped.dropped)} with m <= -{shaped.threshold:g}"
