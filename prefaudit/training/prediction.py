"""``session.predict(config=...)``: the prediction over the pairs a run trains on, in its window.

Example
-------
>>> pred = session.predict({"concept:flattery": -2}, config=DPORunConfig(max_length=64))  # doctest: +SKIP
>>> pred.attrs["plan"]["trained"]                                                        # doctest: +SKIP
120
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..features.matrix import FeatureMatrix
from .plan import plan_training
from .window import window_matrix

if TYPE_CHECKING:
    from ..audit.protocol import AuditState


def predict_in_window(
    core: AuditState,
    config: Any,
    weights: dict[Any, float] | None = None,
    *,
    features: Sequence[Any] | None = None,
) -> pd.DataFrame:
    """``core.shaping.preview(...).table`` over the pairs a run with ``config`` will train on, read in its window.

    The margins, the margin scale and sd are those of the trained pairs' window features, so the
    numbers describe the text the run sees. ``attrs["plan"]`` carries the plan's counts and
    ``attrs["positions"]`` the trained rows.
    """
    plan = plan_training(core, config)
    trained = plan.trained_positions
    matrix = person_flipped(window_matrix(core, plan.window, trained), core.edits.signs()[trained])
    out = core.shaping.preview(weights, features=features, matrix=matrix).table
    out.attrs.update(plan=plan.counts(), positions=np.asarray(trained), window=dict(plan.window))
    return out


def person_flipped(matrix: FeatureMatrix, signs: np.ndarray) -> FeatureMatrix:
    """``matrix`` with chosen and rejected swapped on the rows a person flipped (sign −1).

    Training swaps those pairs (``training.plan.shape_training_set``), so the prediction reads
    them swapped too; excluded pairs are not among the trained rows at all.
    """
    flip = np.asarray(signs) < 0
    if not flip.any():
        return matrix
    keep_d, flip_d = sp.diags((~flip).astype(np.float64)), sp.diags(flip.astype(np.float64))
    chosen = (keep_d @ matrix.chosen + flip_d @ matrix.rejected).tocsr()
    rejected = (keep_d @ matrix.rejected + flip_d @ matrix.chosen).tocsr()
    return FeatureMatrix(chosen, rejected)
