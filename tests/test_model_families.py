"""Model families (Llama, Gemma 2/3, Qwen2/3, GPT-2), SAE hook names, devices and public SAE ids.

Every family is a TINY RANDOM model built here with transformers' own config and model classes
(hidden 32, 3 blocks, the tiny tokenizer of ``tests/tiny.py``), saved to a temporary directory and
loaded through ``Backbone.load`` like a real checkpoint. A family this transformers cannot build
is skipped with the reason, never silently.

The Gemma configs get a sliding window of 8 tokens (real ones: 4096 / 512-1024) and prompts
longer than that, so the sliding-window layers and their cache are exercised by the shared-prompt
path; GPT-2 gets no chat template, as GPT-2 checkpoints have none.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import prefaudit as pa
from prefaudit.backbone import Backbone, default_dtype_name, resolve_device
from prefaudit.errors import ModelError
from prefaudit.features.sae import layer_of_hook, load_sae
from tests import tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_LAYERS = 3
HIDDEN = 32

# A Gemma-2-shaped template: no system role (it raises, as Gemma 2's own template does).
GEMMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# family -> (config class name, blocks path, final-norm path, chat template)
FAMILIES = {
    "llama": ("LlamaConfig", "model.layers", "model.norm", tiny.CHAT_TEMPLATE),
    "gemma2": ("Gemma2Config", "model.layers", "model.norm", GEMMA2_TEMPLATE),
    "gemma3": ("Gemma3TextConfig", "model.layers", "model.norm", tiny.CHAT_TEMPLATE),
    "qwen2": ("Qwen2Config", "model.layers", "model.norm", tiny.CHAT_TEMPLATE),
    "qwen3": ("Qwen3Config", "model.layers", "model.norm", tiny.CHAT_TEMPLATE),
    "gpt2": ("GPT2Config", "transformer.h", "transformer.ln_f", None),
}


def _config(family: str, tok):
    import transformers

    cls_name = FAMILIES[family][0]
    cls = getattr(transformers, cls_name, None)
    if cls is None:
        pytest.skip(f"transformers {transformers.__version__} has no {cls_name}: cannot build {family}")
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if family == "gpt2":
        return cls(vocab_size=len(tok), n_embd=HIDDEN, n_layer=N_LAYERS, n_head=4, n_positions=1024, **ids)
    kw = dict(
        vocab_size=len(tok),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        **ids,
    )
    if family in ("gemma2", "gemma3"):
        kw.update(head_dim=8, query_pre_attn_scalar=8, sliding_window=8)
        kw.update(layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    if family == "qwen3":
        kw.update(head_dim=8)
    return cls(**kw)


@pytest.fixture(scope="module")
def family_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("families")


@pytest.fixture(scope="module")
def built(family_root):
    """Build each family once per module: family -> model directory (or the skip reason)."""
    cache: dict[str, Path | str] = {}

    def get(family: str) -> Path:
        if family not in cache:
            from transformers import AutoModelForCausalLM

            path = family_root / family
            # Trained in a directory of its own: saving it again writes only the family's template.
            tok = tiny.build_tokenizer(family_root / f"{family}-tokenizer")
            try:
                config = _config(family, tok)
                torch.manual_seed(0)
                model = AutoModelForCausalLM.from_config(config)
            except pytest.skip.Exception as err:
                cache[family] = str(err)
            except Exception as err:  # a family this transformers cannot build
                cache[family] = f"transformers cannot build a tiny {family}: {type(err).__name__}: {err}"
            else:
                model.save_pretrained(path)
                tok.chat_template = FAMILIES[family][3]
                tok.save_pretrained(path)
                cache[family] = path
        if isinstance(cache[family], str):
            pytest.skip(cache[family])
        return cache[family]

    return get


def _prompts_and_responses(bb: Backbone):
    # Two prompts of different lengths (padding) and both longer than the Gemma sliding window.
    prompts = [
        bb.prompt_ids([{"role": "user", "content": "the water is long and the people call it"}]),
        bb.prompt_ids([{"role": "user", "content": "how many people " * 6 + "see the water"}]),
    ]
    resp = [
        (bb.response_ids("you can find it here, see the link")[0], bb.response_ids("no")[0]),
        (
            bb.response_ids("what a great question! see http://www.example.com for more")[0],
            bb.response_ids("sorry I cannot help with that one")[0],
        ),
    ]
    return prompts, resp


# ---------------------------------------------------------------------------------------- hook mapping
@pytest.mark.parametrize("family", list(FAMILIES))
def test_backbone_finds_the_family_blocks_and_names_the_hook(built, family):
    blocks = FAMILIES[family][1]
    bb = Backbone.load(built(family), layer=1, dtype="float32")
    assert bb.n_layers == N_LAYERS and bb.d_model == HIDDEN
    assert bb.hook_name == f"{blocks}.1"
    assert bb.tl_hook_name == "blocks.1.hook_resid_post"
    # The module read is exactly block 1 of the family's block list.
    assert bb._layers[bb.layer] is bb.model.get_submodule(blocks)[1]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_read_layer_L_is_hidden_states_L_plus_1_and_the_last_block_is_read_before_the_norm(built, family):
    """resid_post of block L == ``output_hidden_states[L+1]`` of a plain full forward (L < n-1).

    The last entry of ``hidden_states`` is after the final norm, so block n-1 is checked by
    applying that norm to what the backbone read. Both the shared-prompt path (prompt KV cache
    reused, left-padded prompts) and the two-full-passes path are compared with the reference.
    """
    norm_path = FAMILIES[family][2]
    for layer in range(N_LAYERS):
        bb = Backbone.load(built(family), layer=layer, dtype="float32")
        prompts, resp = _prompts_and_responses(bb)
        assert min(len(p) for p in prompts) > 8  # longer than the Gemma sliding window
        shared, _ = bb.read_pairs(prompts, resp, share_prompt=True)
        full, _ = bb.read_pairs(prompts, resp, share_prompt=False)
        norm = bb.model.get_submodule(norm_path)
        for j, seq in enumerate(r for pair in resp for r in pair):
            p = prompts[j // 2]
            with torch.no_grad():
                out = bb.model(input_ids=torch.tensor([p + list(seq)]), output_hidden_states=True)
            assert len(out.hidden_states) == N_LAYERS + 1
            if layer < N_LAYERS - 1:
                ref = out.hidden_states[layer + 1][0, len(p) :]
                # Not off by one: the neighbouring entry is a different tensor.
                assert not torch.allclose(out.hidden_states[layer][0, len(p) :], ref, atol=1e-3)
                got = shared[j, : len(seq)]
            else:
                ref = out.hidden_states[-1][0, len(p) :]
                assert not torch.allclose(shared[j, : len(seq)], ref, atol=1e-3)  # pre-norm
                with torch.no_grad():
                    got = norm(shared[j : j + 1, : len(seq)])[0]
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(shared[j, : len(seq)], full[j, : len(seq)], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sae_hook_names_of_either_naming_resolve_to_the_read_layer(built, family, tmp_path):
    bb = Backbone.load(built(family), layer=1, dtype="float32")
    names = [bb.tl_hook_name, "blocks.2.hook_resid_pre", bb.hook_name]
    if family == "gpt2":
        names.append("h.1")
    else:
        names.append("layers.1")
    for k, hook in enumerate(names):
        feats = load_sae(tiny.build_sae(tmp_path / f"s{k}", d_in=HIDDEN, hook=hook))
        assert feats.layer == 1, hook
        feats.check_fits(bb)
    wrong = load_sae(tiny.build_sae(tmp_path / "wrong", d_in=HIDDEN, hook="blocks.1.hook_resid_pre"))
    with pytest.raises(ModelError, match="trained on layer 0"):
        wrong.check_fits(bb)
    embed = load_sae(tiny.build_sae(tmp_path / "embed", d_in=HIDDEN, hook="blocks.0.hook_resid_pre"))
    with pytest.raises(ModelError, match="embedding output"):
        embed.check_fits(bb)


def test_layer_of_hook_table():
    table = {
        "blocks.12.hook_resid_post": 12,
        "blocks.13.hook_resid_pre": 12,
        "model.layers.12": 12,
        "layers.12": 12,
        "transformer.h.12": 12,
        "h.12": 12,
        "gpt_neox.layers.12": 12,
        "model.language_model.layers.12": 12,
        "language_model.model.layers.12": 12,
        "model.decoder.layers.12": 12,
        "blocks.0.hook_resid_pre": None,
        "hook_embed": None,
        "blocks.12.hook_resid_mid": None,
        "blocks.12.hook_mlp_out": None,
        "blocks.12.attn.hook_z": None,
    }
    assert {h: layer_of_hook(h) for h in table} == table


@pytest.mark.parametrize("family", list(FAMILIES))
def test_session_encodes_and_tests_end_to_end(built, family, tmp_path):
    sae_dir = tiny.build_sae(tmp_path / "sae", d_in=HIDDEN, hook="blocks.1.hook_resid_post")
    pairs = pa.load_pairs(tiny.planted_pairs(12))
    session = pa.AuditSession(
        pairs, model=built(family), sae=sae_dir, cache_dir=False, batch_size=4, dtype="float32"
    )
    assert session.backbone.layer == 1  # taken from the SAE's hook name
    enc = session.encode(progress=False)
    assert enc.chosen.values.shape == (12, 64) and enc.chosen.n_tokens.min() > 0
    assert enc.meta["hook_name"] == f"{FAMILIES[family][1]}.1"
    table = session.test()
    sae_rows = table[table["source"] == "sae"]
    assert len(sae_rows) == 64 and np.isfinite(sae_rows.loc[sae_rows["n_nonzero"] > 1, "d_z"]).all()
    # The shared-prompt encode equals two full passes per pair.
    full = session.encode(progress=False, share_prompt=False)
    for side in ("chosen", "rejected"):
        np.testing.assert_allclose(
            enc.side(side).values.toarray(), full.side(side).values.toarray(), rtol=1e-4, atol=1e-5
        )


def test_prompts_without_a_chat_template_are_a_plain_transcript(built):
    bb = Backbone.load(built("gpt2"), layer=1, dtype="float32")
    assert not bb.has_chat_template
    msgs = [{"role": "user", "content": "how many people"}, {"role": "assistant", "content": "two"}]
    msgs.append({"role": "user", "content": "and water?"})
    text = bb.render_prompt(msgs)
    assert text == "User: how many people\n\nAssistant: two\n\nUser: and water?\n\nAssistant: "
    assert bb.tokenizer.decode(bb.prompt_ids(msgs)) == text


def test_a_template_without_a_system_role_gets_the_system_text_in_the_first_user_turn(built):
    bb = Backbone.load(built("gemma2"), layer=1, dtype="float32")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    text = bb.render_prompt(msgs)
    assert "<start_of_turn>user\nBe brief.\n\nhello<end_of_turn>" in text
    assert text.endswith("<start_of_turn>model\n")
    assert "system" not in text


# ---------------------------------------------------------------------------------------- devices
def _legacy_default_dtype_name() -> str:
    """``default_dtype_name()`` before devices were chosen (CPU branch; no CUDA here)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def _legacy_fingerprint(bb: Backbone) -> str:
    """``Backbone.fingerprint`` as it was written before (whole tensor to host, then 4 MiB)."""
    h = hashlib.sha256()
    h.update(json.dumps(bb.model.config.to_dict(), sort_keys=True, default=str).encode())
    h.update(f"{bb.layer}|{bb.dtype}|{bb.max_prompt_tokens}|{bb.max_response_tokens}".encode())
    h.update(str(getattr(bb.tokenizer, "chat_template", "")).encode())
    with torch.no_grad():
        for t in [bb.model.get_input_embeddings().weight, *bb._layers[bb.layer].parameters()]:
            h.update(t.detach().float().cpu().numpy().tobytes()[: 1 << 22])
    return h.hexdigest()[:16]


