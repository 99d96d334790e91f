"""Tiny, real parts for fast tests: a random Llama with a locally trained tokenizer and a TopK SAE.

Everything is built offline in seconds with the same libraries as the real thing (transformers,
tokenizers, sae-lens), so the code paths under test are the production ones.
"""

from __future__ import annotations

import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "you",
    "that",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "be",
    "at",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
    "word",
    "but",
    "not",
    "what",
    "all",
    "were",
    "we",
    "when",
    "your",
    "can",
    "said",
    "there",
    "use",
    "an",
    "each",
    "which",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
    "some",
    "her",
    "would",
    "make",
    "like",
    "him",
    "into",
    "time",
    "has",
    "look",
    "two",
    "more",
    "write",
    "go",
    "see",
    "number",
    "no",
    "way",
    "could",
    "people",
    "my",
    "than",
    "first",
    "water",
    "been",
    "call",
    "who",
    "oil",
    "its",
    "now",
    "find",
    "long",
    "down",
    "day",
    "did",
    "get",
    "come",
    "made",
    "may",
    "part",
    "great",
    "question",
    "sorry",
    "cannot",
    "help",
    "answer",
    "here",
    "http",
    "www",
    "example",
    "com",
    "link",
    "see",
    "more",
    "**bold**",
    "#",
    "header",
    "-",
    "list",
    "item",
    "!",
    "?",
    ".",
    ",",
    ":",
    ";",
]


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 30))) for _ in range(n)]


def build_tokenizer(path: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


def build_model(path: Path, *, layers: int = 4, hidden: int = 32, seed: int = 0) -> Path:
    """A random LlamaForCausalLM + tokenizer saved as a normal local checkpoint."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(path)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def build_sae(
    path: Path, *, d_in: int = 32, d_sae: int = 64, k: int = 4, hook: str = "model.layers.2", seed: int = 0
) -> Path:
    """A TopK SAE (sae-lens classes) with random weights, saved with ``save_model``."""
    import torch
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    torch.manual_seed(seed)
    cfg = TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, metadata=SAEMetadata(hook_name=hook, model_name="tiny"))
    sae = TopKSAE(cfg)
    with torch.no_grad():
        sae.W_enc.normal_(0, 1.0 / d_in**0.5)
        sae.W_dec.copy_(sae.W_enc.T)
        sae.b_enc.normal_(0, 0.1)
    sae.save_model(path)
    return path


def planted_pairs(n: int = 40, seed: int = 0) -> list[dict]:
    """Text pairs where chosen carries a 'great question' opener and a URL far more often."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        base = " ".join(rng.choice(WORDS[:60]) for _ in range(rng.randint(6, 20)))
        other = " ".join(rng.choice(WORDS[:60]) for _ in range(rng.randint(6, 20)))
        chosen = ("What a great question! " if i % 10 < 8 else "") + base
        chosen += " See http://www.example.com for more." if i % 10 < 6 else ""
        rejected = ("Sorry, I cannot help. " if i % 10 < 3 else "") + other
        rows.append(
            {
                "prompt": f"question {i}: " + " ".join(rng.choice(WORDS[:60]) for _ in range(5)),
                "chosen": chosen,
                "rejected": rejected,
                "idx": i,
            }
        )
    return rows


# ---------------------------------------------------------------------- planted co-firing blocks
BLOCK_A, BLOCK_B = list(range(0, 8)), list(range(8, 16))


def plant_blocks(session, *, lean: bool = True, seed: int = 0) -> None:
    """Replace the tiny SAE's features 0–15 of an encoded session by two planted co-firing blocks.

    Block A (0–7) fires, peaking on the token of "great", in the chosen responses that open with
    "What a great question!" and in no rejected one (``lean=False``: in 50% of the responses of
    either side); block B (8–15) fires in 35% of all responses, peaking on the first
    token. A member fires in 90% of its block's responses, with an exponential value. Features
    16… keep what the tiny SAE read. The session's features change as after an encode.
    """
    import numpy as np
    import scipy.sparse as sp

    from prefaudit.features.encoded import EncodedFeatures, SidePooled

    enc, df, backbone = session.encoded, session.data.df, session.backbone
    rng = np.random.default_rng(seed)
    n, d = enc.n_pairs, enc.d_sae
    planted = []
    for name, side in (("chosen", enc.chosen), ("rejected", enc.rejected)):
        vals = side.values.toarray().astype(np.float32)
        coo = side.values.tocoo()
        pos, tok = np.zeros((n, d), np.int32), np.zeros((n, d), np.int32)
        pos[coo.row, coo.col], tok[coo.row, coo.col] = side.top_pos, side.top_token
        token_ids = [backbone.response_ids(t)[0] for t in df[name]]
        words = [backbone.decode_tokens(t) for t in token_ids]
        great = np.array([next((k for k, w in enumerate(ws) if "great" in w), 0) for ws in words])
        if not lean:
            on_a = rng.random(n) < 0.5
        elif name == "chosen":
            on_a = df[name].str.startswith("What a great question").to_numpy()
        else:
            on_a = np.zeros(n, dtype=bool)
        on_b = rng.random(n) < 0.35
        vals[:, :16] = 0
        for block, on, peak in ((BLOCK_A, on_a, great), (BLOCK_B, on_b, np.zeros(n, np.int64))):
            for f in block:
                fire = on & (rng.random(n) < 0.9)
                vals[fire, f] = 0.1 + rng.exponential(size=int(fire.sum()))
                pos[:, f] = peak
                tok[:, f] = [t[p] if len(t) else 0 for t, p in zip(token_ids, peak, strict=True)]
        m = sp.csr_matrix(vals)
        rows = np.repeat(np.arange(n), np.diff(m.indptr))
        planted.append(
            SidePooled(
                values=m,
                top_token=tok[rows, m.indices],
                top_pos=pos[rows, m.indices],
                mean_act=side.mean_act,
                n_tokens=side.n_tokens,
                truncated=side.truncated,
                full_length=side.full_length,
            )
        )
    session.encoded = EncodedFeatures(planted[0], planted[1], enc.pooling, dict(enc.meta))
    session.versions.bump("features")
