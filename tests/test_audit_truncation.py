"""The token window: what the audit cut is counted (by pair), and the length control uses full lengths.

Fast layer on the tiny model and SAE, with limits set at the median prompt and response lengths of
the tiny pairs so that about half are cut. Every count is checked against a recount with the
tokenizer alone. The slow test measures the cuts on the shared HH slice at the default 384/256.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import prefaudit as pa
from prefaudit.features import encode as encode_mod
from prefaudit.features.encoded import EncodedFeatures, Truncation
from prefaudit.stats import paired_tests
from tests import tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_PAIRS = 40


def recount(tok, pairs) -> dict[str, np.ndarray]:
    """Whole token counts with the tokenizer alone: the chat-templated prompt, each response."""

    def n(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    prompts = [
        tok.apply_chat_template(pairs.messages(i), tokenize=False, add_generation_prompt=True)
        for i in range(len(pairs))
    ]
    return {
        "prompt": np.array([n(p) for p in prompts]),
        "chosen": np.array([n(t) for t in pairs.df["chosen"]]),
        "rejected": np.array([n(t) for t in pairs.df["rejected"]]),
    }


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def pairs():
    return pa.load_pairs(tiny.planted_pairs(N_PAIRS))


@pytest.fixture(scope="module")
def full(tok, pairs):
    return recount(tok, pairs)


@pytest.fixture(scope="module")
def limits(full):
    # At the medians: some prompts and responses are cut, others are not.
    return int(np.median(full["prompt"])), int(np.median(np.r_[full["chosen"], full["rejected"]]))


@pytest.fixture(scope="module")
def cut_session(pairs, limits, tiny_model_dir, tiny_sae_dir):
    s = pa.AuditSession(
        pairs,
        model=tiny_model_dir,
        sae=tiny_sae_dir,
        cache_dir=False,
        batch_size=8,
        max_prompt_tokens=limits[0],
        max_response_tokens=limits[1],
    )
    s.encode(progress=False)
    s.test(n_boot=100)
    return s


def expected_cut(pairs, full, limits) -> dict[str, set[int]]:
    ids = pairs.df["pair_id"].to_numpy()
    return {
        "prompt": set(ids[full["prompt"] > limits[0]].tolist()),
        "chosen": set(ids[full["chosen"] > limits[1]].tolist()),
        "rejected": set(ids[full["rejected"] > limits[1]].tolist()),
    }


def test_counts_and_pair_ids_equal_a_recount_with_the_tokenizer(cut_session, pairs, full, limits):
    t = cut_session.space.truncation()
    want = expected_cut(pairs, full, limits)
    for kind in ("prompt", "chosen", "rejected"):
        assert 0 < len(want[kind]) < N_PAIRS, f"the limits should cut some {kind}s, not all"
        assert set(t.pair_ids()[kind]) == want[kind], kind
        assert len(t.pair_ids()[kind]) == len(want[kind])  # no pair listed twice
    assert (t.n_prompts_cut, t.n_chosen_cut, t.n_rejected_cut) == tuple(len(want[k]) for k in want)
    assert (t.max_prompt_tokens, t.max_response_tokens, t.n_pairs) == (*limits, N_PAIRS)
    assert t.note == ""
    enc = cut_session.encoded
    np.testing.assert_array_equal(enc.prompt_length, full["prompt"])
    np.testing.assert_array_equal(enc.chosen.full_length, full["chosen"])
    np.testing.assert_array_equal(enc.rejected.full_length, full["rejected"])
    # What was read is what the backbone keeps: the last prompt tokens, the first response tokens.
    np.testing.assert_array_equal(enc.chosen.n_tokens, np.minimum(full["chosen"], limits[1]))
    assert t.sentence() == (
        f"{len(want['prompt'])} of {N_PAIRS} prompts kept only their last {limits[0]} tokens; "
        f"{len(want['chosen'])} chosen and {len(want['rejected'])} rejected responses were cut at "
        f"{limits[1]} tokens"
    )


def test_lengths_are_full_lengths_and_differ_from_the_read_ones_where_cut(cut_session, full, limits):
    got_c, got_r = cut_session.space.lengths()
    np.testing.assert_array_equal(got_c, full["chosen"])
    np.testing.assert_array_equal(got_r, full["rejected"])
    read_c, read_r = cut_session.encoded.lengths()
    for got, read, side in ((got_c, read_c, "chosen"), (got_r, read_r, "rejected")):
        cut = full[side] > limits[1]
        assert (got[cut] > read[cut]).all() and (got[~cut] == read[~cut]).all()
        np.testing.assert_array_equal(cut, cut_session.encoded.side(side).truncated)


def test_length_control_of_test_uses_the_full_lengths(cut_session, full):
    m = cut_session.matrix
    kw = {"names": cut_session.feature_ids, "n_boot": 100}
    ref = paired_tests(m.chosen, m.rejected, lengths=(full["chosen"], full["rejected"]), **kw)
    res = cut_session.results
    for col in ("delta_len_ctrl", "p_len_ctrl"):
        pd.testing.assert_series_equal(res[col], ref[col])
    # With the truncated lengths the control would differ: the change is not a no-op here.
    read = paired_tests(m.chosen, m.rejected, lengths=cut_session.encoded.lengths(), **kw)
    assert not np.allclose(read["delta_len_ctrl"], res["delta_len_ctrl"], equal_nan=True)
    assert res.attrs["truncation"] == cut_session.space.truncation().counts()
    json.dumps(res.attrs["truncation"])  # plain JSON values: persisted and written to parquet


def test_concepts_only_and_not_yet_encoded_sessions_say_nothing_was_tokenised(tiny_model_dir, tiny_sae_dir):
    concepts = pa.AuditSession(pa.load_pairs(tiny.planted_pairs(12)), sae=False, cache_dir=False)
    t = concepts.space.truncation()
    assert (t.n_prompts_cut, t.n_chosen_cut, t.n_rejected_cut, t.n_responses_cut) == (None,) * 4
    assert "concepts-only" in t.sentence() and "nothing was tokenised" in t.sentence()
    table = concepts.test(n_boot=20)
    assert table.attrs["truncation"]["prompts_cut"] is None
    assert table.attrs["truncation"]["chosen_cut"] is None
    later = pa.AuditSession(
        pa.load_pairs(tiny.planted_pairs(12)), model=tiny_model_dir, sae=tiny_sae_dir, cache_dir=False
    )
    t = later.space.truncation()
    assert t.n_prompts_cut is None and "not encoded yet" in t.sentence()
    assert later._backbone is None  # asking does not load the model


def test_save_load_round_trip_and_a_session_saved_before_full_lengths(cut_session, tmp_path):
    from safetensors.numpy import load_file, save_file

    path = cut_session.save(tmp_path / "saved")
    back = pa.AuditSession.load(path)
    assert back.space.truncation() == cut_session.space.truncation()
    for a, b in zip(back.space.lengths(), cut_session.space.lengths(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.encoded.prompt_cut, cut_session.encoded.prompt_cut)
    assert back.results.attrs["truncation"] == cut_session.results.attrs["truncation"]

    # A session saved before these arrays existed: it loads; response cuts (stored then too) are
    # known, prompt cuts are not (None, with a note), lengths fall back to the tokens read.
    arrays = load_file(str(path / "encoded.safetensors"))
    new = {"prompt_length", "prompt_cut", "chosen_full_length", "rejected_full_length"}
    assert new <= set(arrays)
    save_file({k: v for k, v in arrays.items() if k not in new}, str(path / "encoded.safetensors"))
    # As the prefaudit of then saved it: without a manifest (format 1), so it opens with a warning.
    state = json.loads((path / "session.json").read_text())
    state["format_version"] = 1
    del state["manifest"], state["fingerprint"]
    (path / "session.json").write_text(json.dumps(state))
    with pytest.warns(UserWarning, match="older prefaudit"):
        old = pa.AuditSession.load(path)
    assert not old.encoded.full_lengths_recorded and old.encoded.prompt_cut is None
    t = old.space.truncation()
    assert t.prompts is None and t.chosen == cut_session.space.truncation().chosen
    assert "not recorded" in t.note and "prompt cuts unknown" in t.sentence()
    for a, b in zip(old.space.lengths(), cut_session.encoded.lengths(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert old.test(n_boot=20).attrs["truncation"]["prompts_cut"] is None


def _old_layout(enc: EncodedFeatures) -> EncodedFeatures:
    """``enc`` as CACHE_VERSION 1 wrote it: no full lengths, no prompt arrays."""
    arrays = {k: v for k, v in enc.to_arrays().items() if "full_length" not in k and "prompt_" not in k}
    return EncodedFeatures.from_arrays(arrays)


def test_shards_of_the_old_cache_version_are_not_reused(tiny_model_dir, tiny_sae_dir, tmp_path, monkeypatch):
    from prefaudit.backbone import Backbone
    from prefaudit.features.sae import load_sae

    args = ("pairs-fp", "backbone-fp", "sae-fp", "max", 16)
    key = encode_mod.cache_key(*args)
    monkeypatch.setattr(encode_mod, "CACHE_VERSION", encode_mod.CACHE_VERSION - 1)
    assert encode_mod.cache_key(*args) != key  # the version is part of the key

    # Fill a cache as the old version did (old key, old shard layout), then encode again.
    bb = Backbone.load(tiny_model_dir, layer=2, max_prompt_tokens=50, max_response_tokens=20)
    sae = load_sae(tiny_sae_dir)
    pairs = pa.load_pairs(tiny.planted_pairs(8))
    real = encode_mod.encode_shard
    monkeypatch.setattr(encode_mod, "encode_shard", lambda *a, **k: (_old_layout(real(*a, **k)[0]), 0))
    old = encode_mod.encode_pairs(pairs, bb, sae, shard_size=4, cache_dir=tmp_path, progress=False)
    assert not old.full_lengths_recorded and old.prompt_cut is None  # old shards still load
    monkeypatch.undo()
    calls = []
    monkeypatch.setattr(encode_mod, "encode_shard", lambda *a, **k: calls.append(1) or real(*a, **k))
    new = encode_mod.encode_pairs(pairs, bb, sae, shard_size=4, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2, "old-version shards must be recomputed, not read"
    assert new.full_lengths_recorded and new.prompt_cut is not None
    assert len(list(tmp_path.glob("encode/*/shard-*.npz"))) == 4  # both layouts, under two keys
    # Read back from the new cache: the recorded arrays survive the shard file.
    again = encode_mod.encode_pairs(pairs, bb, sae, shard_size=4, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2
    np.testing.assert_array_equal(again.prompt_length, new.prompt_length)
    np.testing.assert_array_equal(again.rejected.full_length, new.rejected.full_length)


def test_truncation_sentence_and_dict():
    t = Truncation(384, 256, 560, prompts=tuple(range(12)), chosen=(1, 2, 3), rejected=(4, 5, 6, 7, 8))
    assert t.sentence() == (
        "12 of 560 prompts kept only their last 384 tokens; "
        "3 chosen and 5 rejected responses were cut at 256 tokens"
    )
    d = t.to_dict()
    assert d["prompts_cut"] == 12 and d["pair_ids"]["rejected"] == [4, 5, 6, 7, 8]
    assert json.loads(json.dumps(d)) == d


def long_rows(n: int = 24) -> tuple[list[dict], dict[str, set[int]]]:
    """Tiny pairs where some prompts pass 384 tokens and some responses pass 256 (the defaults)."""
    rng = np.random.default_rng(0)
    rows = tiny.planted_pairs(n)

    def words(k: int) -> str:
        return " ".join(rng.choice(tiny.WORDS[:60], size=k))

    for i in (1, 5):
        rows[i]["prompt"] = words(450)
    rows[2]["chosen"] += " " + words(300)
    for i in (3, 7):
        rows[i]["rejected"] = words(300)
    return rows, {"prompt": {1, 5}, "chosen": {2}, "rejected": {3, 7}}


def test_cli_summary_and_report_say_what_was_cut(tmp_path, capsys, tiny_model_dir, tiny_sae_dir, tok):
    from prefaudit.cli import main

    rows, _planted = long_rows()
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out"
    argv = [
        "audit",
        str(tmp_path / "pairs.jsonl"),
        "--out",
        str(out),
        "--quiet",
        "--no-cache",
        "--model",
        str(tiny_model_dir),
        "--sae",
        str(tiny_sae_dir),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    want = expected_cut(pa.load_pairs(rows), recount(tok, pa.load_pairs(rows)), (384, 256))
    assert want == _planted  # the planted long texts, and only they, pass the default limits
    summary = json.loads((out / "summary.json").read_text())
    trunc = summary["truncation"]
    assert (trunc["prompts_cut"], trunc["chosen_cut"], trunc["rejected_cut"]) == (2, 1, 2)
    assert (trunc["max_prompt_tokens"], trunc["max_response_tokens"], trunc["n_pairs"]) == (384, 256, 24)
    assert {k: set(v) for k, v in trunc["pair_ids"].items()} == want
    assert summary["truncated_responses"] == 3
    sentence = "2 of 24 prompts kept only their last 384 tokens; 1 chosen and 2 rejected responses were cut at 256 tokens"
    assert trunc["sentence"] == sentence
    assert f"token window: {sentence}" in printed
    html = (out / "report.html").read_text()
    assert (
        f"Token window: {sentence}." in html
        and "Cut, by pair_id: prompt 1, 5; chosen 2; rejected 3, 7" in html
    )


def test_cli_concepts_only_reports_no_counts(tmp_path, capsys):
    from prefaudit.cli import main

    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in tiny.planted_pairs(20)) + "\n")
    out = tmp_path / "out"
    assert main(["audit", str(tmp_path / "pairs.jsonl"), "--out", str(out), "--no-sae", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["truncated_responses"] is None
    assert (
        summary["truncation"]["prompts_cut"] is None and summary["truncation"]["pair_ids"]["prompt"] is None
    )
    assert "token window: concepts-only audit: nothing was tokenised" in capsys.readouterr().out
    assert "concepts-only audit: nothing was tokenised" in (out / "report.html").read_text()


# ---------------------------------------------------------------------- real data (slow)
def _tiny_model_with(tok, path):
    """A random 4-layer Llama (hidden 32, so the tiny SAE fits layer 2) with ``tok``'s vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.slow
