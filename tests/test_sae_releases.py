"""Public SAE releases (Gemma Scope, Llama Scope): their ids in sae-lens's directory and the path through ``from_pretrained``.

Nothing downloads: the release directory ships with sae-lens, and ``from_pretrained`` is given a
tiny random SAE of the release's shape in place of the hub's weights.
"""

from __future__ import annotations

import pytest
import torch

import prefaudit as pa
from prefaudit.errors import ModelError
from prefaudit.features.sae import load_sae, split_release_id
from tests import tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HIDDEN = 32  # the tiny model's hidden size (tests/tiny.py)

GEMMA_SCOPE = ("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical")
LLAMA_SCOPE = ("llama_scope_lxr_8x", "l12r_8x")


def test_documented_release_ids_are_in_the_installed_sae_lens_directory():
    """The ids in docs/MODELS_AND_SAES.md exist in sae-lens's own ``pretrained_saes.yaml`` (offline)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    for (release, sae_id), model in ((GEMMA_SCOPE, "gemma-2-2b"), (LLAMA_SCOPE, "meta-llama/Llama-3.1-8B")):
        assert sae_id in directory[release].saes_map
        assert directory[release].model == model
    assert directory[LLAMA_SCOPE[0]].norm_scaling_factor[LLAMA_SCOPE[1]] > 0  # folded by from_pretrained


def test_release_strings_split_where_the_release_ends():
    assert split_release_id("/".join(GEMMA_SCOPE)) == GEMMA_SCOPE
    assert split_release_id("/".join(LLAMA_SCOPE)) == LLAMA_SCOPE
    assert split_release_id("my-release/my_id") == ("my-release", "my_id")
    with pytest.raises(ModelError, match="ambiguous"):
        split_release_id("someone/unknown-release/layer_3/x")


def _hub_sae(hook: str, d_in: int, model_name: str):
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    cfg = TopKSAEConfig(d_in=d_in, d_sae=64, k=4, metadata=SAEMetadata(hook_name=hook, model_name=model_name))
    sae = TopKSAE(cfg)
    with torch.no_grad():
        sae.W_enc.normal_(0, d_in**-0.5)
        sae.W_dec.copy_(sae.W_enc.T)
    return sae


@pytest.mark.parametrize("returns_tuple", [False, True])
@pytest.mark.parametrize(("release_id", "model_name"), [(GEMMA_SCOPE, "gemma-2-2b"), (LLAMA_SCOPE, "llama")])
@pytest.mark.parametrize("as_string", [False, True])
def test_public_release_goes_through_from_pretrained(
    monkeypatch, release_id, model_name, returns_tuple, as_string
):
    """prefaudit's handling of ``(release, sae_id)``, NOT the hub: ``SAE.from_pretrained`` is replaced.

    The stand-in records its arguments and returns a locally built SAE with the hook name the real
    release carries (``blocks.12.hook_resid_post``); sae-lens 6.x returns the SAE, <= 5.x returned
    ``(sae, cfg_dict, sparsity)``, and both are accepted. Nothing is downloaded.
    """
    import sae_lens

    calls = []
    sae = _hub_sae("blocks.12.hook_resid_post", HIDDEN, model_name)

    def fake(cls, release, sae_id, **kw):
        calls.append((release, sae_id, kw))
        return (sae, {}, None) if returns_tuple else sae

    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", classmethod(fake))
    spec = "/".join(release_id) if as_string else release_id
    feats = load_sae(spec)
    assert calls == [
        (*release_id, {"device": "cuda" if torch.cuda.is_available() else "cpu", "dtype": "float32"})
    ]
    assert feats.sae is sae and feats.name == "/".join(release_id)
    assert feats.hook_name == "blocks.12.hook_resid_post" and feats.layer == 12


def test_a_public_release_sets_the_read_layer_of_a_session(monkeypatch, tmp_path):
    """End to end with a tiny 14-block Gemma 2: the release's hook (block 12) chooses the layer read.

    ``SAE.from_pretrained`` is replaced by a local SAE of the right shape (hub not used).
    """
    import sae_lens
    from transformers import AutoModelForCausalLM, Gemma2Config

    tok = tiny.build_tokenizer(tmp_path / "g")
    cfg = Gemma2Config(
        vocab_size=len(tok),
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=14,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "g")
    sae = _hub_sae("blocks.12.hook_resid_post", HIDDEN, "gemma-2-2b")
    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", classmethod(lambda cls, *a, **k: sae))
    session = pa.AuditSession(
        pa.load_pairs(tiny.planted_pairs(6)), model=tmp_path / "g", sae=GEMMA_SCOPE, cache_dir=False
    )
    enc = session.encode(progress=False)
    assert session.backbone.layer == 12 and enc.meta["hook_name"] == "model.layers.12"
    assert enc.meta["sae"] == "/".join(GEMMA_SCOPE) and enc.chosen.values.shape == (6, 64)
