"""Verify a run: did the trained policy move the features the shaping said it would?

``verify_run`` generates from the base and the trained policy on the same held-out prompts (same
seed, same sampling — so the two samples are coupled and differ only where the policies do),
reads both generations through the session's model, SAE and text concepts exactly as the audit
reads responses, and treats each prompt's (trained, base) generations as a pair: the observed
shift of feature f is the mean over prompts of pooled(trained) − pooled(base), standardised by
the audit's sᶠ = sd(Δᶠ), the unit of the prediction.

The prediction is the learning signal of the run's intervention at the run's weights, over the
session's pairs (the same numbers the shaping preview shows):

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

import contextlib
import json
import math
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import ConfigError
from .interventions import dominated

Message = dict[str, str]
_BASE_CACHE: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------------- generation
@dataclass(frozen=True)
class GenerationSettings:
    """How base and trained policies are sampled (identically, from the same seed).

    Example
    -------
    >>> GenerationSettings(max_new_tokens=32).temperature
    0.7
    """

    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    batch_size: int = 16
    seed: int = 0
    samples_per_prompt: int = 1

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size", "samples_per_prompt"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}.")
        if not (self.temperature >= 0 and 0 < self.top_p <= 1 and self.repetition_penalty >= 1):
            raise ConfigError(
                "Generation needs temperature >= 0, 0 < top_p <= 1 and repetition_penalty >= 1."
            )


def _sample(logits: Any, s: GenerationSettings, gen: Any) -> Any:
    import torch

    if s.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / s.temperature, dim=-1)
    if s.top_p < 1:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p > s.top_p, 0.0)
        return idx.gather(-1, torch.multinomial(sorted_p, 1, generator=gen)).squeeze(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def generate_ids(
    model: Any,
    pad_id: int,
    eos_id: int,
    prompts: Sequence[Sequence[int]],
    s: GenerationSettings,
    seed: int,
    cache_kw: str = "past_key_values",
) -> list[list[int]]:
    """Sample continuations of left-padded ``prompts`` with a key/value cache (one batch).

    Explicit position ids keep padding from shifting the rotary embedding; finished rows keep
    emitting EOS so the batch shape (and the random stream) is identical for any policy.
    """
    import torch
    from transformers import DynamicCache

    gen = torch.Generator().manual_seed(int(seed))
    n, p_max = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((n, p_max), pad_id, dtype=torch.long)
    mask = torch.zeros((n, p_max), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, p_max - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[i, p_max - len(p) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    out = torch.zeros((n, 0), dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    with torch.inference_mode():
        kw = {cache_kw: cache, "use_cache": True}
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1, **kw).logits[
            :, -1
        ]
        next_pos = pos[:, -1:] + 1
        for _ in range(s.max_new_tokens):
            logits = logits.float()
            if s.repetition_penalty > 1 and out.shape[1]:
                seen = logits.gather(-1, out)
                seen = torch.where(seen > 0, seen / s.repetition_penalty, seen * s.repetition_penalty)
                logits = logits.scatter(-1, out, seen)
            nxt = torch.where(done, torch.full((n,), eos_id, dtype=torch.long), _sample(logits, s, gen))
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == eos_id
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long)], dim=1)
            logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos, **kw).logits[
                :, -1
            ]
            next_pos = next_pos + 1
    rows = out.tolist()
    return [r[: r.index(eos_id)] if eos_id in r else r for r in rows]


def generate(
    model: Any, backbone: Any, prompts: Sequence[Sequence[Message]], s: GenerationSettings
) -> list[str]:
    """Responses of ``model`` to chat ``prompts``, rendered and tokenised exactly as the audit does.

    Prompts are batched by length; batch b draws from a generator seeded with ``(s.seed, b)``, so
    two policies given the same prompts and settings consume the same random stream.
    """
    tok = backbone.tokenizer
    prompt_ids = [backbone.prompt_ids(m) for m in prompts]
    order = np.argsort([len(p) for p in prompt_ids], kind="stable")
    texts = [""] * len(prompts)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        for b, start in enumerate(range(0, len(prompts), s.batch_size)):
            idx = order[start : start + s.batch_size]
            outs = generate_ids(
                model, tok.pad_token_id, tok.eos_token_id, [prompt_ids[i] for i in idx], s, s.seed * 1_000_003 + b,
                cache_kw=backbone._cache_kw,
            )  # fmt: skip
            for i, ids in zip(idx, outs, strict=True):
                texts[i] = tok.decode(ids, skip_special_tokens=True).strip()
    finally:
        model.train(was_training)
    return texts


# ---------------------------------------------------------------------- prediction
def predicted_signal(session: Any, intervention: str, weights: dict[str, float], *, threshold: float = 1.0,
                     ablated: Sequence[str] = ()) -> pd.DataFrame:  # fmt: skip
    """Predicted learning signal per feature (raw and standardised) for an intervention.

    Returns columns ``feature``, ``label``, ``weight``, ``predicted``, ``predicted_z``, ``sd``, in
    ``session.feature_ids`` order. See the module docstring for the rule per intervention.

    Example
    -------
    >>> predicted_signal(session, "filter", {"concept:flattery": -2.0}).head()   # doctest: +SKIP
    """
    pv = session.predict(weights if intervention != "none" else {})
    sd = pv["sd"].to_numpy()
    if intervention in ("margin", "reweight", "none"):
        raw = pv["signal_after"].to_numpy().copy()
    elif intervention in ("filter", "flip"):
        delta = session._delta_matrix()
        mask = dominated(np.asarray(pv.attrs["margins"]), threshold)
        if intervention == "filter":
            keep = (~mask).astype(np.float64)
            raw = np.asarray(sp.csr_matrix(delta).T @ keep).ravel() / max(keep.sum(), 1.0)
        else:
            sign = np.where(mask, -1.0, 1.0)
            raw = np.asarray(sp.csr_matrix(delta).T @ sign).ravel() / len(sign)
    elif intervention == "ablate":
        raw = pv["signal_before"].to_numpy().copy()
        index = {f: j for j, f in enumerate(pv["feature"])}
        for f in ablated:
            raw[index[f]] = 0.0
    else:
        raise ConfigError(f"Unknown intervention {intervention!r}.")
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, raw / sd, 0.0)
    return pd.DataFrame(
        {
            "feature": pv["feature"],
            "label": pv["label"],
            "weight": pv["weight"],
            "predicted": raw,
            "predicted_z": z,
            "sd": sd,
        }
    )


# ---------------------------------------------------------------------- observation
def observed_delta(
    session: Any, prompts: Sequence[Sequence[Message]], trained: Sequence[str], base: Sequence[str]
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Pooled features ``(n, n_features)`` of trained and base generations, in ``session.feature_ids`` order.

    SAE features are read through the session's backbone and SAE at the audited layer with the
    session's pooling (:func:`prefaudit.features.encode.encode_shard`); concepts from the texts
    (direction concepts from the mean activation).
    """
    from .features.concepts import DirectionConcept, concept_matrix

    n = len(prompts)
    mean_act: tuple[np.ndarray, np.ndarray] | None = None
    blocks_t: list[Any] = []
    blocks_b: list[Any] = []
    if session.uses_sae:
        from .features.encode import encode_shard

        enc, _ = encode_shard(
            session.backbone, session.sae, list(prompts), list(trained), list(base),
            pooling=session.config["pooling"], batch_size=session.config["batch_size"],
        )  # fmt: skip
        blocks_t.append(enc.chosen.values)
        blocks_b.append(enc.rejected.values)
        mean_act = (enc.chosen.mean_act, enc.rejected.mean_act)
    c_t = np.zeros((n, len(session.concepts)))
    c_b = np.zeros((n, len(session.concepts)))
    for j, concept in enumerate(session.concepts):
        if isinstance(concept, DirectionConcept):
            if mean_act is None:
                acts_t = session.backbone.read_responses(prompts, trained)
                acts_b = session.backbone.read_responses(prompts, base)
                mean_act = (
                    np.stack([a.mean(0).numpy() if len(a) else np.zeros(a.shape[1]) for a in acts_t]),
                    np.stack([a.mean(0).numpy() if len(a) else np.zeros(a.shape[1]) for a in acts_b]),
                )
            c_t[:, j] = mean_act[0] @ concept.direction
            c_b[:, j] = mean_act[1] @ concept.direction
        else:
            c_t[:, j] = concept_matrix(list(trained), [concept])[:, 0]
            c_b[:, j] = concept_matrix(list(base), [concept])[:, 0]
    blocks_t.append(sp.csr_matrix(c_t))
    blocks_b.append(sp.csr_matrix(c_b))
    return sp.hstack(blocks_t, format="csr"), sp.hstack(blocks_b, format="csr")


