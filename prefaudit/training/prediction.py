"""``session.predict(config=...)``: the prediction over the pairs a run trains on, in its window.

Example
-------
>>> pred = session.predict({"concept:flattery": -2}, config=DPORunConfig(max_length=64))  # doctest: +SKIP
>>> pred.attrs["plan"]["trained"]                                                        # doctest: +SKIP
120
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .plan import plan_training
from .window import window_matrix


def predict_in_window(
    core: Any,
    config: Any,
    weights: dict[Any, float] | None = None,
    *,
    features: Sequence[Any] | None = None,
) -> pd.DataFrame:
    """``core.predict`` over the pairs a run with ``config`` will train on, read in its window.

    The margins, the margin scale and sd are those of the trained pairs' window features, so the
    numbers describe the text the run sees. ``attrs["plan"]`` carries the plan's counts and
    ``attrs["positions"]`` the trained rows.
    """
    plan = plan_training(core, config)
    trained = plan.trained_positions
    matrix = window_matrix(core, plan.window, trained)
    out = core.predict(weights, features=features, matrix=matrix)
    out.attrs.update(plan=plan.counts(), positions=np.asarray(trained), window=dict(plan.window))
    return out