def test_auto_device_resolves_to_cuda_only_when_available():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("CPU") == "cpu"
    with pytest.raises(ModelError, match="Unknown device"):
        resolve_device("gpu-please")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_cuda_requested_without_cuda_is_a_model_error():
    for dev in ("cuda", "cuda:0"):
        with pytest.raises(ModelError, match="CUDA is not available"):
            resolve_device(dev)


def test_dtype_is_chosen_per_device(monkeypatch):
    cpu_choice = _legacy_default_dtype_name()
    assert default_dtype_name("cpu") == cpu_choice
    # Pretend a GPU is there: CUDA gets bf16 where native, else fp16; the CPU keeps its own rule
    # (before, any machine with CUDA got the GPU's dtype even for device="cpu").
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    seen = {}

    def bf16(native):
        def fake(including_emulation=True):
            seen["including_emulation"] = including_emulation
            return native

        return fake

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16(True))
    assert resolve_device("auto") == "cuda"
    assert default_dtype_name("cuda") == default_dtype_name("auto") == default_dtype_name() == "bfloat16"
    assert seen["including_emulation"] is False  # emulated bf16 (pre-Ampere) is slow: fp16 there
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16(False))
    assert default_dtype_name("cuda:1") == "float16"
    assert default_dtype_name("cpu") == cpu_choice
    with pytest.raises(ModelError, match="only 2 CUDA"):
        resolve_device("cuda:2")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the identity holds where 'auto' means the CPU")
