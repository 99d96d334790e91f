"""Reward channels: the implicit reward ρ of held-out responses, pooled and within pairs.

The math and the label-only baseline are in :mod:`prefaudit.verify.channels`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .channel_base import Channel, Observed, RunContext
from .channel_registry import register
from .channels import label_only_rho, margin_observer, predicted_loadings, response_features, reward_observer
from .levels import Level

#: Fewer held-out pairs than this: no reward rows (a loading needs a spread).
MIN_HELDOUT = 4


def held_scores(ctx: RunContext, level: Level) -> tuple[np.ndarray, np.ndarray]:
    """Unit values of the held-out chosen and rejected responses in the run's window (cached per level)."""
    key = f"held:{level.name}"
    if key not in ctx.cache:
        xc, xr = response_features(ctx.held_matrix, level.cols)
        ctx.cache[key] = (level.scores(xc), level.scores(xr))
    return ctx.cache[key]


def held_rho(ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
    """ρ = reward / β of the held-out chosen and rejected responses."""
    h = ctx.heldout
    return (
        h["reward_chosen"].to_numpy(dtype=np.float64) / ctx.beta,
        h["reward_rejected"].to_numpy(dtype=np.float64) / ctx.beta,
    )


def reward_prediction(ctx: RunContext, level: Level) -> np.ndarray:
    """ℓ̂ ∝ signal / sd_T per unit, over the pairs the run trained on (cached per level)."""
    key = f"pred:{level.name}"
    if key not in ctx.cache:
        tc, tr = response_features(ctx.trained_matrix, level.cols)
        signal = level.scores(np.asarray(ctx.signal, dtype=np.float64)[level.cols][None, :])[0]
        ctx.cache[key] = predicted_loadings(signal, level.scores(tc), level.scores(tr))
    return ctx.cache[key]


@register
class RewardChannel(Channel):
    """Loadings of ρ on the features of held-out responses (both sides pooled)."""

    name = "reward"

    def observe(self, ctx: RunContext, level: Level) -> Observed | None:
        if len(ctx.heldout) < MIN_HELDOUT:
            return None
        return Observed(len(ctx.heldout), reward_observer(*held_rho(ctx), *held_scores(ctx, level)))

    def predict(self, ctx: RunContext, level: Level) -> np.ndarray:
        return reward_prediction(ctx, level)

    def baseline(self, ctx: RunContext, level: Level) -> Observed:
        n = len(ctx.heldout)
        return Observed(n, reward_observer(*label_only_rho(n), *held_scores(ctx, level)))


@register
class WithinPairChannel(Channel):
    """Loadings of the held-out margin ρ(c) − ρ(r) on the pair's feature difference."""

    name = "reward, within pair"

    def observe(self, ctx: RunContext, level: Level) -> Observed | None:
        if len(ctx.heldout) < MIN_HELDOUT:
            return None
        return Observed(len(ctx.heldout), margin_observer(*held_rho(ctx), *held_scores(ctx, level)))

    def predict(self, ctx: RunContext, level: Level) -> np.ndarray:
        return reward_prediction(ctx, level)

    def baseline(self, ctx: Any, level: Level) -> float:
        # A label-only policy's margin is the same for every pair: its loadings are all 0.
        return 0.0
