"""Batched, seeded sampling with a model's own forward pass (no ``model.generate``): one decode loop.

A plain key/value-cache loop: left-padded prompts, explicit position ids (so padding never shifts
the rotary embedding), ``logits_to_keep=1`` on the prompt pass, a repetition penalty on the tokens
generated so far (HF convention: positive logits divided, negative ones multiplied; the prompt's
tokens are not penalised) and temperature / top-k / top-p sampling from a seeded
``torch.Generator``. Finished rows keep emitting EOS, so a batch's shape and random stream do not
depend on when its rows finish; the loop stops early once every row has. On a 2-core CPU this
measured several times faster than ``model.generate`` for the same batch, and it keeps the recipe
explicit for the model card.

Used by :func:`prefaudit.verify.verify_run` (base and trained policies from the same seed) and by
the builders of the shipped artefacts (:mod:`prefaudit.build.corpus`: the SAE corpus and the demo
set's answers, cached by :meth:`SamplingConfig.cache_dict`).

Example
-------
>>> SamplingConfig(max_new_tokens=32).temperature
0.7
>>> SamplingConfig(top_k=50).cache_dict()["top_k"]
50
>>> texts = generate_texts(bb.model, bb, [[{"role": "user", "content": "What is rain?"}]],
...                        SamplingConfig(max_new_tokens=40))           # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import ConfigError

Message = dict[str, str]
# Batch b of a call samples from torch.Generator().manual_seed(seed * SEED_STRIDE + b).
SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are sampled; ``temperature=0`` is greedy decoding.

    ``top_k=None`` samples top-p from the whole vocabulary (sorted every step); an integer keeps
    the ``top_k`` largest logits first and applies top-p among them (sorting a 49k vocabulary
    every step cost more than the LM head on CPU). ``samples_per_prompt`` is for callers that
    repeat each prompt (:func:`prefaudit.verify.verify_run`); :func:`generate_texts` answers each
    prompt it is given once.

    Example
    -------
    >>> SamplingConfig(max_new_tokens=96, top_k=50).to_dict()["samples_per_prompt"]
    1
    """

    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int | None = None
    repetition_penalty: float = 1.1
    batch_size: int = 16
    seed: int = 0
    samples_per_prompt: int = 1

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size", "samples_per_prompt"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}.")
        k = self.top_k
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise ConfigError(f"top_k must be None or an integer >= 1, got {k!r}.")
        if not (self.temperature >= 0 and 0 < self.top_p <= 1 and self.repetition_penalty >= 1):
            raise ConfigError(
                "Generation needs temperature >= 0, 0 < top_p <= 1 and repetition_penalty >= 1."
            )

    def to_dict(self) -> dict[str, Any]:
        """Every field."""
        return asdict(self)

    def cache_dict(self) -> dict[str, Any]:
        """The fields that decide :func:`generate_texts`' output: all but ``samples_per_prompt``.

        What the generation caches key on and the SAE / demo metadata record; for a top-k
        config it is the retired ``GenerationConfig.to_dict()``, key for key and in order, so
        caches and recorded recipes made before this module existed still match.
        """
        d = self.to_dict()
        del d["samples_per_prompt"]
        return d


