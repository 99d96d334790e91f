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
from ..training.window import window_matrix
from . import channel_registry
from .channel_base import PairContext, RunContext, agreement_table
from .channel_generation import generation_prediction, sample_shifts
from .channel_reward import MIN_HELDOUT, held_rho, held_scores, reward_prediction
from .channels import N_RANDOM_FEATURES, evaluated_features, reward_observer
from .checks import check_run, verification_prompts
from .drift import drift_summary, sample_rho
from .levels import Level, feature_level, run_levels
from .observe import observed_delta
from .planted import planted_rates
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
    max_new_tokens: int | str = 64,
    temperature: float = 0.7,
    top_p: float = 0.9,
    repetition_penalty: float = 1.1,
    batch_size: int = 16,
    seed: int = 0,
    samples_per_prompt: int = 1,
    heldout_rewards: bool = True,
    clusters: bool = True,
    drift: bool = True,
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
        Sampling (identical for both policies). ``temperature=0`` is greedy. ``max_new_tokens="window"``
        generates as many tokens as the run's training window keeps of a response whose prompt
        fills its share (``max_length − max_prompt_length``): the generations are then read in the
        same window as the prediction.
    heldout_rewards : bool
        Score the run's held-out pairs with the DPO implicit reward (the reward channels).
    clusters : bool
        Also report every channel over the audit's feature clusters (:mod:`prefaudit.verify.levels`).
    drift : bool
        Score both policies' samples under both policies: the KL estimate, the effective sample
        size of importance weights, and the importance-weighted row where it applies
        (:mod:`prefaudit.verify.drift`).
    n_boot, n_null : int
        Resamples for the bootstrap CIs and the nulls (:func:`prefaudit.stats.agreement.agreement_row`).

    Returns
    -------
    VerifyResult (also stored on ``run.verification``)
    """
    check_run(run)
    if max_new_tokens == "window":
        # The response tokens the run's window keeps when the prompt fills its share: the prediction's text.
        max_new_tokens = int(run.plan.window["max_length"]) - int(run.plan.window["max_prompt_length"])
    settings = SamplingConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        batch_size=batch_size,
        seed=seed,
        samples_per_prompt=samples_per_prompt,
    )
    if not isinstance(n_features, int) or n_features < 0:
        raise ConfigError(f"n_features must be an integer >= 0, got {n_features!r}.")
    # Decided from the audit alone, before a single token is generated or scored.
    trained = trained_positions(run)
    cols = evaluated_features(
        # A weighted group enters by its members (the evaluated features are feature columns).
        session,
        [*session.shaping.weighted_features(run.weights), *run.shaped.ablate_features],
        n_random=n_features,
        seed=seed,
    )
    levels = run_levels(session, cols) if clusters else {"feature": feature_level(session, cols)}
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

    heldout = pair_rewards(session, run, batch_size=batch_size) if heldout_rewards else pd.DataFrame()
    held = (
        window_matrix(session, run.plan.window, heldout["position"].to_numpy())
        if len(heldout) >= MIN_HELDOUT
        else None
    )
    rho_t = rho_b = None
    if drift and n:
        rho_t, rho_b = sample_rho(session, run, msgs, trained_texts, base, batch_size, key)
    lengths = np.array([len(t.split()) for t in trained_texts]) - np.array([len(t.split()) for t in base])
    length_id = ids.concept_id("length")
    ctx = RunContext(
        session=session,
        levels=levels,
        signal=pred["predicted"].to_numpy(),
        pred_z=pred["predicted_z"].to_numpy(),
        sd=sd,
        trained_matrix=trained_matrix,
        beta=float(run.config.beta),
        heldout=heldout if held is not None else heldout.iloc[:0],
        held_matrix=held,
        delta=delta,
        dlen=lengths.astype(np.float64),
        length_column=session.space.column(length_id) if length_id in session.feature_ids else None,
        base_x=obs_b.toarray() if rho_b is not None else None,
        weights_rho=rho_b,
    )
    resampling = {"n_boot": n_boot, "n_null": n_null, "seed": seed}
    rows = [
        row
        for name in channel_registry.names(runs=1)
        for row in channel_registry.get(name).rows(ctx, **resampling)
    ]
    agreement = agreement_table(rows)

    table = feats.iloc[cols][list(TABLE_COLUMNS)].reset_index(drop=True)
    table["predicted_loading"], table["observed_loading"] = loadings(ctx, levels["feature"])
    head = headline_row(agreement)
    sign, n_sign = sign_agreement(table["predicted_z"].to_numpy(), table["observed_z"].to_numpy())
    result = VerifyResult(
        run_name=run.name,
        intervention=run.shaped.intervention,
        table=table,
        features=feats,
        r=float(head.get("r", math.nan)),
        r2=float(head.get("r2", math.nan)),
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
        levels=levels,
        clusters=cluster_table(session, ctx, levels.get("cluster")),
        planted=planted_rates(session, levels.get("cluster"), obs_t, obs_b),
        drift=drift_summary(heldout, float(run.config.beta), rho_t, rho_b),
    )
    run.verification = result
    return result


def headline_row(agreement: pd.DataFrame) -> dict[str, Any]:
    """The feature-level reward row, else the feature-level generation row (as a dict; empty if none)."""
    for channel in ("reward", "generation"):
        hit = agreement[(agreement["channel"] == channel) & (agreement["level"] == "feature")]
        if len(hit):
            return hit.iloc[0].to_dict()
    return {}


def loadings(ctx: RunContext, level: Level) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and observed reward loadings on the level's units (NaN without held-out rewards)."""
    if ctx.held_matrix is None or not len(ctx.heldout):
        nan = np.full(level.n_units, np.nan)
        return nan, nan.copy()
    n = len(ctx.heldout)
    observed = reward_observer(*held_rho(ctx), *held_scores(ctx, level))(
        np.arange(n), np.zeros(n, dtype=bool)
    )
    return reward_prediction(ctx, level), observed


