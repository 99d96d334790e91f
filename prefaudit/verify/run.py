"""``verify_run`` and ``compare_runs``: generate, read, and compare observed with predicted shifts."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from .. import ids
from ..errors import ConfigError
from ..generation import SamplingConfig, generate_texts
from ..interventions import get as get_intervention
from ..stats.agreement import AGREEMENT_COLUMNS
from ..training.window import window_matrix
from .channels import (
    N_RANDOM_FEATURES,
    evaluated_features,
    generation_channels,
    reward_channel,
    shaping_change_channel,
)
from .checks import check_run, verification_prompts
from .observe import observed_delta
from .policies import base_dtype, base_policy
from .result import RunComparison, VerifyResult, sign_agreement
from .rewards import base_cache, pair_rewards


def verify_run(
    session: Any,
    run: Any,
    prompts: Any = None,
    *,
    n_prompts: int = 32,
    n_features: int = N_RANDOM_FEATURES,
    max_new_tokens: int = 64,
    temperature: float = 0.7,
    top_p: float = 0.9,
    repetition_penalty: float = 1.1,
    batch_size: int = 16,
    seed: int = 0,
    samples_per_prompt: int = 1,
    heldout_rewards: bool = True,
    n_boot: int = 500,
    n_null: int = 500,
) -> VerifyResult:
    """Observe what the run learned through every channel and compare it with the audit's prediction.

    Parameters
    ----------
    session : AuditSession
    run : DPORun
        A finished (or cancelled) run.
    prompts : list of str or of message lists, optional
        Default: the prompts of the run's held-out pairs (first ``n_prompts``).
    n_features : int
        Features drawn at random (seeded by ``seed``) into the evaluated set besides every
        q < ALPHA feature and the weighted ones — fixed before anything is observed.
    max_new_tokens, temperature, top_p, repetition_penalty, batch_size, seed, samples_per_prompt
        Sampling (identical for both policies). ``temperature=0`` is greedy.
    heldout_rewards : bool
        Score the run's held-out pairs with the DPO implicit reward (the reward channel).
    n_boot, n_null : int
        Resamples for the bootstrap CIs and the nulls (:func:`prefaudit.stats.agreement.agreement_row`).

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
    # Decided from the audit alone, before a single token is generated or scored.
    trained = trained_positions(run)
    cols = evaluated_features(
        # A weighted group enters by its members (the evaluated features are feature columns).
        session,
        [*session.weighted_features(run.weights), *run.shaped.ablate_features],
        n_random=n_features,
        seed=seed,
    )
    # The trained pairs read in the run's window: the text the prediction is about.
    trained_matrix = window_matrix(session, run.plan.window, trained)
    # The intervention says what this run should have learned from exactly what it trained on.
    pred = get_intervention(run.shaped.intervention).predict_run(session, run, trained_matrix)

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
    trained_texts = generate_texts(run.model, backbone, msgs, settings, strip=True)

    obs_t, obs_b = observed_delta(session, msgs, trained_texts, base)
    delta = (obs_t - obs_b).toarray()
    sd = pred["sd"].to_numpy()
    n = delta.shape[0]
    mean = delta.mean(axis=0)
    se = delta.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        obs_z = np.where(sd > 0, mean / sd, 0.0)
        se_z = np.where(sd > 0, se / sd, 0.0)
        delta_z = np.where(sd > 0, delta / np.where(sd > 0, sd, 1.0), 0.0)
    feats = pred.assign(
        observed=mean,
        observed_z=obs_z,
        observed_se_z=se_z,
        base_mean=np.asarray(obs_b.mean(axis=0)).ravel(),
        trained_mean=np.asarray(obs_t.mean(axis=0)).ravel(),
    )
    feats["agree"] = (np.sign(feats["predicted_z"]) == np.sign(feats["observed_z"])) & (
        feats["observed_z"] != 0
    )

    resampling = {"n_boot": n_boot, "n_null": n_null, "seed": seed}
    fids = [session.feature_ids[j] for j in cols]
    lengths = np.array([len(t.split()) for t in trained_texts]) - np.array([len(t.split()) for t in base])
    not_length = np.array([f != ids.concept_id("length") for f in fids])
    rows = list(
        generation_channels(
            delta_z[:, cols], lengths.astype(np.float64), obs_pred(pred, cols), not_length, **resampling
        )
    )
    heldout = pair_rewards(session, run, batch_size=batch_size) if heldout_rewards else pd.DataFrame()
    table = feats.iloc[cols][list(TABLE_COLUMNS)].reset_index(drop=True)
    table["predicted_loading"] = np.nan
    table["observed_loading"] = np.nan
    if len(heldout) >= 4:
        held = window_matrix(session, run.plan.window, heldout["position"].to_numpy())
        row, p_load, o_load = reward_channel(
            heldout,
            float(run.config.beta),
            pred["predicted"].to_numpy(),
            trained_matrix,
            held,
            cols,
            **resampling,
        )
        rows.insert(0, row)
        table["predicted_loading"], table["observed_loading"] = p_load, o_load
    agreement = pd.DataFrame([r.to_dict() for r in rows], columns=list(AGREEMENT_COLUMNS))
    head = agreement.iloc[0]
    sign, n_sign = sign_agreement(table["predicted_z"].to_numpy(), table["observed_z"].to_numpy())
    result = VerifyResult(
        run_name=run.name,
        intervention=run.shaped.intervention,
        table=table,
        features=feats,
        r=float(head["r"]),
        r2=float(head["r2"]),
        sign_agreement=sign,
        n_features=len(table),
        n_sign=n_sign,
        n_prompts=n,
        generations=pd.DataFrame(
            {"prompt": [m[-1]["content"] if m else "" for m in msgs], "base": base, "trained": trained_texts}
        ),
        settings=settings,
        weights=dict(run.weights),
        heldout=heldout,
        agreement=agreement,
        beta=float(run.config.beta),
        signal=pred["predicted"].to_numpy(),
        trained=trained,
        trained_matrix=trained_matrix,
        window=dict(run.plan.window),
        columns=cols,
        session=session,
    )
    run.verification = result
    return result


TABLE_COLUMNS = (
    "feature", "label", "weight", "predicted_z", "observed_z", "observed_se_z", "base_mean", "trained_mean", "agree",
)  # fmt: skip


def obs_pred(pred: pd.DataFrame, cols: np.ndarray) -> np.ndarray:
    """The generation channel's prediction on F: the intervention's standardised signal."""
    return pred["predicted_z"].to_numpy()[cols]


def trained_positions(run: Any) -> np.ndarray:
    """Rows of the audit the run's plan trains on: drawn by the sampler, not held out, dropped or filtered."""
    return np.asarray(run.plan.trained_positions, dtype=np.int64)


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
    rows = [a.agreement.assign(run=a.run_name), b.agreement.assign(run=b.run_name)]
    cols = np.union1d(a.columns, b.columns)
    change = shaping_change_channel(
        a, b, cols, lambda positions: window_matrix(session, a.window, positions), seed=a.settings.seed
    )
    if change is not None:
        rows.append(pd.DataFrame([change.to_dict()]).assign(run=f"{b.run_name} − {a.run_name}"))
    agreement = pd.concat(rows, ignore_index=True)
    return RunComparison(summary=summary, table=table, a=a, b=b, same_prompts=same, agreement=agreement)
