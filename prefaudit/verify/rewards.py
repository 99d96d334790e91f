"""DPO implicit rewards on held-out pairs: does the trained policy prefer chosen responses it never saw?"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..training.window import window_token_ids
from .checks import check_run
from .policies import base_dtype, base_policy


def base_cache(session: Any) -> dict[str, Any]:
    """The base policy's samples and log-probs, kept per session (every run starts from the same base).

    ``session.stage_cache("verify")``: cleared by the session whenever its data or features change.
    """
    return session.stage_cache("verify")


def response_logps(
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
            dev = next(model.parameters()).device
            try:
                logits = model(
                    input_ids=ids.to(dev),
                    attention_mask=mask.to(dev),
                    use_cache=False,
                    logits_to_keep=t - first,
                ).logits
            except TypeError:  # a model without logits_to_keep: project every position
                logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False).logits[
                    :, first:
                ]
            lp = (
                torch.log_softmax(logits[:, :-1].float().cpu(), -1)
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
    responses it never trained on?

    The tokens scored are those the run's training window keeps (``run.plan.window``: trl's own
    tokenisation, the end of a long prompt, the start of each response —
    :func:`prefaudit.training.plan.window_cut`), so the rewards are read on the same kind of
    sequence DPO trained on. ``max_length`` overrides the window's length. The base policy's
    log-probs are cached per session (every run of a session starts from the same base), so a
    second run scores only its own policy.

    Example
    -------
    >>> pair_rewards(session, run)["correct"].mean()   # held-out reward accuracy   # doctest: +SKIP
    0.9
    """
    check_run(run)
    pos = [int(i) for i in (run.heldout_positions if positions is None else positions)]
    if not pos:
        return pd.DataFrame(
            columns=["position", "pair_id", "reward_chosen", "reward_rejected", "margin", "correct"]
        )
    # Exactly the tokens the run's window keeps (trl's tokenisation, the plan's cut).
    window = dict(run.plan.window)
    if max_length is not None:
        window = {
            "max_length": int(max_length),
            "max_prompt_length": min(window["max_prompt_length"], int(max_length) - 1),
        }
    bb = session.backbone
    df = session.data.df
    ids = window_token_ids(session, window, pos)
    prompts = [x[0] for x in ids]
    chosen, rejected = [x[1] for x in ids], [x[2] for x in ids]
    base_model, base_ctx = base_policy(session, run)
    key = json.dumps(["rewards", pos, window, base_dtype(session, run)])
    cache = base_cache(session)
    was_training = run.model.training
    run.model.eval()
    try:
        pc = response_logps(run.model, bb, prompts, chosen, batch_size)
        pr = response_logps(run.model, bb, prompts, rejected, batch_size)
        if key not in cache:
            with base_ctx:
                cache[key] = (
                    response_logps(base_model, bb, prompts, chosen, batch_size),
                    response_logps(base_model, bb, prompts, rejected, batch_size),
                )
        bc, br = cache[key]
    finally:
        run.model.train(was_training)
    beta = float(run.config.beta)
    rc, rr = beta * (pc - bc), beta * (pr - br)
    return pd.DataFrame(
        {
            "position": pos,
            "pair_id": df["pair_id"].to_numpy()[pos],
            "reward_chosen": rc,
            "reward_rejected": rr,
            "margin": rc - rr,
            "correct": rc > rr,
        }
    )
