"""The shaping change: predicted (b − a) against observed (b − a) reward loadings of two runs.

The math and the label-only baseline are in :mod:`prefaudit.verify.channels` (Shaping change).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..stats.agreement import standardized_covariance
from .channel_base import Channel, Observed, PairContext
from .channel_registry import register
from .channels import label_only_rho, predicted_loadings, response_features, reward_observer
from .levels import Level

#: Fewer shared held-out pairs than this: no row.
MIN_COMMON = 4


def common_positions(ctx: PairContext) -> np.ndarray:
    """Held-out positions both runs scored, sorted."""
    ha, hb = ctx.a.heldout, ctx.b.heldout
    if not len(ha) or not len(hb):
        return np.zeros(0, dtype=np.int64)
    return np.array(sorted(set(ha["position"]) & set(hb["position"])), dtype=np.int64)


def _rho(result: Any, common: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = result.heldout.set_index("position")
    return (
        h.loc[common, "reward_chosen"].to_numpy(dtype=np.float64) / result.beta,
        h.loc[common, "reward_rejected"].to_numpy(dtype=np.float64) / result.beta,
    )


def _held(ctx: PairContext, level: Level, common: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    key = f"held:{level.name}:{len(level.cols)}"
    if key not in ctx.extra:
        xc, xr = response_features(ctx.held_matrix(common), level.cols)
        ctx.extra[key] = (level.scores(xc), level.scores(xr))
    return ctx.extra[key]


def _prediction(result: Any, level: Level) -> np.ndarray:
    tc, tr = response_features(result.trained_matrix, level.cols)
    signal = level.scores(np.asarray(result.signal, dtype=np.float64)[level.cols][None, :])[0]
    return predicted_loadings(signal, level.scores(tc), level.scores(tr))


@register
class ShapingChangeChannel(Channel):
    """Run b's reward loadings minus run a's, on the held-out pairs both share."""

    name = "shaping change"
    runs = 2

    def observe(self, ctx: PairContext, level: Level) -> Observed | None:
        common = common_positions(ctx)
        if len(common) < MIN_COMMON:
            return None
        xc, xr = _held(ctx, level, common)
        rho = {"a": _rho(ctx.a, common), "b": _rho(ctx.b, common)}
        obs_a, obs_b = reward_observer(*rho["a"], xc, xr), reward_observer(*rho["b"], xc, xr)

        def observe(units: np.ndarray, swap: np.ndarray) -> np.ndarray:
            keep = np.zeros(len(units), dtype=bool)
            if not swap.any():
                return obs_b(units, keep) - obs_a(units, keep)
            # The null exchanges the two runs' ρ within a pair: then b − a carries no shaping effect.
            ra = [np.where(swap, rho["b"][i][units], rho["a"][i][units]) for i in (0, 1)]
            rb = [np.where(swap, rho["a"][i][units], rho["b"][i][units]) for i in (0, 1)]
            x = np.concatenate([xc[units], xr[units]])
            return standardized_covariance(np.concatenate(rb), x) - standardized_covariance(
                np.concatenate(ra), x
            )

        return Observed(len(common), observe)

    def predict(self, ctx: PairContext, level: Level) -> np.ndarray:
        return _prediction(ctx.b, level) - _prediction(ctx.a, level)

    def baseline(self, ctx: PairContext, level: Level) -> Observed | None:
        common = common_positions(ctx)
        if len(common) < MIN_COMMON:
            return None
        ma = np.subtract(*_rho(ctx.a, common)).mean()
        mb = np.subtract(*_rho(ctx.b, common)).mean()
        # Label-only runs differ only in how strongly they learned the labels: b − a ∝ ±(label loadings).
        sign = 1.0 if mb >= ma else -1.0
        xc, xr = _held(ctx, level, common)
        label = reward_observer(*label_only_rho(len(common)), xc, xr)
        return Observed(len(common), lambda units, swap: sign * label(units, swap))