# ---------------------------------------------------------------------- implicit rewards on pairs
def _response_logps(
    model: Any,
    backbone: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    batch_size: int,
) -> np.ndarray:
    """Summed log-probs of each response after its prompt (right-padded batches, plain logits).

    Only positions from the shortest prompt's end on are projected onto the vocabulary
    (``logits_to_keep``): the LM head and the log-softmax over ~50k tokens are a large share of a
    small model's forward, and prompt positions are never scored.
    """
    import torch

    pad = backbone.tokenizer.pad_token_id
    out = np.zeros(len(prompts))
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            ps, rs = prompts[start : start + batch_size], responses[start : start + batch_size]
            seqs = [list(p) + list(r) for p, r in zip(ps, rs, strict=True)]
            t = max(len(x) for x in seqs)
            ids = torch.full((len(seqs), t), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), t), dtype=torch.long)
            resp = torch.zeros((len(seqs), t), dtype=torch.bool)
            for i, (x, p) in enumerate(zip(seqs, ps, strict=True)):
                ids[i, : len(x)] = torch.tensor(x)
                mask[i, : len(x)] = 1
                resp[i, len(p) : len(x)] = True
            first = min(len(p) for p in ps) - 1  # the logit at position j scores token j + 1
            try:
                logits = model(
                    input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=t - first
                ).logits
            except TypeError:  # a model without logits_to_keep: project every position
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, first:]
            lp = (
                torch.log_softmax(logits[:, :-1].float(), -1)
                .gather(-1, ids[:, first + 1 :, None])
                .squeeze(-1)
            )
            out[start : start + len(seqs)] = (lp * resp[:, first + 1 :]).sum(1).numpy()
    return out


