"""Backbone reading and pooled encoding, checked against an independent reference computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import prefaudit as pa
from prefaudit.backbone import Backbone
from prefaudit.errors import ModelError
from prefaudit.features.encode import encode_pairs
from prefaudit.features.sae import load_sae
from tests import tiny


@pytest.fixture(scope="module")
def bb(tiny_model_dir):
    return Backbone.load(tiny_model_dir, layer=2, dtype="float32")


@pytest.fixture(scope="module")
def sae(tiny_sae_dir):
    return load_sae(tiny_sae_dir)


def test_default_layer_is_middle_and_bad_layer_is_refused(tiny_model_dir):
    assert Backbone.load(tiny_model_dir).layer == 2
    with pytest.raises(ModelError, match="out of range"):
        Backbone.load(tiny_model_dir, layer=4)


def test_missing_model_directory_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        Backbone.load(tmp_path / "nope-not-here")


def test_prompt_is_chat_templated_and_left_truncated(bb):
    text = bb.render_prompt([{"role": "user", "content": "hello"}])
    assert text.endswith("<|im_start|>assistant\n") and "hello" in text
    long = [{"role": "user", "content": "word " * 2000}]
    ids = bb.prompt_ids(long)
    assert len(ids) == bb.max_prompt_tokens
    # The end of the prompt (the assistant header) survives truncation.
    assert bb.tokenizer.decode(ids).endswith("assistant\n")


def test_shared_prompt_pass_equals_separate_full_passes(bb):
    prompts = [
        bb.prompt_ids([{"role": "user", "content": "the water is long"}]),
        bb.prompt_ids([{"role": "user", "content": "a"}]),
    ]
    resp = [
        (bb.response_ids("you can find it here")[0], bb.response_ids("no")[0]),
        (
            bb.response_ids("what a great question! see the link")[0],
            bb.response_ids("sorry I cannot help with that one")[0],
        ),
    ]
    shared, n_shared = bb.read_pairs(prompts, resp, share_prompt=True)
    full, n_full = bb.read_pairs(prompts, resp, share_prompt=False)
    for j, seq in enumerate(r for pair in resp for r in pair):
        torch.testing.assert_close(shared[j, : len(seq)], full[j, : len(seq)], rtol=1e-4, atol=1e-5)
    # Each prompt went through the model once instead of twice.
    assert n_full - n_shared == sum(len(p) for p in prompts)


def test_read_layer_matches_hidden_states_of_a_full_forward(bb):
    prompt = bb.prompt_ids([{"role": "user", "content": "how many people"}])
    resp = bb.response_ids("two people call it water")[0]
    h, _ = bb.read_pairs([prompt], [(resp, resp)], share_prompt=True)
    ids = torch.tensor([prompt + resp])
    with torch.no_grad():
        out = bb.model(input_ids=ids, output_hidden_states=True)
    ref = out.hidden_states[bb.layer + 1][0, len(prompt) :]
    torch.testing.assert_close(h[0, : len(resp)], ref, rtol=1e-4, atol=1e-5)


def _reference_pooled(bb, sae, messages, text, pooling):
    """Pool SAE codes of one response from a plain full forward (independent of encode.py)."""
    prompt = bb.prompt_ids(messages)
    resp = bb.response_ids(text)[0]
    with torch.no_grad():
        out = bb.model(input_ids=torch.tensor([prompt + resp]), output_hidden_states=True)
        acts = out.hidden_states[bb.layer + 1][0, len(prompt) :]
        codes = sae.sae.encode(acts).numpy()
    return {"max": codes.max(0), "mean": codes.mean(0), "sum": codes.sum(0)}[pooling], codes


@pytest.mark.parametrize("pooling", ["max", "mean", "sum"])
def test_encode_pairs_matches_reference_pooling(bb, sae, pooling):
    pairs = pa.load_pairs(tiny.planted_pairs(12))
    enc = encode_pairs(
        pairs, bb, sae, pooling=pooling, batch_size=5, shard_size=7, cache_dir=None, progress=False
    )
    assert enc.chosen.values.shape == (12, sae.d_sae)
    for i in range(12):
        for side in ("chosen", "rejected"):
            ref, codes = _reference_pooled(bb, sae, pairs.messages(i), pairs.df[side].iloc[i], pooling)
            got = enc.side(side).values[i].toarray().ravel()
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
            # The recorded peak position is where the feature attains its maximum.
            row = enc.side(side).values[i]
            lo = enc.side(side).values.indptr[i]
            pos = enc.side(side).top_pos[lo : lo + row.nnz]
            np.testing.assert_allclose(codes[pos, row.indices], codes[:, row.indices].max(0), rtol=1e-5)
    assert enc.chosen.n_tokens.min() > 0


def test_sae_that_does_not_fit_is_refused(bb, tmp_path):
    wrong_width = load_sae(tiny.build_sae(tmp_path / "w", d_in=16))
    with pytest.raises(ModelError, match="d_in=16"):
        wrong_width.check_fits(bb)
    wrong_layer = load_sae(tiny.build_sae(tmp_path / "l", hook="model.layers.1"))
    with pytest.raises(ModelError, match="layer 1"):
        wrong_layer.check_fits(bb)
    not_resid = load_sae(tiny.build_sae(tmp_path / "z", hook="blocks.2.attn.hook_z"))
    with pytest.raises(ModelError, match="residual-stream"):
        not_resid.check_fits(bb)
    tl_name = load_sae(tiny.build_sae(tmp_path / "tl", hook="blocks.2.hook_resid_post"))
    tl_name.check_fits(bb)  # TransformerLens naming of the same layer is accepted


def test_sae_sources_fail_with_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match=r"no cfg\.json"):
        load_sae(tmp_path)
    import sae_lens

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", classmethod(lambda cls, *a, **k: offline()))
    with pytest.raises(ModelError, match=r"release='gemma-scope'.*local directory"):
        load_sae(("gemma-scope", "layer_12/width_16k"))
