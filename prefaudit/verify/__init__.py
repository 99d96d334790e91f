"""Verify a run: did the trained policy move the features the shaping said it would?

``verify_run`` generates from the base and the trained policy on the same held-out prompts (same
seed, same sampling — so the two samples are coupled and differ only where the policies do),
reads both generations through the session's model, SAE and text concepts exactly as the audit
reads responses, and treats each prompt's (trained, base) generations as a pair: the observed
shift of feature f is the mean over prompts of pooled(trained) − pooled(base), standardised by
the audit's sᶠ = sd(Δᶠ), the unit of the prediction.

The prediction is the learning signal of the run's intervention at the run's weights, over the
session's pairs (the same numbers the shaping preview shows):

The intervention supplies it (``prefaudit.interventions.get(name).predict``):

* ``margin``, ``reweight``, ``none``: ``session.predict(run.weights)["signal_after_z"]``
  (σ(mᵢ)-weighted mean Δ; reweighting samples pairs ∝ σ(mᵢ), the same expectation);
* ``filter`` / ``flip``: the mean Δ with dominated pairs (mᵢ ≤ −τ) dropped / sign-flipped;
* ``ablate``: the vanilla signal with the ablated features' prediction set to 0 (their direction
  is removed while training) — an approximation: correlated features are not modelled.

Agreement is measured on the weighted and ablated features plus the ``n_features`` features with
the largest predicted |signal| (among features that vary in the audit): Pearson r, R² (= r², of the
best linear fit — the prediction is in data units, not in units of a training budget) and sign
agreement (features where both are non-zero).

Example
-------
>>> result = session.verify(run)                   # doctest: +SKIP
>>> result.r, result.sign_agreement                # doctest: +SKIP
(0.62, 0.8)
>>> result.shift("flattery")                       # observed, standardised   # doctest: +SKIP
0.41
>>> session.compare(vanilla, shaped)               # table + plot             # doctest: +SKIP
"""

from __future__ import annotations

from .observe import observed_delta
from .result import RunComparison, VerifyResult, agreement
from .rewards import pair_rewards
from .run import compare_runs, verify_run

__all__ = [
    "RunComparison",
    "VerifyResult",
    "agreement",
    "compare_runs",
    "observed_delta",
    "pair_rewards",
    "verify_run",
]
