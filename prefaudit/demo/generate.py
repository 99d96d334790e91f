"""Batched, seeded text generation with the backbone's own model (no ``model.generate``).

A plain key/value-cache decode loop: left-padded prompts, explicit position ids (so padding never
shifts the rotary embedding), top-p sampling from a seeded ``torch.Generator`` and a repetition
penalty on the tokens generated so far. On this 2-core CPU it measured several times faster than
``model.generate`` for the same batch, and it keeps the recipe explicit for the model card.

Example
-------
>>> from prefaudit.backbone import Backbone
>>> bb = Backbone.load(dtype="float32")                                    # doctest: +SKIP
>>> generate(bb, ["What is rain?"], GenerationConfig(max_new_tokens=40))  # doctest: +SKIP
['Rain is water that falls from clouds ...']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GenerationConfig:
    """How responses are sampled. Recorded in the SAE metadata and the demo build.

    ``temperature=0`` is greedy decoding. The repetition penalty (HF convention: positive logits
    divided, negative ones multiplied) applies to tokens already generated, not to the prompt,
    so answers may repeat the words of the question.
    """

    max_new_tokens: int = 96
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.15
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.repetition_penalty < 1:
            raise ValueError("need temperature >= 0, 0 < top_p <= 1 and repetition_penalty >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sample(logits: Any, cfg: GenerationConfig, gen: Any) -> Any:
    import torch

    if cfg.temperature == 0:
        return logits.argmax(-1)
    # Top-k first: sorting the whole 49k vocabulary every step cost more than the LM head.
    top, idx = (logits / cfg.temperature).topk(min(cfg.top_k, logits.shape[-1]), dim=-1)
    probs = torch.softmax(top, dim=-1)
    # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
    probs = probs.masked_fill(probs.cumsum(-1) - probs > cfg.top_p, 0.0)
    choice = torch.multinomial(probs, 1, generator=gen)
    return idx.gather(-1, choice).squeeze(-1)


def _generate_batch(
    backbone: Any, prompts: Sequence[Sequence[int]], cfg: GenerationConfig, gen: Any
) -> list[list[int]]:
    import torch
    from transformers import DynamicCache

    model, tok = backbone.model, backbone.tokenizer
    eos = tok.eos_token_id
    n, p_max = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((n, p_max), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, p_max), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, p_max - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, p_max - len(p) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    kw = {backbone._cache_kw: cache}
    out = torch.zeros((n, 0), dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    with torch.inference_mode():
        logits = model(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1, **kw
        ).logits[:, -1]
        next_pos = pos[:, -1:] + 1
        for _ in range(cfg.max_new_tokens):
            logits = logits.float()
            if cfg.repetition_penalty > 1 and out.shape[1]:
                seen = logits.gather(-1, out)
                seen = torch.where(seen > 0, seen / cfg.repetition_penalty, seen * cfg.repetition_penalty)
                logits = logits.scatter(-1, out, seen)
            nxt = _sample(logits, cfg, gen)
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == eos
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long)], dim=1)
            logits = model(
                input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos, use_cache=True, **kw
            ).logits[:, -1]
            next_pos = next_pos + 1
    result = []
    for row in out.tolist():
        result.append(row[: row.index(eos)] if eos in row else row)
    return result


def generate(
    backbone: Any,
    prompts: Sequence[str],
    cfg: GenerationConfig,
    *,
    skip_batches: set[int] | frozenset[int] = frozenset(),
    on_batch: Callable[[int, list[int], list[str]], None] | None = None,
) -> list[str | None]:
    """The model's responses to single-turn ``prompts`` (chat-templated like the audit's prompts).

    Prompts are batched by length (less padding); batch ``b`` samples from a generator seeded
    with ``(cfg.seed, b)``, so a batch's output does not depend on the batches before it and an
    interrupted run can resume: batches in ``skip_batches`` are not generated (their entries
    stay ``None``) and ``on_batch(b, indices, texts)`` sees each finished batch.
    """
    import torch

    prompt_ids = [backbone.prompt_ids([{"role": "user", "content": p}]) for p in prompts]
    order = np.argsort([len(p) for p in prompt_ids], kind="stable")
    texts: list[str | None] = [None] * len(prompts)
    for b, start in enumerate(range(0, len(prompts), cfg.batch_size)):
        if b in skip_batches:
            continue
        idx = [int(i) for i in order[start : start + cfg.batch_size]]
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + b)
        outs = _generate_batch(backbone, [prompt_ids[i] for i in idx], cfg, gen)
        batch = [backbone.tokenizer.decode(ids, skip_special_tokens=True) for ids in outs]
        for i, text in zip(idx, batch, strict=True):
            texts[i] = text
        if on_batch is not None:
            on_batch(b, idx, batch)
    return texts


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*(?=\s|$)")
_REPEAT = re.compile(r"(\b\w+\b(?:\W+\w+){2,5}?)\W+(?:\1\W+){2,}", re.IGNORECASE)


def trim_response(text: str, *, max_chars: int = 520, min_chars: int = 120) -> str | None:
    """Cut a generated answer at its last complete sentence within ``max_chars``.

    Returns ``None`` for answers that are too short, that loop (a phrase repeated three times or
    more), that contain long digit or character runs, or that carry a chat-template marker.
    """
    text = text.strip()
    if "<|" in text or re.search(r"(\S)\1{7,}|\d{12,}", text) or _REPEAT.search(text):
        return None
    head = text[:max_chars]
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    if not ends:
        return None
    cut = head[: ends[-1]].strip()
    # Drop what a cut leaves dangling: a bare list number ("\n\n1.") or a "Here are some tips:" line.
    previous = None
    while previous != cut:
        previous = cut
        cut = re.sub(r"\n\s*\d+[.)]\s*$", "", cut).strip()
        if cut.endswith(":"):
            ends = [m.end() for m in _SENTENCE_END.finditer(cut)]
            cut = cut[: ends[-1]].strip() if ends else ""
    return cut if len(cut) >= min_chars else None