def test_auto_on_this_cpu_machine_is_byte_identical_to_cpu(tiny_model_dir, tiny_sae_dir):
    """device="auto" (the new default) gives the same dtype, fingerprints, cache key and values as "cpu".

    The fingerprint also equals the formula used before this change, so encode caches written by
    earlier CPU runs keep their keys.
    """
    auto, cpu = Backbone.load(tiny_model_dir, layer=2), Backbone.load(tiny_model_dir, layer=2, device="cpu")
    assert auto.device == cpu.device == "cpu"
    assert auto.dtype == cpu.dtype == _legacy_default_dtype_name()
    assert auto.fingerprint() == cpu.fingerprint() == _legacy_fingerprint(cpu)
    sae_auto, sae_cpu = load_sae(tiny_sae_dir), load_sae(tiny_sae_dir, device="cpu")
    assert sae_auto.sae.W_enc.device.type == "cpu" and sae_auto.fingerprint() == sae_cpu.fingerprint()

    pairs = pa.load_pairs(tiny.planted_pairs(8))
    encs = []
    for kw in ({}, {"device": "cpu"}):
        s = pa.AuditSession(
            pairs, model=tiny_model_dir, sae=tiny_sae_dir, cache_dir=False, batch_size=4, **kw
        )
        encs.append(s.encode(progress=False))
        assert s.backbone.device == "cpu"
    a, c = encs
    assert a.meta["key"] == c.meta["key"]
    for side in ("chosen", "rejected"):
        x, y = a.side(side), c.side(side)
        assert np.array_equal(x.values.indptr, y.values.indptr)
        assert np.array_equal(x.values.indices, y.values.indices)
        assert x.values.data.tobytes() == y.values.data.tobytes()
        assert x.mean_act.tobytes() == y.mean_act.tobytes()


