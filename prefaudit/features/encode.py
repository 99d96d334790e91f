"""Encode a preference dataset through backbone + SAE into pooled sparse features, in shards.

The dataset is cut into shards of ``shard_size`` pairs. Each finished shard is written
atomically (temporary file, then ``os.replace``) into a cache directory keyed by everything
that determines its content (data, model, layer, SAE, pooling, truncation, shard size). An encode
interrupted by a kernel restart or ``kill -9`` therefore resumes at the first missing shard, and
memory holds at most one shard's dense activations at a time. A shard is trusted only if it
records this key and its own pair range; a damaged or foreign one is named in a warning, moved
aside and encoded again (:mod:`prefaudit.features.shard_cache`). Several processes can fill one
cache: encoders started apart share the shards through file locks, and ``prefaudit encode`` under
``accelerate launch`` deals them out (:mod:`prefaudit.features.distributed`).

Example
-------
>>> enc = encode_pairs(pairs, backbone, sae, cache_dir="~/.cache/prefaudit")  # doctest: +SKIP
>>> enc.chosen.values.shape  # doctest: +SKIP
(1000, 4096)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError
from .encoded import EncodedFeatures, SidePooled
from .shard_cache import ShardCache, ShardCounts, describe, shard_count, write_meta

POOLINGS = ("max", "mean", "sum")
#: Part of every cache key: a shard written by another layout is never read. 2: shards record
#: the full (pre-cut) token count of every response and prompt and whether the prompt was cut.
#: 3: each shard carries a record of its key, index and pair range, checked before it is read.
CACHE_VERSION = 3
# Dense SAE codes held at once: tokens x d_sae float32 values (128 MB).
_CODE_BUDGET = 1 << 25


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling={pooling!r}; choose one of {', '.join(POOLINGS)}.")
    return pooling


def cache_key(pairs_fp: str, backbone_fp: str, sae_fp: str, pooling: str, shard_size: int) -> str:
    blob = json.dumps([CACHE_VERSION, pairs_fp, backbone_fp, sae_fp, pooling, shard_size])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def pool_codes(
    codes: Any, pooling: str, d_model_acts: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pool one response's codes ``(n_tokens, d_sae)`` into its non-zero features.

    Returns ``(feature_idx, value, argmax_pos, mean_act)``. ``argmax_pos`` is the token that
    attained each feature's maximum, whatever the pooling.
    """
    import torch

    top, arg = codes.max(dim=0)
    if pooling == "max":
        pooled = top
    elif pooling == "mean":
        pooled = codes.mean(dim=0)
    else:
        pooled = codes.sum(dim=0)
    nz = torch.nonzero(pooled, as_tuple=True)[0]
    return (
        nz.numpy().astype(np.int32),
        pooled[nz].float().numpy(),
        arg[nz].numpy().astype(np.int32),
        d_model_acts.mean(dim=0).float().numpy(),
    )


