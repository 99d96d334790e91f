"""The one sampler (tiny model): seeded streams, both sampling branches against the retired samplers."""

from __future__ import annotations

import math

import pytest

from prefaudit.errors import ConfigError
from prefaudit.generation import SamplingConfig, generate_texts, generate_token_ids, sample_next

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [
    [{"role": "user", "content": "what is the water"}],
    [{"role": "user", "content": "how do you find a word"}],
    [{"role": "system", "content": "be short"}, {"role": "user", "content": "tell me of the day"}],
    [{"role": "user", "content": "is it a great question that you can answer with more time"}],
    [{"role": "user", "content": "what"}],
]


# ---------------------------------------------------------------- references: the retired samplers
def old_verify_sample(logits, s, gen):  # prefaudit/verify.py `_sample` before prefaudit.generation
    if s.temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / s.temperature, dim=-1)
    if s.top_p < 1:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p > s.top_p, 0.0)
        return idx.gather(-1, torch.multinomial(sorted_p, 1, generator=gen)).squeeze(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def old_demo_sample(logits, cfg, gen):  # prefaudit/demo/generate.py `_sample`
    if cfg.temperature == 0:
        return logits.argmax(-1)
    top, idx = (logits / cfg.temperature).topk(min(cfg.top_k, logits.shape[-1]), dim=-1)
    probs = torch.softmax(top, dim=-1)
    probs = probs.masked_fill(probs.cumsum(-1) - probs > cfg.top_p, 0.0)
    choice = torch.multinomial(probs, 1, generator=gen)
    return idx.gather(-1, choice).squeeze(-1)


def old_generate_ids(model, pad_id, eos_id, prompts, s, sample, seed, cache_kw="past_key_values"):
    """prefaudit/verify.py `generate_ids` (the demo's `_generate_batch` was the same loop)."""
    from transformers import DynamicCache

    gen = torch.Generator().manual_seed(int(seed))
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
    with torch.inference_mode():
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
            nxt = torch.where(done, torch.full((n,), eos_id, dtype=torch.long), sample(logits, s, gen))
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == eos_id
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long)], dim=1)
            logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos, **kw).logits[
                :, -1
            ]
            next_pos = next_pos + 1
    return [r[: r.index(eos_id)] if eos_id in r else r for r in out.tolist()]


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def bb(tiny_model_dir):  # type: ignore[no-untyped-def]
    from prefaudit.backbone import Backbone

    return Backbone.load(tiny_model_dir, layer=2, dtype="float32")


BRANCHES = {"full-vocab": {}, "top-k": {"top_k": 50}}


# ---------------------------------------------------------------- (a) seeded streams
@pytest.mark.parametrize("branch", list(BRANCHES))
def test_same_seed_same_texts_other_seed_other_texts(bb, branch: str) -> None:  # type: ignore[no-untyped-def]
    cfg = SamplingConfig(max_new_tokens=12, batch_size=2, seed=3, **BRANCHES[branch])
    a = generate_texts(bb.model, bb, PROMPTS, cfg)
    assert a == generate_texts(bb.model, bb, PROMPTS, cfg)
    assert all(isinstance(t, str) for t in a)
    other = generate_texts(bb.model, bb, PROMPTS, SamplingConfig(**{**cfg.to_dict(), "seed": 4}))
    assert other != a


def test_batches_resume_independently_and_strip(bb) -> None:  # type: ignore[no-untyped-def]
    cfg = SamplingConfig(max_new_tokens=10, batch_size=2, top_k=20, seed=1)
    full = generate_texts(bb.model, bb, PROMPTS, cfg)
    seen: list[tuple[int, list[int], list[str]]] = []
    part = generate_texts(bb.model, bb, PROMPTS, cfg, skip_batches={1}, on_batch=lambda *a: seen.append(a))
    assert [b for b, _, _ in seen] == [0, 2]
    assert sorted(i for _, idx, _ in seen for i in idx) == [i for i, t in enumerate(part) if t is not None]
    assert sum(t is None for t in part) == 2
    assert all(t is None or t == full[i] for i, t in enumerate(part))
    assert generate_texts(bb.model, bb, PROMPTS, cfg, strip=True) == [t.strip() for t in full]


