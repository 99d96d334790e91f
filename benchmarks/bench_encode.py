"""Encode throughput and the shared-prompt speed-up, as ratios against baselines run side by side.

Goals (issue "Audit engine"):

* encode (truncated forward + SAE + pooling) >= 2x a naive full forward with
  ``output_hidden_states`` on the same batch, and >= 0.85x the bare truncated forward;
* encoding each prompt once for both responses: on the HH slice, tokens processed fall toward
  (prompt + 2*response) / (2*(prompt + response)) of the naive count, with a matching speed-up.

Every variant runs on the same batches, interleaved, ``--repeats`` times; we report the best and
the median. Run::

    .venv/bin/python benchmarks/bench_encode.py            # real SmolLM2 + the embedded SAE
    .venv/bin/python benchmarks/bench_encode.py --pairs 48 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prefaudit as pa
from prefaudit.backbone import Backbone
from prefaudit.features.encode import encode_batch, length_batches

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test-first1000.jsonl.gz"


def _sae(bb: Backbone):
    from prefaudit.features.sae import DEFAULT_SAE_DIR, _wrap, load_sae

    if (DEFAULT_SAE_DIR / "cfg.json").is_file():
        return load_sae(None)
    # Same shape and cost as the shipped SAE when it is not built yet.
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    cfg = TopKSAEConfig(d_in=bb.d_model, d_sae=4096, k=32, metadata=SAEMetadata(hook_name=bb.hook_name))
    return _wrap(TopKSAE(cfg), "random-4096")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=64, help="HH pairs to encode (default 64)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    torch.manual_seed(0)
    bb = Backbone.load()
    sae = _sae(bb)
    pairs = pa.load_pairs(HH, limit=args.pairs)
    n = len(pairs)
    prompts = [bb.prompt_ids(pairs.messages(i)) for i in range(n)]
    resp = [
        (bb.response_ids(c)[0], bb.response_ids(r)[0])
        for c, r in zip(pairs.df["chosen"], pairs.df["rejected"], strict=True)
    ]
    p_len = [len(p) for p in prompts]
    r_len = [max(len(c), len(r)) for c, r in resp]
    # Each variant batches the way that suits it best (see length_batches).
    batches = length_batches(p_len, r_len, args.batch, share_prompt=False)
    shared_batches = length_batches(p_len, r_len, args.batch, share_prompt=True)
    full_tokens = sum(2 * len(prompts[i]) + len(resp[i][0]) + len(resp[i][1]) for i in range(n))
    shared_tokens = sum(len(prompts[i]) + len(resp[i][0]) + len(resp[i][1]) for i in range(n))

    def padded(b):
        seqs = [prompts[i] + list(r) for i in b for r in resp[i]]
        t = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), t), bb.tokenizer.pad_token_id)
        mask = torch.zeros((len(seqs), t), dtype=torch.long)
        for j, s in enumerate(seqs):
            ids[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
        return ids, mask, torch.arange(t).expand(len(seqs), t)

    padded_batches = [padded(b) for b in batches]
    # Rows x padded length actually fed to the model: what the wall time follows.
    fed_full = sum(2 * len(b) * max(p_len[i] + r_len[i] for i in b) for b in batches)
    fed_shared = sum(
        len(b) * (max(p_len[i] for i in b) + 2 * max(r_len[i] for i in b)) for b in shared_batches
    )

    def naive():
        with torch.inference_mode():
            for ids, mask, _ in padded_batches:
                bb.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)

    def truncated():
        with torch.inference_mode():
            for ids, mask, pos in padded_batches:
                bb._forward_to_layer(ids, mask, pos)

    def encode(share: bool):
        def run():
            for b in shared_batches if share else batches:
                encode_batch(bb, sae, [prompts[i] for i in b], [resp[i] for i in b], share_prompt=share)

        return run

    variants = {
        "naive full forward + hidden states": naive,
        "bare truncated forward": truncated,
        "encode (truncated + SAE + pool)": encode(False),
        "encode, prompt shared by both responses": encode(True),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():  # interleaved: contention hits every variant alike
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"SmolLM2-135M layer {bb.layer}, {bb.dtype}, SAE {sae.name} (d_sae {sae.d_sae}), {n} HH pairs, batch {args.batch}"
    )
    print(f"{'variant':<42} {'best s':>8} {'median s':>9} {'tok/s (best)':>13}")
    for name in variants:
        print(f"{name:<42} {best[name]:>8.2f} {med[name]:>9.2f} {full_tokens / best[name]:>13.0f}")
    print("(tok/s counts prompt+response tokens of both sequences for every variant: the same work)")
    r_naive = best["naive full forward + hidden states"] / best["encode (truncated + SAE + pool)"]
    r_bare = best["bare truncated forward"] / best["encode (truncated + SAE + pool)"]
    r_share = best["encode (truncated + SAE + pool)"] / best["encode, prompt shared by both responses"]
    tok_ratio = shared_tokens / full_tokens
    print(f"encode vs naive:              {r_naive:.2f}x  (goal >= 2)")
    print(f"encode vs bare truncated:     {r_bare:.2f}x  (goal >= 0.85)")
    print(f"tokens processed with sharing: {tok_ratio:.3f} of naive  -> ideal speed-up {1 / tok_ratio:.2f}x")
    print(
        f"padded tokens fed with sharing: {fed_shared / fed_full:.3f} of naive "
        f"({len(shared_batches)} vs {len(batches)} batches)"
    )
    print(f"shared-prompt speed-up:        {r_share:.2f}x")
    ok = r_naive >= 2 and r_bare >= 0.85 and r_share > 1
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