def pair_rewards(
    session: Any,
    run: Any,
    positions: Sequence[int] | None = None,
    *,
    batch_size: int = 8,
    max_length: int | None = None,
) -> pd.DataFrame:
    """DPO implicit rewards of the trained policy on pairs (default: the run's held-out pairs).

    ``reward_chosen = β·(log π(c) − log π_base(c))``, likewise for rejected; ``margin`` is their
    difference and ``correct`` whether it is positive — does the policy prefer held-out chosen
    responses it never trained on? Responses end with the tokenizer's EOS, prompts are rendered
    as in the audit.

    Each prompt + response is cut to ``max_length`` tokens (default: the run's ``max_length``),
    keeping the start as trl does in training: the rewards are those of the sequences DPO saw,
    and scoring costs no more than training did. At least one response token is kept. The base
    policy's log-probs are cached per session (every run of a session starts from the same base),
    so a second run scores only its own policy.

    Example
    -------
    >>> pair_rewards(session, run)["correct"].mean()   # held-out reward accuracy   # doctest: +SKIP
    0.9
    """
    _check_run(run)
    pos = [int(i) for i in (run.heldout_positions if positions is None else positions)]
    if not pos:
        return pd.DataFrame(
            columns=["position", "pair_id", "reward_chosen", "reward_rejected", "margin", "correct"]
        )
    if max_length is None:
        max_length = int(getattr(run.config, "max_length", 0) or 0) or None
    bb = session.backbone
    df = session.data.df
    eos = [bb.tokenizer.eos_token_id]
    prompts = [bb.prompt_ids(session.data.messages(i)) for i in pos]

    def responses(column: str) -> list[list[int]]:
        out = []
        for p, i in zip(prompts, pos, strict=True):
            ids = bb.tokenizer(df[column].iloc[i], add_special_tokens=False)["input_ids"] + eos
            out.append(ids if max_length is None else ids[: max(1, max_length - len(p))])
        return out

    chosen, rejected = responses("chosen"), responses("rejected")
    base_model, base_ctx = bb.model, contextlib.nullcontext()
    if hasattr(run.model, "disable_adapter"):
        base_model, base_ctx = run.model, run.model.disable_adapter()
    dtype = str(next(base_model.parameters()).dtype)
    key = json.dumps(["rewards", pos, max_length, dtype])
    cache = _BASE_CACHE.setdefault(session, {})
    was_training = run.model.training
    run.model.eval()
    try:
        pc = _response_logps(run.model, bb, prompts, chosen, batch_size)
        pr = _response_logps(run.model, bb, prompts, rejected, batch_size)
        if key not in cache:
            with base_ctx:
                cache[key] = (
                    _response_logps(base_model, bb, prompts, chosen, batch_size),
                    _response_logps(base_model, bb, prompts, rejected, batch_size),
                )
        bc, br = cache[key]
    finally:
        run.model.train(was_training)
    beta = float(run.config.beta)
    rc, rr = beta * (pc - bc), beta * (pr - br)
    return pd.DataFrame(
        {"position": pos, "pair_id": df["pair_id"].to_numpy()[pos], "reward_chosen": rc, "reward_rejected": rr,
         "margin": rc - rr, "correct": rc > rr}
    )  # fmt: skip


