"""``verify_run`` and ``compare_runs``: generate, read, and compare observed with predicted shifts."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..generation import SamplingConfig, generate_texts
from ..interventions import get as get_intervention
from .checks import check_run, verification_prompts
from .observe import observed_delta
from .policies import base_dtype, base_policy
from .result import RunComparison, VerifyResult, agreement
from .rewards import base_cache, pair_rewards


def verify_run(
    session: Any,
    run: Any,
    prompts: Any = None,
    *,
    n_prompts: int = 32,
    n_features: int = 50,
    max_new_tokens: int = 64,
    temperature: float = 0.7,
    top_p: float = 0.9,
    repetition_penalty: float = 1.1,
    batch_size: int = 16,
    seed: int = 0,
    samples_per_prompt: int = 1,
    heldout_rewards: bool = True,
) -> VerifyResult:
    """Generate from base and trained policies and compare observed with predicted shifts.

    Parameters
    ----------
    session : AuditSession
    run : DPORun
        A finished (or cancelled) run.
    prompts : list of str or of message lists, optional
        Default: the prompts of the run's held-out pairs (first ``n_prompts``).
    n_features : int
        Features with the largest predicted |signal| analysed besides the weighted ones.
    max_new_tokens, temperature, top_p, repetition_penalty, batch_size, seed, samples_per_prompt
        Sampling (identical for both policies). ``temperature=0`` is greedy.
    heldout_rewards : bool
        Also score the run's held-out pairs with the DPO implicit reward (:func:`pair_rewards`).

    Returns
    -------
    VerifyResult (also stored on ``run.verification``)
    """
    check_run(run)
    settings = SamplingConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, repetition_penalty=repetition_penalty,
        batch_size=batch_size, seed=seed, samples_per_prompt=samples_per_prompt,
    )  # fmt: skip
    if not isinstance(n_features, int) or n_features < 0:
        raise ConfigError(f"n_features must be an integer >= 0, got {n_features!r}.")
    msgs = verification_prompts(session, run, prompts, n_prompts)
    msgs = [m for m in msgs for _ in range(settings.samples_per_prompt)]
    backbone = session.backbone
    base_model, base_ctx = base_policy(session, run)
    key = json.dumps([msgs, asdict(settings), base_dtype(session, run)], sort_keys=True)
    cache = base_cache(session)
    if key not in cache:
        with base_ctx:
            cache[key] = generate_texts(base_model, backbone, msgs, settings, strip=True)
    base = cache[key]
    trained = generate_texts(run.model, backbone, msgs, settings, strip=True)

    # The intervention says what this run should have learned (module docstring of the package).
    pred = get_intervention(run.shaped.intervention).predict(
        session, run.weights, threshold=run.shaped.threshold, ablated=run.shaped.ablate_features
    )
    obs_t, obs_b = observed_delta(session, msgs, trained, base)
    delta = (obs_t - obs_b).toarray()
    sd = pred["sd"].to_numpy()
    n = delta.shape[0]
    mean = delta.mean(axis=0)
    se = delta.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        obs_z = np.where(sd > 0, mean / sd, 0.0)
        se_z = np.where(sd > 0, se / sd, 0.0)
    feats = pred.assign(
        observed=mean,
        observed_z=obs_z,
        observed_se_z=se_z,
        base_mean=np.asarray(obs_b.mean(axis=0)).ravel(),
        trained_mean=np.asarray(obs_t.mean(axis=0)).ravel(),
    )
    feats["agree"] = np.sign(feats["predicted_z"]) == np.sign(feats["observed_z"])
    # Analysed set: what the person shaped, then the strongest predicted signals that vary at all.
    first = list(dict.fromkeys([*run.weights, *run.shaped.ablate_features]))
    index = {f: j for j, f in enumerate(feats["feature"])}
    ranked = np.argsort(-np.abs(feats["predicted_z"].to_numpy()), kind="stable")
    ranked = [j for j in ranked if sd[j] > 0 and feats["feature"].iloc[j] not in first][:n_features]
    rows = [index[f] for f in first if f in index] + ranked
    table = feats.iloc[rows][
        [
            "feature",
            "label",
            "weight",
            "predicted_z",
            "observed_z",
            "observed_se_z",
            "base_mean",
            "trained_mean",
            "agree",
        ]
    ].reset_index(drop=True)
    r, r2, sign, n_sign = agreement(table["predicted_z"].to_numpy(), table["observed_z"].to_numpy())
    result = VerifyResult(
        run_name=run.name,
        intervention=run.shaped.intervention,
        table=table,
        features=feats,
        r=r,
        r2=r2,
        sign_agreement=sign,
        n_features=len(table),
        n_sign=n_sign,
        n_prompts=n,
        generations=pd.DataFrame(
            {"prompt": [m[-1]["content"] if m else "" for m in msgs], "base": base, "trained": trained}
        ),
        settings=settings,
        weights=dict(run.weights),
        heldout=pair_rewards(session, run, batch_size=batch_size) if heldout_rewards else pd.DataFrame(),
        session=session,
    )
    run.verification = result
    return result


def _verified(session: Any, x: Any, kwargs: dict[str, Any]) -> VerifyResult:
    if isinstance(x, VerifyResult):
        return x
    if getattr(x, "verification", None) is not None and not kwargs:
        return x.verification
    return verify_run(session, x, **kwargs)


def compare_runs(session: Any, run_a: Any, run_b: Any, **kwargs: Any) -> RunComparison:
    """Verify (if needed) and compare two runs; keyword arguments go to :func:`verify_run`.

    Example
    -------
    >>> cmp = compare_runs(session, vanilla, shaped)   # doctest: +SKIP
    >>> cmp.table.set_index("feature").loc["concept:flattery", ["observed_z_a", "observed_z_b"]]  # doctest: +SKIP
    """
    a, b = _verified(session, run_a, kwargs), _verified(session, run_b, kwargs)
    cols = ["feature", "label", "predicted_z", "observed_z", "observed_se_z"]
    keep = list(dict.fromkeys([*a.table["feature"], *b.table["feature"]]))
    fa = a.features.set_index("feature").loc[keep].reset_index()[cols]
    fb = b.features.set_index("feature").loc[keep].reset_index()[cols]
    table = fa.merge(fb.drop(columns="label"), on="feature", suffixes=("_a", "_b"))
    table["difference"] = table["observed_z_b"] - table["observed_z_a"]
    summary = pd.DataFrame([{**a.summary(), "label": "a"}, {**b.summary(), "label": "b"}]).set_index("label")
    same = a.settings == b.settings and list(a.generations["prompt"]) == list(b.generations["prompt"])
    return RunComparison(summary=summary, table=table, a=a, b=b, same_prompts=same)
