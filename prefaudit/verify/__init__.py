"""Verify a run: did the trained policy learn what the audit predicted, and how sure can we be?

The prediction is the learning signal of the run's intervention at the run's weights, over the
pairs the run trained on (``prefaudit.interventions.get(name).predict(..., positions=...)``):

* ``margin``, ``reweight``, ``none``: the σ(mᵢ)-weighted mean Δ (reweighting samples pairs ∝ σ(mᵢ),
  the same expectation);
* ``filter`` / ``flip``: the mean Δ with dominated pairs (mᵢ ≤ −τ) dropped / sign-flipped;
* ``ablate``: the vanilla signal with the ablated features' prediction set to 0 (their direction
  is removed while training) — an approximation: correlated features are not modelled.

What was learned is observed through channels (:mod:`prefaudit.verify.channels`, where the math
is written out; each a registered class, :mod:`prefaudit.verify.channel_registry`): the **reward**
channel (the implicit reward ρ = log π_θ − log π_ref of held-out responses, teacher-forced; its
loading on each feature) and its **within-pair** reading (the margin's loading on Δ), the
**generation** channel (base and trained policies sample from the same held-out prompts with the
same seed, and the generations are read exactly as the audit reads responses; plus a
length-adjusted row, and an importance-weighted one where the policy stays close to its
reference) and, for two runs, the **shaping change** (b − a). Each channel gives one row of
``result.agreement`` per level — single features and the audit's feature clusters
(:mod:`prefaudit.verify.levels`) —: r with a bootstrap 95% CI, R² through the origin, a null
interval, a split-half ceiling, and beside every reward row the r a policy knowing only the
labels would reach. The units are fixed from the audit before anything is observed (every
q < ALPHA feature, a seeded random sample of the rest, and the weighted features; every cluster).
``result.planted`` gives the planted concepts' rates in the generations (:mod:`prefaudit.verify.planted`)
and ``result.drift`` how far the policy moved from its reference (:mod:`prefaudit.verify.drift`).
``docs/LOOP.md`` says how to read all of it.

Example
-------
>>> result = session.verify(run)                   # doctest: +SKIP
>>> result.agreement[["channel", "r", "r_low", "r_high", "null_low", "null_high"]]  # doctest: +SKIP
>>> result.shift("flattery")                       # observed, standardised   # doctest: +SKIP
0.41
>>> session.compare(vanilla, shaped)               # table + plot             # doctest: +SKIP
"""

from __future__ import annotations

from .observe import observed_delta
from .result import RunComparison, VerifyResult, sign_agreement, sign_chance
from .rewards import pair_rewards
from .run import compare_runs, verify_run

__all__ = [
    "RunComparison",
    "VerifyResult",
    "compare_runs",
    "observed_delta",
    "pair_rewards",
    "sign_agreement",
    "sign_chance",
    "verify_run",
]