def encode_batch(
    backbone: Any,
    sae: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pooling: str = "max",
    share_prompt: bool = True,
) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], int]:
    """Pooled features of the ``2 * len(prompts)`` responses of a batch (chosen, rejected, ...)."""
    import torch

    h, processed = backbone.read_pairs(prompts, responses, share_prompt=share_prompt)
    seqs = [r for pair in responses for r in pair]
    pooled = []
    # Group sequences so that the dense codes of one group stay within the memory budget.
    group: list[int] = []
    budget = max(1, _CODE_BUDGET // max(1, sae.d_sae))

    def flush(group: list[int]) -> None:
        chunks, spans = [], []
        for j in group:
            n_tok = len(seqs[j])
            # Position 0 of the whole sequence is an attention sink; prompts always hold it, so
            # response tokens start at position >= 1 (Backbone.prompt_ids guarantees a context token).
            x = h[j, :n_tok].float()
            spans.append((len(chunks), n_tok))
            chunks.append(x)
        codes_all = sae.encode(torch.cat(chunks)) if chunks else None
        offset = 0
        for k, n_tok in spans:
            if n_tok == 0:
                pooled.append(_empty(sae.d_sae, h.shape[-1]))
                continue
            codes = codes_all[offset : offset + n_tok]
            pooled.append(pool_codes(codes, pooling, chunks[k]))
            offset += n_tok

    used = 0
    for j, s in enumerate(seqs):
        if group and used + len(s) > budget:
            flush(group)
            group, used = [], 0
        group.append(j)
        used += len(s)
    if group:
        flush(group)
    return pooled, processed


def _empty(d_sae: int, d_model: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    e = np.zeros(0, dtype=np.int32)
    return e, np.zeros(0, dtype=np.float32), e, np.zeros(d_model, dtype=np.float32)


def _side_from_pooled(
    pooled: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    token_ids: list[Sequence[int]],
    truncated: list[bool],
    full_length: list[int],
    d_sae: int,
) -> SidePooled:
    indptr = np.zeros(len(pooled) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(p[0]) for p in pooled])
    indices = np.concatenate([p[0] for p in pooled]) if pooled else np.zeros(0, np.int32)
    data = np.concatenate([p[1] for p in pooled]) if pooled else np.zeros(0, np.float32)
    pos = np.concatenate([p[2] for p in pooled]) if pooled else np.zeros(0, np.int32)
    tok = np.concatenate(
        [np.asarray(ids, dtype=np.int32)[p[2]] for p, ids in zip(pooled, token_ids, strict=True)]
    )
    values = sp.csr_matrix((data, indices, indptr), shape=(len(pooled), d_sae))
    return SidePooled(
        values=values,
        top_token=tok.astype(np.int32),
        top_pos=pos.astype(np.int32),
        mean_act=np.stack([p[3] for p in pooled]).astype(np.float32),
        n_tokens=np.asarray([len(ids) for ids in token_ids], dtype=np.int32),
        truncated=np.asarray(truncated, dtype=bool),
        full_length=np.asarray(full_length, dtype=np.int32),
    )


def full_prompt_lengths(
    backbone: Any, prompt_messages: Sequence[Any], read: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of each rendered prompt before the cut, and whether it was cut.

    ``read`` is what :meth:`Backbone.prompt_ids` kept. A prompt shorter than the limit was read
    whole; only those at the limit are tokenised again, the way ``prompt_ids`` tokenises
    (:meth:`Backbone.render_prompt`, special tokens only without a chat template).
    """
    limit = int(backbone.max_prompt_tokens)
    full = np.asarray([len(r) for r in read], dtype=np.int64)
    for i in np.flatnonzero(full >= limit):
        text = backbone.render_prompt(prompt_messages[i])
        ids = backbone.tokenizer(text, add_special_tokens=not backbone.has_chat_template)["input_ids"]
        full[i] = max(len(ids), full[i])
    return full.astype(np.int32), full > np.asarray([len(r) for r in read])


def full_response_lengths(
    backbone: Any, texts: Sequence[str], read: Sequence[tuple[Sequence[int], bool]]
) -> list[int]:
    """Tokens of each response before the cut; ``read`` is what :meth:`Backbone.response_ids` returned.

    A response that was not cut was read whole; the cut ones are tokenised again as
    ``response_ids`` does (no special tokens).
    """
    full = [len(ids) for ids, _cut in read]
    cut = [i for i, (_ids, was_cut) in enumerate(read) if was_cut]
    if cut:
        recount = backbone.tokenizer([texts[i] for i in cut], add_special_tokens=False)["input_ids"]
        for i, ids in zip(cut, recount, strict=True):
            full[i] = max(len(ids), full[i] + 1)
    return full


def encode_shard(
    backbone: Any,
    sae: Any,
    prompt_messages: Sequence[Any],
    chosen: Sequence[str],
    rejected: Sequence[str],
    *,
    pooling: str,
    batch_size: int | None = None,
    batch_tokens: int | None = None,
    share_prompt: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[EncodedFeatures, int]:
    """Encode one shard of pairs; returns its features and the tokens the model processed.

    Forward passes hold at most ``batch_tokens`` padded tokens (``None``: the backbone's
    ``default_batch_tokens`` for its device) and, if given, at most ``batch_size`` pairs; the
    features do not depend on either (:func:`length_batches`).
    """
    n = len(chosen)
    prompts = [backbone.prompt_ids(m) for m in prompt_messages]
    resp = [
        (backbone.response_ids(c), backbone.response_ids(r)) for c, r in zip(chosen, rejected, strict=True)
    ]
    prompt_full, prompt_cut = full_prompt_lengths(backbone, prompt_messages, prompts)
    full_c = full_response_lengths(backbone, chosen, [c for c, _ in resp])
    full_r = full_response_lengths(backbone, rejected, [r for _, r in resp])
    p_len = [len(p) for p in prompts]
    r_len = [(len(c[0]), len(r[0])) for c, r in resp]
    out_c: list[Any] = [None] * n
    out_r: list[Any] = [None] * n
    processed = 0
    if batch_tokens is None:
        batch_tokens = backbone.default_batch_tokens
    batches = length_batches(
        p_len,
        r_len,
        batch_size,
        batch_tokens=batch_tokens,
        share_prompt=share_prompt,
        packed=backbone.packs_pairs,
    )
    for idx in batches:
        pooled, used = encode_batch(
            backbone,
            sae,
            [prompts[i] for i in idx],
            [(resp[i][0][0], resp[i][1][0]) for i in idx],
            pooling=pooling,
            share_prompt=share_prompt,
        )
        processed += used
        for k, i in enumerate(idx):
            out_c[i], out_r[i] = pooled[2 * k], pooled[2 * k + 1]
        if on_batch is not None:
            on_batch(len(idx), used)
    side_c = _side_from_pooled(out_c, [r[0][0] for r in resp], [r[0][1] for r in resp], full_c, sae.d_sae)
    side_r = _side_from_pooled(out_r, [r[1][0] for r in resp], [r[1][1] for r in resp], full_r, sae.d_sae)
    enc = EncodedFeatures(
        chosen=side_c, rejected=side_r, pooling=pooling, prompt_length=prompt_full, prompt_cut=prompt_cut
    )
    return enc, processed


def length_batches(
    prompt_len: Sequence[int],
    response_len: Sequence[int] | Sequence[Sequence[int]],
    batch_size: int | None = None,
    *,
    batch_tokens: int | None = None,
    share_prompt: bool = True,
    packed: bool = True,
    max_padding: float = 0.25,
) -> list[np.ndarray]:
    """Group pairs into forward passes of at most ``batch_tokens`` padded tokens.

    ``response_len`` is, per pair, the ``(chosen, rejected)`` token counts (shape ``(n, 2)``) or
    the longer of the two. A batch's cost is rows x padded length in the layout that reads it
    (:mod:`prefaudit.pair_layouts`): packed ``n * max(p + c + r)``; prompt cache
    ``n * max(p) + 2n * max(max(c, r))``; separate (``share_prompt=False``)
    ``2n * max(p + max(c, r))``. Pairs are taken in order of their own cost; a batch closes when
    the next pair would take it past ``batch_tokens`` padded tokens, past ``batch_size`` pairs
    (either limit may be ``None``), or its padding past ``max_padding`` of its real tokens. A pair
    costlier than ``batch_tokens`` on its own is a batch of one. Results never depend on the
    grouping: it only decides how much padding the model runs.

    >>> [b.tolist() for b in length_batches([10, 10, 200], [5, 6, 5], batch_tokens=64)]
    [[0, 1], [2]]
    """
    for name, limit in (("batch_size", batch_size), ("batch_tokens", batch_tokens)):
        if limit is not None and limit < 1:
            raise ConfigError(f"{name}={limit}; it must be >= 1 (or None for no limit).")
    p = np.asarray(prompt_len, dtype=np.int64).reshape(-1)
    r = np.asarray(response_len, dtype=np.int64)
    r = np.stack([r, r], axis=1) if r.ndim == 1 else r
    if r.shape != (len(p), 2):
        raise ConfigError(f"response_len has shape {r.shape}; expected ({len(p)},) or ({len(p)}, 2).")
    layout = ("packed" if packed else "cache") if share_prompt else "separate"
    # Per pair: its real tokens, and the lengths whose batch maxima make the padded cost.
    own = p + r.sum(axis=1) + (0 if share_prompt else p)
    dims = np.stack([p, r.max(axis=1), p + r.max(axis=1), p + r.sum(axis=1)], axis=1)

    def padded(n: int, m: np.ndarray) -> int:
        m_p, m_r, m_sep, m_row = (int(x) for x in m)
        return {"packed": n * m_row, "cache": n * (m_p + 2 * m_r), "separate": 2 * n * m_sep}[layout]

    batches: list[np.ndarray] = []
    cur: list[int] = []
    real, top = 0, np.zeros(4, dtype=np.int64)
    for i in np.argsort(own, kind="stable").tolist():
        cand = np.maximum(top, dims[i])
        cost = padded(len(cur) + 1, cand)
        over = (batch_size is not None and len(cur) >= batch_size) or (
            batch_tokens is not None and cost > batch_tokens
        )
        if cur and (over or cost > (1 + max_padding) * (real + own[i])):
            batches.append(np.asarray(cur))
            cur, real, cand = [], 0, dims[i]
        cur.append(i)
        real += int(own[i])
        top = cand
    if cur:
        batches.append(np.asarray(cur))
    return batches


def open_cache(
    pairs: Any,
    backbone: Any,
    sae: Any,
    *,
    pooling: str,
    batch_size: int | None,
    shard_size: int,
    cache_dir: str | Path | None,
) -> tuple[dict[str, Any], Path | None, int]:
    """Check the settings; return the encode's meta (its cache key included), its cache folder
    (created; ``None`` without ``cache_dir``) and its number of shards.

    Everything that decides a shard's bytes enters the key (data, backbone incl. dtype and token
    limits, SAE, pooling, shard size); the device does not, nor does the batch size.
    """
    check_pooling(pooling)
    if (batch_size is not None and batch_size < 1) or shard_size < 1:
        raise ConfigError("batch_size and shard_size must be >= 1.")
    sae.check_fits(backbone)
    key = cache_key(pairs.fingerprint(), backbone.fingerprint(), sae.fingerprint(), pooling, shard_size)
    meta = describe(key, len(pairs), backbone, sae, pooling, shard_size)
    folder = None
    if cache_dir is not None:
        folder = Path(cache_dir).expanduser() / "encode" / key
        folder.mkdir(parents=True, exist_ok=True)
    return meta, folder, shard_count(len(pairs), shard_size)


def encode_shard_of(
    pairs: Any, backbone: Any, sae: Any, s: int, shard_size: int, **kw: Any
) -> tuple[Any, int]:
    """:func:`encode_shard` of shard ``s`` of ``pairs`` (its pairs ``s * shard_size`` on)."""
    lo, hi = s * shard_size, min(len(pairs), (s + 1) * shard_size)
    df = pairs.df.iloc[lo:hi]
    messages = [pairs.messages(i) for i in range(lo, hi)]
    return encode_shard(backbone, sae, messages, df["chosen"].tolist(), df["rejected"].tolist(), **kw)


def encode_pairs(
    pairs: Any,
    backbone: Any,
    sae: Any,
    *,
    pooling: str = "max",
    batch_size: int | None = 8,
    shard_size: int = 128,
    cache_dir: str | Path | None = None,
    batch_tokens: int | None = None,
    share_prompt: bool = True,
    progress: bool = True,
) -> EncodedFeatures:
    """Pooled SAE features of every pair of ``pairs`` (resumable; see module docstring).

    Parameters
    ----------
    pairs : PreferencePairs
    backbone : Backbone
    sae : SAEFeatures
    pooling : {"max", "mean", "sum"}
        How token activations of a response become one value per feature.
    batch_size : int or None
        At most this many pairs per forward pass (``None``: no cap).
    shard_size : int
        Pairs per cache shard (the unit of resumption and of bounded memory).
    cache_dir : path or None
        Root of the shard cache; ``None`` keeps nothing on disk.
    batch_tokens : int or None
        Padded tokens per forward pass (``None``: the backbone's default for its device,
        :data:`prefaudit.pair_layouts.BATCH_TOKENS`). Features never depend on either limit.

    The result's ``meta`` says what this call did: ``shards_found`` (read from the cache),
    ``shards_encoded`` and ``tokens_processed_this_run``. Shards written by other processes (a
    distributed ``prefaudit encode``, :mod:`prefaudit.features.distributed`) are read like any other.
    """
    meta, folder, n_shards = open_cache(
        pairs,
        backbone,
        sae,
        pooling=pooling,
        batch_size=batch_size,
        shard_size=shard_size,
        cache_dir=cache_dir,
    )
    if n_shards == 0:
        raise ConfigError("Nothing to encode: the dataset has no pairs.")
    counts = ShardCounts(n_shards, assigned=list(range(n_shards)))
    bar = _progress(len(pairs), progress)

    kw = {
        "pooling": pooling,
        "batch_size": batch_size,
        "batch_tokens": batch_tokens,
        "share_prompt": share_prompt,
    }

    def encode_one(s: int) -> tuple[EncodedFeatures, int]:
        return encode_shard_of(
            pairs, backbone, sae, s, shard_size, on_batch=lambda k, _u: bar.update(k), **kw
        )

    def found(s: int) -> None:
        bar.update(min(shard_size, len(pairs) - s * shard_size))

    try:
        if folder is None:
            parts = []
            for s in range(n_shards):
                enc, used = encode_one(s)
                parts.append(enc)
                counts.encoded.append(s)
                counts.tokens_processed += used
        else:
            cache = ShardCache(folder, meta, n_shards)
            write_meta(folder, meta, n_shards, done=len(cache.finished()))
            cache.fill(range(n_shards), encode_one, counts, found)
            # Shards merged once into a memory-mapped CSR store beside them (prefaudit.features.store).
            out = cache.open_store(encode_one, counts)
            # Every shard is sound now: the store was just checked or merged from them.
            meta = write_meta(folder, meta, n_shards, done=n_shards)
    finally:
        bar.close()
    meta.update(
        tokens_processed_this_run=counts.tokens_processed,
        shards_found=len(counts.found),
        shards_encoded=len(counts.encoded),
    )
    if folder is not None:
        out.meta.update(meta)
        return out
    return EncodedFeatures.concat(parts, meta=meta)


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="encoding pairs", unit="pair", disable=not enabled)


def token_activations(
    backbone: Any, sae: Any, messages: Any, responses: Sequence[str], features: Sequence[int]
) -> list[tuple[list[str], np.ndarray]]:
    """Per-token activations of ``features`` over two responses read in one prompt's context.

    ``responses`` is ``(chosen, rejected)``: one model pass reads the prompt once and both
    responses after it. Returns, per response, its token strings and an array
    ``(n_tokens, len(features))``. Used by the drill-down view and the report to shade tokens;
    recomputed on demand instead of stored for every token.
    """
    import torch

    if len(responses) != 2:
        raise ValueError("token_activations reads exactly two responses (chosen, rejected)")
    prompt = backbone.prompt_ids(messages)
    ids = [backbone.response_ids(r)[0] for r in responses]
    # read_pairs needs non-empty sequences; an empty response reads a one-token stand-in, dropped below.
    read = [i or [0] for i in ids]
    h, _ = backbone.read_pairs([prompt], [(read[0], read[1])], share_prompt=True)
    cols = torch.as_tensor(list(features), dtype=torch.long)
    out = []
    with torch.no_grad():
        for k, side_ids in enumerate(ids):
            if not side_ids:
                out.append(([], np.zeros((0, len(features)), dtype=np.float32)))
                continue
            codes = sae.encode(h[k, : len(side_ids)].float())
            out.append((backbone.decode_tokens(side_ids), codes[:, cols].float().numpy()))
    return out
