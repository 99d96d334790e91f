"""Encode throughput and the shared-prompt speed-up, as ratios against baselines run side by side.

Goals (issue "Audit engine", issue 14):

* encode (truncated forward + SAE + pooling) >= 2x a naive full forward with
  ``output_hidden_states`` on the same batch, and >= 0.85x the bare truncated forward;
* reading each prompt once for both responses (the packed pair layout, ``prefaudit.pair_layouts``):
  >= 1.45x the separate passes on the HH slice, with the same pooled features.

Every variant runs on the same pairs, interleaved, ``--repeats`` times; we report the best and
the median, and ratios of bests and of medians. Batches are sized by a token budget
(``--batch-tokens``, default the backbone's for its device) like the audit's encode. The
speed-up is also set against its ideal: the padded tokens the two layouts feed the model, as
batched (what the wall time follows), and the real tokens. Run::

    .venv/bin/python benchmarks/bench_encode.py --pairs 48
    .venv/bin/python benchmarks/bench_encode.py --pairs 48 --repeats 5 --batch-tokens 4096
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prefaudit as pa
from prefaudit.backbone import Backbone
from prefaudit.features.encode import encode_batch, length_batches

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test-first1000.jsonl.gz"
SEPARATE, PACKED, CACHE = (
    "encode, separate passes",
    "encode, packed pairs (shared prompt)",
    "encode, prompt KV cache",
)


def _sae(bb: Backbone):
    from prefaudit.features.sae import DEFAULT_SAE_DIR, _wrap, load_sae

    if (DEFAULT_SAE_DIR / "cfg.json").is_file():
        return load_sae(None)
    # Same shape and cost as the shipped SAE when it is not built yet.
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    cfg = TopKSAEConfig(d_in=bb.d_model, d_sae=4096, k=32, metadata=SAEMetadata(hook_name=bb.hook_name))
    return _wrap(TopKSAE(cfg), "random-4096")


def _padded_cost(layout: str, b, p_len, rc) -> int:
    """Rows x padded length of one batch in ``layout`` (the formula of ``length_batches``)."""
    p, c, r = p_len[b], rc[b, 0], rc[b, 1]
    longer = np.maximum(c, r)
    if layout == "packed":
        return int(len(b) * (p + c + r).max())
    if layout == "cache":
        return int(len(b) * (p.max() + 2 * longer.max()))
    return int(2 * len(b) * (p + longer).max())


def _agreement(a, b) -> tuple[float, float, float]:
    """Max |difference| of pooled values, share of responses with identical active sets, lowest Jaccard.

    A TopK SAE keeps the k largest pre-activations of each token: where the k-th and (k+1)-th lie
    within float rounding of each other, a different matmul shape can swap them, and that feature's
    pooled value appears in one run and not in the other (a large difference in a single feature).
    """
    diff, same, jac = 0.0, 0, []
    for (ia, va, *_), (ib, vb, *_) in zip(a, b, strict=True):
        sa, sb = set(ia.tolist()), set(ib.tolist())
        same += sa == sb
        jac.append(len(sa & sb) / max(1, len(sa | sb)))
        da, db = (
            dict(zip(ia.tolist(), va.tolist(), strict=True)),
            dict(zip(ib.tolist(), vb.tolist(), strict=True)),
        )
        diff = max([diff, *(abs(da.get(k, 0.0) - db.get(k, 0.0)) for k in sa | sb)])
    return diff, same / len(a), float(min(jac))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=64, help="HH pairs to encode (default 64)")
    ap.add_argument(
        "--batch-tokens", type=int, default=None, help="padded tokens per forward (default: device's)"
    )
    ap.add_argument(
        "--batch", type=int, default=None, help="at most this many pairs per forward (default: no cap)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--encode-only", action="store_true", help="skip the naive and bare-forward baselines")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bb = Backbone.load()
    sae = _sae(bb)
    budget = args.batch_tokens or bb.default_batch_tokens
    pairs = pa.load_pairs(HH, limit=args.pairs)
    n = len(pairs)
    prompts = [bb.prompt_ids(pairs.messages(i)) for i in range(n)]
    resp = [
        (bb.response_ids(c)[0], bb.response_ids(r)[0])
        for c, r in zip(pairs.df["chosen"], pairs.df["rejected"], strict=True)
    ]
    p_len = np.asarray([len(p) for p in prompts])
    rc = np.asarray([(len(c), len(r)) for c, r in resp])
    # Each layout batches by its own padded cost under the same token budget (see length_batches).
    layouts = {SEPARATE: "separate", PACKED: "packed", CACHE: "cache"}
    batches = {
        name: length_batches(
            p_len, rc, args.batch, batch_tokens=budget, share_prompt=lay != "separate", packed=lay == "packed"
        )
        for name, lay in layouts.items()
    }
    fed = {name: sum(_padded_cost(layouts[name], b, p_len, rc) for b in batches[name]) for name in layouts}
    full_tokens = int((2 * p_len + rc.sum(1)).sum())
    shared_tokens = int((p_len + rc.sum(1)).sum())

    def padded(b):
        seqs = [prompts[i] + list(r) for i in b for r in resp[i]]
        t = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), t), bb.tokenizer.pad_token_id)
        mask = torch.zeros((len(seqs), t), dtype=torch.long)
        for j, s in enumerate(seqs):
            ids[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
        return ids, mask, torch.arange(t).expand(len(seqs), t)

    padded_batches = [padded(b) for b in batches[SEPARATE]]

    def naive():
        with torch.inference_mode():
            for ids, mask, _ in padded_batches:
                bb.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)

    def truncated():
        with torch.inference_mode():
            for ids, mask, pos in padded_batches:
                bb._forward_to_layer(ids, mask, pos)

    pooled: dict[str, list] = {}

    def encode(name: str):
        def run():
            bb.pair_packing = layouts[name] == "packed"
            out: list = [None] * (2 * n)
            for b in batches[name]:
                got, _ = encode_batch(
                    bb,
                    sae,
                    [prompts[i] for i in b],
                    [resp[i] for i in b],
                    share_prompt=layouts[name] != "separate",
                )
                for k, i in enumerate(b):
                    out[2 * i], out[2 * i + 1] = got[2 * k], got[2 * k + 1]
            bb.pair_packing = True
            pooled[name] = out

        return run

    baselines = {"naive full forward + hidden states": naive, "bare truncated forward": truncated}
    variants = {
        **({} if args.encode_only else baselines),
        SEPARATE: encode(SEPARATE),
        PACKED: encode(PACKED),
        CACHE: encode(CACHE),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for round_ in range(args.repeats):
        for name, fn in variants.items():  # interleaved: contention hits every variant alike
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        print(
            f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()),
            file=sys.stderr,
        )

    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"SmolLM2-135M layer {bb.layer}, {bb.dtype}, {torch.get_num_threads()} threads, SAE {sae.name} "
        f"(d_sae {sae.d_sae}), {n} HH pairs, batch_tokens {budget}, batch {args.batch}, {args.repeats} rounds"
    )
    print(
        f"{'variant':<40} {'best s':>8} {'median s':>9} {'tok/s (best)':>13} {'batches':>8} {'padded tok':>11}"
    )
    for name in variants:
        extra = f"{len(batches[name]):>8} {fed[name]:>11}" if name in batches else ""
        print(f"{name:<40} {best[name]:>8.2f} {med[name]:>9.2f} {full_tokens / best[name]:>13.0f} {extra}")
    print("(tok/s counts prompt+response tokens of both sequences for every variant: the same work)")

    def ratio(a: str, b: str) -> str:
        return f"{best[a] / best[b]:.2f}x best, {med[a] / med[b]:.2f}x median"

    r_naive = r_bare = float("nan")
    if not args.encode_only:
        r_naive = best["naive full forward + hidden states"] / best[SEPARATE]
        r_bare = best["bare truncated forward"] / best[SEPARATE]
        print(
            f"encode vs naive:            {ratio('naive full forward + hidden states', SEPARATE)}  (goal >= 2)"
        )
        print(f"encode vs bare truncated:   {ratio('bare truncated forward', SEPARATE)}  (goal >= 0.85)")
    print(
        f"real tokens, shared prompt: {shared_tokens / full_tokens:.3f} of separate -> ideal {full_tokens / shared_tokens:.2f}x"
    )
    for name in (PACKED, CACHE):
        ideal = fed[SEPARATE] / fed[name]
        sp_best, sp_med = best[SEPARATE] / best[name], med[SEPARATE] / med[name]
        print(
            f"{name.removeprefix('encode, ')}: speed-up {sp_best:.2f}x best / {sp_med:.2f}x median over separate; "
            f"padded-token ideal {ideal:.2f}x ({fed[name] / fed[SEPARATE]:.3f} of separate's padded tokens); "
            f"reached {sp_best / ideal:.0%} / {sp_med / ideal:.0%} of it"
        )
    for name in (PACKED, CACHE):
        diff, same, jac = _agreement(pooled[name], pooled[SEPARATE])
        print(
            f"features, {name.removeprefix('encode, ')} vs separate: max |pooled diff| {diff:.2e}, "
            f"identical active sets {same:.1%} of responses, lowest Jaccard {jac:.3f}"
        )
    r_share = best[SEPARATE] / best[PACKED]
    ok = (args.encode_only or (r_naive >= 2 and r_bare >= 0.85)) and r_share >= 1.45
    print("PASS" if ok else "FAIL (see the goals above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