def sample_next(logits: Any, cfg: SamplingConfig, generator: Any) -> Any:
    """One token per row of ``logits`` ``(n, vocab)`` (float), drawn from ``generator``."""
    import torch

    if cfg.temperature == 0:
        return logits.argmax(-1)
    if cfg.top_k is None:
        probs = torch.softmax(logits / cfg.temperature, dim=-1)
        if cfg.top_p < 1:
            sorted_p, idx = probs.sort(dim=-1, descending=True)
            sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p > cfg.top_p, 0.0)
            return idx.gather(-1, torch.multinomial(sorted_p, 1, generator=generator)).squeeze(-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    top, idx = (logits / cfg.temperature).topk(min(cfg.top_k, logits.shape[-1]), dim=-1)
    probs = torch.softmax(top, dim=-1)
    # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
    probs = probs.masked_fill(probs.cumsum(-1) - probs > cfg.top_p, 0.0)
    choice = torch.multinomial(probs, 1, generator=generator)
    return idx.gather(-1, choice).squeeze(-1)


def generate_token_ids(
    model: Any,
    prompts: Sequence[Sequence[int]],
    cfg: SamplingConfig,
    *,
    pad_id: int,
    eos_id: int,
    generator: Any,
    cache_kw: str = "past_key_values",
) -> list[list[int]]:
    """Sampled continuations of token-id ``prompts`` (one batch), each cut before its first EOS.

    ``cache_kw`` is the name of the model's key/value-cache argument
    (:attr:`prefaudit.backbone.Backbone.cache_kwarg`).
    """
    import torch
    from transformers import DynamicCache

    n, p_max = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((n, p_max), pad_id, dtype=torch.long)
    mask = torch.zeros((n, p_max), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, p_max - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[i, p_max - len(p) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    kw = {cache_kw: DynamicCache(config=model.config), "use_cache": True}
    out = torch.zeros((n, 0), dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    penalty = cfg.repetition_penalty
    # The model runs on its own device; sampling stays on the CPU with the CPU generator, so a
    # seed draws the same stream wherever the model lives.
    dev = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(
            input_ids=ids.to(dev),
            attention_mask=mask.to(dev),
            position_ids=pos.to(dev),
            logits_to_keep=1,
            **kw,
        ).logits
        logits = logits[:, -1]
        next_pos = pos[:, -1:] + 1
        for _ in range(cfg.max_new_tokens):
            logits = logits.float().cpu()
            if penalty > 1 and out.shape[1]:
                seen = logits.gather(-1, out)
                seen = torch.where(seen > 0, seen / penalty, seen * penalty)
                logits = logits.scatter(-1, out, seen)
            nxt = sample_next(logits, cfg, generator)
            nxt = torch.where(done, torch.full((n,), eos_id, dtype=torch.long), nxt)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == eos_id
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long)], dim=1)
            logits = model(
                input_ids=nxt[:, None].to(dev),
                attention_mask=mask.to(dev),
                position_ids=next_pos.to(dev),
                **kw,
            ).logits
            logits = logits[:, -1]
            next_pos = next_pos + 1
    return [r[: r.index(eos_id)] if eos_id in r else r for r in out.tolist()]


def generate_texts(
    model: Any,
    backbone: Any,
    prompts: Sequence[Sequence[Message]],
    cfg: SamplingConfig,
    *,
    skip_batches: set[int] | frozenset[int] = frozenset(),
    on_batch: Callable[[int, list[int], list[str]], None] | None = None,
    strip: bool = False,
) -> list[str | None]:
    """Responses of ``model`` to chat ``prompts``, rendered and tokenised as the audit does.

    ``model`` is ``backbone.model`` or a policy trained from it (same tokenizer). Prompts are
    batched by length (less padding); batch ``b`` samples from a generator seeded with
    ``cfg.seed * 1_000_003 + b``, so a batch's output does not depend on the batches before it,
    two policies given the same prompts and config consume the same random stream, and an
    interrupted run can resume: batches in ``skip_batches`` are not generated (their entries stay
    ``None``) and ``on_batch(b, indices, texts)`` sees each finished batch. Texts are decoded
    without special tokens, and with surrounding whitespace removed if ``strip``. The model is in
    eval mode while sampling and gets its training mode back afterwards.
    """
    import torch

    tok = backbone.tokenizer
    prompt_ids = [backbone.prompt_ids(m) for m in prompts]
    order = np.argsort([len(p) for p in prompt_ids], kind="stable")
    texts: list[str | None] = [None] * len(prompts)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        for b, start in enumerate(range(0, len(prompts), cfg.batch_size)):
            if b in skip_batches:
                continue
            idx = [int(i) for i in order[start : start + cfg.batch_size]]
            outs = generate_token_ids(
                model,
                [prompt_ids[i] for i in idx],
                cfg,
                pad_id=tok.pad_token_id,
                eos_id=tok.eos_token_id,
                generator=torch.Generator().manual_seed(cfg.seed * SEED_STRIDE + b),
                cache_kw=backbone.cache_kwarg,
            )
            batch = [tok.decode(ids, skip_special_tokens=True) for ids in outs]
            if strip:
                batch = [t.strip() for t in batch]
            for i, text in zip(idx, batch, strict=True):
                texts[i] = text
            if on_batch is not None:
                on_batch(b, idx, batch)
    finally:
        model.train(was_training)
    return texts