def test_hh_slice_cuts_at_the_default_window(hh_path, tiny_sae_dir, tmp_path):
    """Share of HH prompts and responses cut at 384/256 by the default tokenizer (no model forward),
    and the same counts from ``truncation()`` on a 100-pair sample encoded through a tiny model with
    that tokenizer and the tiny SAE."""
    from transformers import AutoTokenizer

    from prefaudit.backbone import Backbone
    from prefaudit.default_model import default_model_dir

    tok = AutoTokenizer.from_pretrained(default_model_dir(progress=False))
    # The backbone's own rendering and truncation; they need the tokenizer, not the model.
    bb = Backbone(model=None, tokenizer=tok, layer=0, name="tokenizer only", dtype="float32")
    pairs = pa.load_pairs(hh_path)
    n = len(pairs)
    full = recount(tok, pairs)
    for i in range(0, n, 97):  # the recount agrees with what the backbone keeps
        kept = bb.prompt_ids(pairs.messages(i))
        assert len(kept) == min(full["prompt"][i], 384)
        assert bb.response_ids(pairs.df["chosen"].iloc[i])[1] == (full["chosen"][i] > 256)
    cut = {k: full[k] > (384 if k == "prompt" else 256) for k in full}
    print(
        f"\nHH slice ({n} pairs, {hh_path.name}) at 384/256: prompts cut {cut['prompt'].sum()} "
        f"({cut['prompt'].mean():.1%}), chosen cut {cut['chosen'].sum()} ({cut['chosen'].mean():.1%}), "
        f"rejected cut {cut['rejected'].sum()} ({cut['rejected'].mean():.1%}); "
        f"longest prompt {full['prompt'].max()}, response {max(full['chosen'].max(), full['rejected'].max())} tokens"
    )
    # A 100-pair sample with the most cuts first, so that the comparison has cuts to compare.
    score = cut["prompt"].astype(int) + cut["chosen"] + cut["rejected"]
    sample = np.sort(np.argsort(-score, kind="stable")[:100])
    sub = pairs.subset(sample.tolist())
    s = pa.AuditSession(
        sub, model=_tiny_model_with(tok, tmp_path / "m"), sae=tiny_sae_dir, cache_dir=False, batch_size=8
    )
    s.encode(progress=False)
    t = s.space.truncation()
    ids = sub.df["pair_id"].to_numpy()
    for kind in ("prompt", "chosen", "rejected"):
        assert set(t.pair_ids()[kind]) == set(ids[cut[kind][sample]].tolist()), kind
    np.testing.assert_array_equal(s.encoded.prompt_length, full["prompt"][sample])
    np.testing.assert_array_equal(s.space.lengths()[0], full["chosen"][sample])
    print(f"sample of 100: {t}")
