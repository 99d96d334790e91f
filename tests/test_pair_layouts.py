"""The pair layouts (packed row, prompt cache, separate passes) read the same activations, and the
token-budget batching never changes the features.

The packed layout is checked against two independent computations: separate ``prompt + response``
passes and the prompt-cache layout, under ``sdpa`` and ``eager`` attention, with prompts and
responses of very different lengths and an empty response. The slow test repeats it on the real
SmolLM2 and the HH slice.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import prefaudit as pa
from prefaudit import pair_layouts
from prefaudit.backbone import Backbone
from prefaudit.errors import ConfigError
from prefaudit.features.encode import encode_shard, length_batches
from prefaudit.features.sae import load_sae
from tests import tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bb(tiny_model_dir):
    return Backbone.load(tiny_model_dir, layer=2, dtype="float32")


def _batch(bb):
    prompts = [
        bb.prompt_ids([{"role": "user", "content": "the water is long and " * 6}]),
        bb.prompt_ids([{"role": "user", "content": "a"}]),
        bb.prompt_ids([{"role": "user", "content": "how many people"}]),
    ]
    resp = [
        (bb.response_ids("you can find it here")[0], bb.response_ids("no")[0]),
        (bb.response_ids("what a great question! see the link " * 3)[0], bb.response_ids("sorry")[0]),
        ([], bb.response_ids("two people call it water")[0]),  # an empty chosen response
    ]
    return prompts, resp


def _layouts(bb, prompts, resp):
    fwd, pad, dev = bb._forward_to_layer, bb.tokenizer.pad_token_id, bb.device
    with torch.inference_mode():
        return {
            "packed": pair_layouts.read_packed(fwd, bb.model, pad, dev, prompts, resp),
            "cache": pair_layouts.read_prompt_cache(fwd, bb.model, pad, dev, prompts, resp),
            "separate": pair_layouts.read_separate(fwd, pad, dev, prompts, resp),
        }


def _assert_same_responses(got, ref, resp):
    assert got.shape == ref.shape
    for j, seq in enumerate(r for pair in resp for r in pair):
        torch.testing.assert_close(got[j, : len(seq)], ref[j, : len(seq)], rtol=1e-4, atol=1e-5)


def test_packed_row_equals_prompt_cache_and_separate_passes(bb):
    prompts, resp = _batch(bb)
    assert bb.packs_pairs and bb.model.config._attn_implementation == "sdpa"
    out = _layouts(bb, prompts, resp)
    (packed, n_packed), (cache, n_cache), (sep, n_sep) = out["packed"], out["cache"], out["separate"]
    _assert_same_responses(packed, sep, resp)
    _assert_same_responses(cache, sep, resp)
    assert not packed[4, 0].any() and packed[5, : len(resp[2][1])].all(dim=1).all()  # the empty chosen
    # Both sharing layouts read each prompt once: prompt + chosen + rejected tokens per pair.
    assert (
        n_packed == n_cache == sum(len(p) + len(c) + len(r) for p, (c, r) in zip(prompts, resp, strict=True))
    )
    assert n_sep - n_packed == sum(len(p) for p in prompts)
    # The packed row really holds a rejected response that would differ had it seen the chosen one.
    with torch.inference_mode():
        p, (c, r) = prompts[0], resp[0]
        ids = torch.tensor([p + c + r])
        seen = bb._forward_to_layer(ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None])
    # (ten times the tolerance the equalities above hold to)
    assert (seen[0, len(p) + len(c) :] - packed[1, : len(r)]).abs().max() > 1e-4


def test_packed_row_under_eager_attention_takes_an_additive_mask(tiny_model_dir, bb):
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    eager = Backbone.load(lm, tokenizer=bb.tokenizer, layer=2)
    assert eager.model.config._attn_implementation == "eager" and eager.packs_pairs
    prompts, resp = _batch(eager)
    packed, _ = eager.read_pairs(prompts, resp, share_prompt=True)
    sep, _ = eager.read_pairs(prompts, resp, share_prompt=False)
    _assert_same_responses(packed, sep, resp)


def test_packing_is_used_only_where_the_mask_is_exact():
    def cfg(attn="sdpa", window=None, types=None, **kw):
        return SimpleNamespace(_attn_implementation=attn, sliding_window=window, layer_types=types, **kw)

    full = ["full_attention"] * 4
    assert pair_layouts.packs_pairs(cfg(types=full), 3, 896)
    assert pair_layouts.packs_pairs(cfg(attn="eager"), 3, 896)
    assert not pair_layouts.packs_pairs(cfg(attn="flash_attention_2", types=full), 3, 896)
    # Gemma-style alternating layers: a window shorter than the longest row keeps the prompt cache.
    gemma = ["sliding_attention", "full_attention"] * 2
    assert not pair_layouts.packs_pairs(cfg(window=512, types=gemma), 3, 896)
    assert pair_layouts.packs_pairs(cfg(window=4096, types=gemma), 3, 896)
    # Only the blocks up to the read layer matter.
    assert pair_layouts.packs_pairs(cfg(window=8, types=["full_attention", "sliding_attention"]), 0, 896)
    assert not pair_layouts.packs_pairs(cfg(types=["chunked_attention"] * 4), 3, 896)
    # No layer_types (Mistral, older Qwen2): the window applies unless use_sliding_window says not.
    assert not pair_layouts.packs_pairs(cfg(window=256), 3, 896)
    assert pair_layouts.packs_pairs(cfg(window=256, use_sliding_window=False), 3, 896)


@pytest.mark.parametrize("layout", ["packed", "cache", "separate"])
def test_token_budget_batches_cover_every_pair_once_within_their_limits(layout):
    rng = np.random.default_rng(0)
    n = 300
    p, rc = rng.integers(5, 330, n), rng.integers(0, 260, (n, 2))
    share, packed = layout != "separate", layout == "packed"
    batches = length_batches(p, rc, batch_tokens=2048, share_prompt=share, packed=packed, max_padding=0.25)
    assert sorted(np.concatenate(batches).tolist()) == list(range(n))
    for b in batches:
        longer = rc[b].max(axis=1)
        cost = {
            "packed": len(b) * (p[b] + rc[b].sum(axis=1)).max(),
            "cache": len(b) * (p[b].max() + 2 * longer.max()),
            "separate": 2 * len(b) * (p[b] + longer).max(),
        }[layout]
        real = (p[b] + rc[b].sum(axis=1)).sum() + (0 if share else p[b].sum())
        assert len(b) == 1 or (cost <= 2048 and cost <= 1.25 * real)
    # A pair costlier than the budget is a batch of its own; batch_size caps pairs as before.
    alone = length_batches([500, 10, 10], [(200, 100), (5, 5), (5, 6)], batch_tokens=128)
    assert [b.tolist() for b in alone] == [[1, 2], [0]]
    capped = length_batches([40] * 20, [30] * 20, 8, batch_tokens=10**6, share_prompt=share, packed=packed)
    assert [len(b) for b in capped] == [8, 8, 4]


def test_batch_limits_are_checked():
    with pytest.raises(ConfigError, match="batch_tokens=0"):
        length_batches([10], [5], batch_tokens=0)
    with pytest.raises(ConfigError, match="batch_size=0"):
        length_batches([10], [5], 0)
    with pytest.raises(ConfigError, match=r"shape \(2, 3\)"):
        length_batches([10, 12], [[5, 6, 7], [1, 2, 3]])


def test_features_do_not_depend_on_the_grouping_or_the_layout(bb, tiny_sae_dir):
    sae = load_sae(tiny_sae_dir)
    pairs = pa.load_pairs(tiny.planted_pairs(14))
    msgs = [pairs.messages(i) for i in range(len(pairs))]
    chosen, rejected = pairs.df["chosen"].tolist(), pairs.df["rejected"].tolist()
    runs = {}
    for name, kw in {
        "one pair per pass": {"batch_tokens": 1},
        "budget 256": {"batch_tokens": 256},
        "all in one pass": {"batch_tokens": 10**6},
        "batch_size 3": {"batch_size": 3},
        "separate passes": {"share_prompt": False, "batch_tokens": 512},
    }.items():
        sizes: list[int] = []
        enc, _ = encode_shard(
            bb, sae, msgs, chosen, rejected, pooling="max", on_batch=lambda k, _, s=sizes: s.append(k), **kw
        )
        runs[name] = (enc, sizes)
    # The groupings really differ (the padding bound may still split the unlimited one).
    sizes = {name: tuple(s) for name, (_, s) in runs.items()}
    assert sizes["one pair per pass"] == (1,) * 14 and len(sizes["all in one pass"]) <= 2
    assert max(sizes["batch_size 3"]) == 3 and len(set(sizes.values())) == len(sizes)
    ref = runs["one pair per pass"][0]
    for name, (enc, _) in runs.items():
        for side in ("chosen", "rejected"):
            got, want = enc.side(side), ref.side(side)
            np.testing.assert_allclose(
                got.values.toarray(), want.values.toarray(), rtol=1e-4, atol=1e-5, err_msg=name
            )
            np.testing.assert_allclose(got.mean_act, want.mean_act, rtol=1e-4, atol=1e-5, err_msg=name)
            np.testing.assert_array_equal(got.n_tokens, want.n_tokens)


@pytest.mark.slow
def test_packed_pairs_equal_separate_passes_on_smollm2_and_hh(hh_path):
    """The real model and data: layer activations and pooled features of the packed layout equal
    two separate passes (float32, so the tolerance is tight and machine-independent)."""
    real = Backbone.load(dtype="float32")
    assert real.packs_pairs
    pairs = pa.load_pairs(hh_path, limit=6)
    prompts = [real.prompt_ids(pairs.messages(i)) for i in range(len(pairs))]
    resp = [
        (real.response_ids(c)[0], real.response_ids(r)[0])
        for c, r in zip(pairs.df["chosen"], pairs.df["rejected"], strict=True)
    ]
    packed, _ = real.read_pairs(prompts, resp, share_prompt=True)
    sep, _ = real.read_pairs(prompts, resp, share_prompt=False)
    for j, seq in enumerate(r for pair in resp for r in pair):
        scale = sep[j, 1 : len(seq)].abs().max()  # position 0 of a response is never the sink
        torch.testing.assert_close(packed[j, : len(seq)], sep[j, : len(seq)], rtol=1e-3, atol=1e-4 * scale)
