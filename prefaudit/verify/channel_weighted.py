"""Importance-weighted generation: the trained policy's shift read from the base policy's own samples.

For base samples yᵢ ~ π_ref, wᵢ = π_θ(yᵢ)/π_ref(yᵢ) = exp(ρᵢ) turns base averages into
trained-policy averages: E_θ[x] − E_ref[x] ≈ Σ ŵᵢ xᵢ / n − Σ xᵢ / n with self-normalised
ŵᵢ = n·wᵢ / Σ wᵢ (so each sample contributes (ŵᵢ − 1)·xᵢ; the null flips that sign). Cheap — base
samples are cached per session and only teacher-forced scoring is new — but honest only while the
policy stays close to its reference: the effective sample size ESS = (Σw)² / Σw² collapses
towards 1 as ρ spreads. So the row is reported only when ESS ≥ :data:`MIN_ESS_FRACTION` of the
samples (fixed before any run was read), and its ``ess`` is in the row; the drift
(:func:`prefaudit.verify.drift.drift_summary`) reports the ESS whether or not the row is shown.
"""

from __future__ import annotations

import math

import numpy as np

from .channel_base import Channel, Observed, RunContext
from .channel_generation import generation_prediction
from .channel_registry import register
from .levels import Level

#: The row is shown only when the weights keep at least this share of the samples' information.
MIN_ESS_FRACTION = 0.5


def effective_sample_size(rho: np.ndarray) -> float:
    """(Σw)² / Σw² of w = exp(ρ) (computed stably); NaN for no samples."""
    rho = np.asarray(rho, dtype=np.float64)
    if not len(rho):
        return math.nan
    w = np.exp(rho - rho.max())
    return float(w.sum() ** 2 / (w @ w))


def normalised_weights(rho: np.ndarray) -> np.ndarray:
    """Self-normalised importance weights ŵ = n·w / Σw (mean 1) of w = exp(ρ)."""
    w = np.exp(np.asarray(rho, dtype=np.float64) - np.max(rho))
    return w * len(w) / w.sum()


@register
class WeightedGenerationChannel(Channel):
    """The generation shift estimated from base samples reweighted by exp(ρ)."""

    name = "generation, importance-weighted"

    def observe(self, ctx: RunContext, level: Level) -> Observed | None:
        rho = ctx.weights_rho
        if rho is None or ctx.base_x is None or len(rho) < 2:
            return None
        ess = effective_sample_size(rho)
        if ess < MIN_ESS_FRACTION * len(rho):
            return None
        x = ctx.base_x[:, level.cols]
        sd = ctx.sd[level.cols]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = level.from_z(np.where(sd > 0, x / np.where(sd > 0, sd, 1.0), 0.0))

        def observe(units: np.ndarray, swap: np.ndarray) -> np.ndarray:
            w = normalised_weights(rho[units])
            contrib = (w - 1.0)[:, None] * z[units]
            return np.where(swap[:, None], -contrib, contrib).mean(axis=0)

        return Observed(len(rho), observe, ess=ess)

    def predict(self, ctx: RunContext, level: Level) -> np.ndarray:
        return generation_prediction(ctx, level)
