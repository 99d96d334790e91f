"""How far the trained policy drifted from its reference: ρ on held-out responses, KL on held-out prompts.

* **ρ on held-out responses** — ρ = log π_θ − log π_ref of the held-out chosen and rejected
  responses (teacher-forced in the run's window, :func:`~prefaudit.verify.rewards.pair_rewards`):
  mean, sd, min and max over both sides.
* **KL on held-out prompts** — the mean of ρ over the trained policy's own samples on the
  verification prompts, with its standard error: the Monte-Carlo estimate of
  KL(π_θ ‖ π_ref) over the first ``max_new_tokens`` tokens. Exact in expectation only for
  samples drawn at temperature 1 without top-p or a repetition penalty; at the verification's
  sampling settings it is the mean log-ratio on what the policy actually writes (stated beside
  the figure). The samples are re-tokenised from their text.
* **ESS of base samples** — the effective sample size (Σw)²/Σw² of w = exp(ρ) over the base
  policy's samples: how much importance weighting of cached base samples could add
  (:mod:`prefaudit.verify.channel_weighted`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .channel_weighted import effective_sample_size
from .policies import base_dtype, base_policy
from .rewards import base_cache, response_logps

#: Keys of :func:`drift_summary`, in order.
DRIFT_KEYS: tuple[str, ...] = (
    "rho_mean",
    "rho_sd",
    "rho_min",
    "rho_max",
    "kl",
    "kl_se",
    "ess",
    "ess_fraction",
    "n_samples",
)


def sample_logps(
    model: Any, backbone: Any, msgs: Sequence[Any], texts: Sequence[str], batch_size: int
) -> np.ndarray:
    """Summed log-probs of each generated text after its prompt (texts re-tokenised, no special tokens)."""
    prompts = [backbone.prompt_ids(m) for m in msgs]
    responses = [backbone.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    return response_logps(model, backbone, prompts, responses, batch_size)


def sample_rho(
    session: Any,
    run: Any,
    msgs: Sequence[Any],
    trained: Sequence[str],
    base: Sequence[str],
    batch_size: int,
    key: str,
) -> tuple[np.ndarray, np.ndarray]:
    """ρ of the trained samples and of the base samples (the base policy's log-probs of its own samples cached)."""
    bb = session.backbone
    was_training = run.model.training
    run.model.eval()
    try:
        t_theta = sample_logps(run.model, bb, msgs, trained, batch_size)
        b_theta = sample_logps(run.model, bb, msgs, base, batch_size)
        model, ctx = base_policy(session, run)
        with ctx:
            t_ref = sample_logps(model, bb, msgs, trained, batch_size)
        cache = base_cache(session)
        ckey = json.dumps(["base-sample-logps", key, base_dtype(session, run)])
        if ckey not in cache:
            model, ctx = base_policy(session, run)
            with ctx:
                cache[ckey] = sample_logps(model, bb, msgs, base, batch_size)
        b_ref = cache[ckey]
    finally:
        run.model.train(was_training)
    return t_theta - t_ref, b_theta - b_ref


def drift_summary(
    heldout: pd.DataFrame, beta: float, rho_trained: np.ndarray | None, rho_base: np.ndarray | None
) -> dict[str, float]:
    """The figures of the module docstring (NaN for what was not read)."""
    out = dict.fromkeys(DRIFT_KEYS, math.nan)
    if len(heldout):
        rho = np.concatenate([heldout["reward_chosen"], heldout["reward_rejected"]]).astype(np.float64) / beta
        out["rho_mean"], out["rho_min"], out["rho_max"] = (
            float(rho.mean()),
            float(rho.min()),
            float(rho.max()),
        )
        out["rho_sd"] = float(rho.std(ddof=1)) if len(rho) > 1 else math.nan
    if rho_trained is not None and len(rho_trained):
        n = len(rho_trained)
        out["kl"] = float(np.mean(rho_trained))
        out["kl_se"] = float(np.std(rho_trained, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    if rho_base is not None and len(rho_base):
        out["ess"] = effective_sample_size(rho_base)
        out["n_samples"] = float(len(rho_base))
        out["ess_fraction"] = out["ess"] / len(rho_base)
    return out