def cluster_table(session: Any, ctx: RunContext, level: Level | None) -> pd.DataFrame:
    """One row per cluster: size, a readable label, predicted and observed generation shift (± s.e.) and loadings."""
    cols = ["cluster", "label", "n_members", "predicted_z", "observed_z", "observed_se_z"]
    if level is None:
        return pd.DataFrame(columns=[*cols, "predicted_loading", "observed_loading"])
    d = sample_shifts(ctx, level)
    n = d.shape[0]
    pred = generation_prediction(ctx, level)
    members = [level.cols[level.mean[:, u] > 0] for u in range(level.n_units)]
    fids = session.feature_ids
    labels = []
    for m in members:
        # The member that carries most of the cluster's predicted shift names it.
        top = m[np.argmax(np.abs(ctx.pred_z[m]))] if len(m) else None
        labels.append(session.label(fids[top]) if top is not None else "")
    p_load, o_load = loadings(ctx, level)
    return pd.DataFrame(
        {
            "cluster": level.unit_ids,
            "label": labels,
            "n_members": [len(m) for m in members],
            "predicted_z": pred,
            "observed_z": d.mean(axis=0) if n else np.full(level.n_units, np.nan),
            "observed_se_z": d.std(axis=0, ddof=1) / math.sqrt(n)
            if n > 1
            else np.full(level.n_units, np.nan),
            "predicted_loading": p_load,
            "observed_loading": o_load,
        }
    )


TABLE_COLUMNS = (
    "feature",
    "label",
    "weight",
    "predicted_z",
    "observed_z",
    "observed_se_z",
    "base_mean",
    "trained_mean",
    "agree",
)


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
    levels = {"feature": feature_level(session, np.union1d(a.columns, b.columns))}
    if "cluster" in a.levels and "cluster" in b.levels:
        levels["cluster"] = a.levels["cluster"]
    ctx = PairContext(a, b, levels, lambda positions: window_matrix(session, a.window, positions))
    resampling = {"n_boot": 500, "n_null": 500, "seed": a.settings.seed}
    for name in channel_registry.names(runs=2):
        change = channel_registry.get(name).rows(ctx, **resampling)
        if change:
            rows.append(agreement_table(change).assign(run=f"{b.run_name} − {a.run_name}"))
    agreement = pd.concat(rows, ignore_index=True)
    return RunComparison(summary=summary, table=table, a=a, b=b, same_prompts=same, agreement=agreement)