# ---------------------------------------------------------------------- results
@dataclass
class VerifyResult:
    """Observed vs predicted shift of one run.

    Attributes
    ----------
    table : DataFrame
        The analysed features (weighted/ablated first, then by |predicted_z|): ``feature``,
        ``label``, ``weight``, ``predicted_z``, ``observed_z``, ``observed_se_z``, ``base_mean``,
        ``trained_mean``, ``agree`` (signs agree).
    features : DataFrame
        The same columns for every feature (``predicted``/``observed`` in raw units too).
    r, r2, sign_agreement : float
        Pearson r, its square, and the fraction of analysed features (both non-zero) whose signs agree.
    generations : DataFrame
        ``prompt``, ``base``, ``trained`` for each generated sample.
    heldout : DataFrame
        Implicit rewards on the run's held-out pairs (:func:`pair_rewards`): does the policy prefer
        the held-out chosen responses?
    """

    run_name: str
    intervention: str
    table: pd.DataFrame
    features: pd.DataFrame
    r: float
    r2: float
    sign_agreement: float
    n_features: int
    n_sign: int
    n_prompts: int
    generations: pd.DataFrame
    settings: GenerationSettings
    weights: dict[str, float] = field(default_factory=dict)
    heldout: pd.DataFrame = field(default_factory=pd.DataFrame)
    session: Any = field(default=None, repr=False)

    def _row(self, feature: str) -> pd.Series:
        ids = self.features["feature"]
        for fid in (feature, f"concept:{feature}", f"sae:{feature}"):
            hit = self.features[ids == fid]
            if len(hit):
                return hit.iloc[0]
        raise ConfigError(f"Unknown feature {feature!r} in the verification of {self.run_name!r}.")

    def shift(self, feature: str | int) -> float:
        """Observed standardised shift (trained − base) of one feature (``"flattery"``, ``"sae:12"``, 12)."""
        return float(self._row(str(feature))["observed_z"])

    def means(self, feature: str | int) -> tuple[float, float]:
        """Mean pooled value of a feature in (base, trained) generations — e.g. the flattery rate."""
        row = self._row(str(feature))
        return float(row["base_mean"]), float(row["trained_mean"])

    def summary(self) -> dict[str, Any]:
        return {
            "run": self.run_name,
            "intervention": self.intervention,
            "r": self.r,
            "r2": self.r2,
            "sign_agreement": self.sign_agreement,
            "n_features": self.n_features,
            "n_prompts": self.n_prompts,
            "heldout_accuracy": float(self.heldout["correct"].mean()) if len(self.heldout) else math.nan,
            "heldout_margin": float(self.heldout["margin"].mean()) if len(self.heldout) else math.nan,
        }

    def view(self, **kwargs: Any) -> Any:
        from .views.verify_view import VerifyView

        return VerifyView(self, **kwargs)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return self.view()._repr_mimebundle_(include=include, exclude=exclude)