def test_model_mode_is_restored(bb) -> None:  # type: ignore[no-untyped-def]
    bb.model.train()
    try:
        generate_texts(bb.model, bb, PROMPTS[:1], SamplingConfig(max_new_tokens=2))
        assert bb.model.training
    finally:
        bb.model.eval()


# ---------------------------------------------------------------- (b) the retired samplers, exactly
CONFIGS = [
    {"temperature": 0.0},
    {},
    {"top_p": 1.0},
    {"top_p": 0.5, "temperature": 1.3},
    {"top_k": 5},
    {"top_k": 50, "top_p": 1.0},
    {"top_k": 50, "top_p": 0.9},
    {"top_k": 10_000, "top_p": 0.3},  # more than the vocabulary: all of it
]


@pytest.mark.parametrize("overrides", CONFIGS, ids=str)
def test_sample_next_reproduces_the_retired_samplers(overrides: dict) -> None:
    cfg = SamplingConfig(**overrides)
    reference = old_verify_sample if cfg.top_k is None else old_demo_sample
    logits = torch.randn(6, 300, generator=torch.Generator().manual_seed(7)) * 3
    g_new, g_old = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    for _ in range(20):
        assert torch.equal(sample_next(logits, cfg, g_new), reference(logits, cfg, g_old))
    # The same number of draws: the streams are still in step.
    assert torch.equal(torch.rand(4, generator=g_new), torch.rand(4, generator=g_old))


@pytest.mark.parametrize("overrides", [{}, {"top_k": 50}, {"repetition_penalty": 1.0, "top_k": 8}], ids=str)
def test_decode_loop_reproduces_the_retired_loop(bb, overrides: dict) -> None:  # type: ignore[no-untyped-def]
    cfg = SamplingConfig(max_new_tokens=16, **overrides)
    reference = old_verify_sample if cfg.top_k is None else old_demo_sample
    tok = bb.tokenizer
    prompts = [bb.prompt_ids(m) for m in PROMPTS]
    new = generate_token_ids(
        bb.model,
        prompts,
        cfg,
        pad_id=tok.pad_token_id,
        eos_id=tok.eos_token_id,
        generator=torch.Generator().manual_seed(5),
        cache_kw=bb.cache_kwarg,
    )
    old = old_generate_ids(
        bb.model, tok.pad_token_id, tok.eos_token_id, prompts, cfg, reference, 5, bb.cache_kwarg
    )
    assert new == old and any(new)
    assert bb.cache_kwarg in ("cache", "past_key_values")  # by the transformers version


# ---------------------------------------------------------------- (c) validation
def test_defaults_and_recorded_dicts() -> None:
    cfg = SamplingConfig()
    assert cfg.to_dict() == {
        "max_new_tokens": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": None,
        "repetition_penalty": 1.1,
        "batch_size": 16,
        "seed": 0,
        "samples_per_prompt": 1,
    }
    demo = SamplingConfig(max_new_tokens=96, top_k=50, repetition_penalty=1.15, batch_size=64)
    # The retired GenerationConfig().to_dict(), in order: corpus caches and the SAE's metadata.
    assert list(demo.cache_dict().items()) == [
        ("max_new_tokens", 96),
        ("temperature", 0.7),
        ("top_p", 0.9),
        ("top_k", 50),
        ("repetition_penalty", 1.15),
        ("batch_size", 64),
        ("seed", 0),
    ]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"batch_size": True}, "batch_size"),
        ({"batch_size": 2.0}, "batch_size"),
        ({"samples_per_prompt": 0}, "samples_per_prompt"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 5.0}, "top_k"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"repetition_penalty": 0.9}, "repetition_penalty"),
    ],
    ids=str,
)
def test_bad_configs_raise_config_error(bad: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SamplingConfig(**bad)
    with pytest.raises(ValueError):  # what the demo's GenerationConfig raised
        SamplingConfig(**bad)
