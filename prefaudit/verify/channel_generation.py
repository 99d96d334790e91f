"""Generation channels: the shift of every unit in the policy's own samples, plain and length-adjusted.

The math is in :mod:`prefaudit.verify.channels` (section Generation).
"""

from __future__ import annotations

import numpy as np

from .channel_base import Channel, Observed, RunContext
from .channel_registry import register
from .channels import length_adjusted_mean
from .levels import Level

#: Fewer samples than this: no generation rows.
MIN_SAMPLES = 2


def sample_shifts(ctx: RunContext, level: Level) -> np.ndarray:
    """Per-sample trained − base values of the level's units, in the audit's sd (cached per level)."""
    key = f"gen:{level.name}"
    if key not in ctx.cache:
        d = ctx.delta[:, level.cols]
        sd = ctx.sd[level.cols]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(sd > 0, d / np.where(sd > 0, sd, 1.0), 0.0)
        ctx.cache[key] = level.from_z(z)
    return ctx.cache[key]


def generation_prediction(ctx: RunContext, level: Level) -> np.ndarray:
    """The intervention's standardised signal on the level's units."""
    return level.from_z(np.asarray(ctx.pred_z, dtype=np.float64)[level.cols][None, :])[0]


def not_length(ctx: RunContext, level: Level) -> np.ndarray:
    """Units kept by the length-adjusted row: all but the ``length`` concept itself."""
    if level.mean is not None or ctx.length_column is None:
        return np.ones(level.n_units, dtype=bool)
    return level.cols != ctx.length_column


@register
class GenerationChannel(Channel):
    """Mean standardised shift per unit, trained − base samples on the same prompts and seed."""

    name = "generation"

    def observe(self, ctx: RunContext, level: Level) -> Observed | None:
        d = sample_shifts(ctx, level)
        if d.shape[0] < MIN_SAMPLES:
            return None

        def observe(units: np.ndarray, swap: np.ndarray) -> np.ndarray:
            x = d[units]
            return np.where(swap[:, None], -x, x).mean(axis=0)

        return Observed(d.shape[0], observe)

    def predict(self, ctx: RunContext, level: Level) -> np.ndarray:
        return generation_prediction(ctx, level)


@register
class LengthAdjustedChannel(Channel):
    """The shift at zero length difference: intercept of each unit's shift on the word-length change."""

    name = "generation, length-adjusted"

    def observe(self, ctx: RunContext, level: Level) -> Observed | None:
        d = sample_shifts(ctx, level)
        if d.shape[0] < MIN_SAMPLES:
            return None
        keep = not_length(ctx, level)
        dlen = ctx.dlen

        def observe(units: np.ndarray, swap: np.ndarray) -> np.ndarray:
            sign = np.where(swap, -1.0, 1.0)
            return length_adjusted_mean(d[units][:, keep] * sign[:, None], dlen[units] * sign)

        return Observed(d.shape[0], observe)

    def predict(self, ctx: RunContext, level: Level) -> np.ndarray:
        return generation_prediction(ctx, level)[not_length(ctx, level)]