def agreement(pred: np.ndarray, obs: np.ndarray) -> tuple[float, float, float, int]:
    """(Pearson r, R² = r², sign agreement, n for the sign) of two aligned vectors; NaN when undefined."""
    pred, obs = np.asarray(pred, dtype=np.float64), np.asarray(obs, dtype=np.float64)
    if len(pred) >= 2 and np.std(pred) > 0 and np.std(obs) > 0:
        r = float(np.corrcoef(pred, obs)[0, 1])
    else:
        r = math.nan
    both = (pred != 0) & (obs != 0)
    sign = float(np.mean(np.sign(pred[both]) == np.sign(obs[both]))) if both.any() else math.nan
    return r, r * r if math.isfinite(r) else math.nan, sign, int(both.sum())


def _prompts(session: Any, run: Any, prompts: Any, n_prompts: int) -> list[list[Message]]:
    if prompts is None:
        held = list(getattr(run, "heldout_positions", []))
        if not held:
            raise ConfigError(
                f"Run {run.name!r} held out no pairs: pass prompts=[...] or train with holdout > 0."
            )
        return [session.data.messages(int(i)) for i in held[:n_prompts]]
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
        raise ConfigError("prompts must be a non-empty list of strings or of message lists.")
    out = []
    for p in prompts:
        if isinstance(p, str):
            out.append([{"role": "user", "content": p}])
        elif isinstance(p, Sequence) and all(
            isinstance(m, dict) and "role" in m and "content" in m for m in p
        ):
            out.append([dict(m) for m in p])
        else:
            raise ConfigError(
                f"A prompt must be a string or a list of {{'role', 'content'}} messages, got {p!r}."
            )
    return out


def _check_run(run: Any) -> None:
    status = getattr(run, "status", None)
    if status is None or not hasattr(run, "model"):
        raise ConfigError(f"verify needs a DPORun, got {type(run).__name__}.")
    if status == "failed":
        raise ConfigError(f"Run {run.name!r} failed; nothing to verify. Its error:\n{run.error}")
    if status not in ("finished", "cancelled"):
        raise ConfigError(f"Run {run.name!r} is {status}; call run.wait() before verifying it.")


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
    _check_run(run)
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, repetition_penalty=repetition_penalty,
        batch_size=batch_size, seed=seed, samples_per_prompt=samples_per_prompt,
    )  # fmt: skip
    if not isinstance(n_features, int) or n_features < 0:
        raise ConfigError(f"n_features must be an integer >= 0, got {n_features!r}.")
    msgs = _prompts(session, run, prompts, n_prompts)
    msgs = [m for m in msgs for _ in range(settings.samples_per_prompt)]
    backbone = session.backbone
    # The base policy: for LoRA the trained model with its adapter disabled (the exact weights and
    # dtype the run started from), else the session's model.
    base_model, base_ctx = backbone.model, contextlib.nullcontext()
    if hasattr(run.model, "disable_adapter"):
        base_model, base_ctx = run.model, run.model.disable_adapter()
    key = json.dumps([msgs, asdict(settings), str(next(base_model.parameters()).dtype)], sort_keys=True)
    cache = _BASE_CACHE.setdefault(session, {})
    if key not in cache:
        with base_ctx:
            cache[key] = generate(base_model, backbone, msgs, settings)
    base = cache[key]
    trained = generate(run.model, backbone, msgs, settings)

    pred = predicted_signal(
        session,
        run.shaped.intervention,
        run.weights,
        threshold=run.shaped.threshold,
        ablated=run.shaped.ablate_features,
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


# ---------------------------------------------------------------------- comparison
@dataclass
class RunComparison:
    """Two verified runs side by side.

    Attributes
    ----------
    summary : DataFrame
        One row per run: intervention, r, R², sign agreement, n features, n prompts.
    table : DataFrame
        Features analysed in either run: predicted and observed z of both and ``difference``
        (observed b − observed a).
    a, b : VerifyResult
    same_prompts : bool
        Whether both were generated on the same prompts with the same settings.
    """

    summary: pd.DataFrame
    table: pd.DataFrame
    a: VerifyResult
    b: VerifyResult
    same_prompts: bool

    def view(self, **kwargs: Any) -> Any:
        from .views.verify_view import CompareView

        return CompareView(self, **kwargs)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return self.view()._repr_mimebundle_(include=include, exclude=exclude)


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