def test_sae_encode_and_decode_return_on_the_device_of_their_input(tiny_sae_dir):
    feats = load_sae(tiny_sae_dir)
    x = torch.randn(5, HIDDEN)
    z = feats.encode(x)
    assert z.device == x.device and z.dtype == torch.float32
    torch.testing.assert_close(feats.decode(z), feats.sae.decode(feats.sae.encode(x)))


def test_an_already_loaded_model_stays_where_it_is_in_its_own_dtype(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    bb = Backbone.load(lm, tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir), layer=1)
    assert bb.device == "cpu" and bb.dtype == "bfloat16"


def test_cli_passes_device_through_and_refuses_a_bad_one(tmp_path, tiny_model_dir, tiny_sae_dir, capsys):
    from prefaudit.cli import _parser, _session_kwargs, main

    args = _parser().parse_args(["audit", "x.jsonl", "--out", "o", "--device", "cuda:1"])
    assert _session_kwargs(args)["device"] == "cuda:1"
    assert _session_kwargs(_parser().parse_args(["audit", "x.jsonl", "--out", "o"]))["device"] == "auto"
    with pytest.raises(SystemExit):
        _parser().parse_args(["audit", "x.jsonl", "--out", "o", "--device", "tpu"])
    if not torch.cuda.is_available():
        (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in tiny.planted_pairs(6)) + "\n")
        argv = [
            "audit",
            str(tmp_path / "p.jsonl"),
            "--out",
            str(tmp_path / "o"),
            "--quiet",
            "--no-cache",
            "--model",
            str(tiny_model_dir),
            "--sae",
            str(tiny_sae_dir),
            "--device",
            "cuda",
        ]
        assert main(argv) == 2
        assert "CUDA is not available" in capsys.readouterr().err
