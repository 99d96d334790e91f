"""GPU check (issue "Audit at the scale of real post-training sets"): encode and stats at scale.

On one CUDA device, with random weights in real shapes (nothing is downloaded):

(a) **encode tokens/s through prefaudit against the bare truncated forward.** The model is a
    ``LlamaForCausalLM`` with Llama-3.2-1B's config (hidden 2048, 16 blocks, 32 heads, 8 KV heads,
    intermediate 8192, vocab 128,256, llama3 rope x32, tied embeddings), bf16 where the GPU runs it
    natively (else fp16), read at block 8; the SAE is a sae-lens TopK SAE of matching width
    (d_in 2048, d_sae 32,768, k 64, hook ``blocks.8.hook_resid_post``). Variants, interleaved on
    the same pairs, best of ``--repeats``:

    * bare truncated forward: the hook-stopped forward at the read layer over prompt + response,
      two passes per pair (no SAE, no pooling) -- the floor for reading activations;
    * ``encode_batch`` without and with the prompt's KV cache shared by both responses
      (truncated forward + SAE + pooling, on prefaudit's own batches);
    * ``encode_pairs`` end to end (tokenising, batching by padded cost, shards; no disk cache).

    Every variant is credited with the same work: prompt + response tokens of both sequences of
    every pair (as ``benchmarks/bench_encode.py`` does), so tok/s compare directly.
(b) **``paired_tests`` at 65,536 features x 260,000 pairs** (about 64 active features per
    response, popularity log-normal, as in ``benchmarks/bench_stats.py``), one run, on the CPU.

The summary is printed as rows of the "Measured" table in docs/MEASURED.md (``| what | command | result |``).
Without a CUDA device it exits with status 2 and says so; ``--cpu-smoke`` runs the same code at
tiny sizes on the CPU (well under a minute) so the logic is exercised anywhere::

    bash benchmarks/gpu_check.sh                          # on a CUDA machine
    .venv/bin/python benchmarks/gpu_check.py --cpu-smoke  # anywhere
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test-first1000.jsonl.gz"

# meta-llama/Llama-3.2-1B config.json (architecture only; weights are random here).
LLAMA_3_2_1B = dict(
    vocab_size=128_256,
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    max_position_embeddings=131_072,
    rms_norm_eps=1e-5,
    rope_theta=500_000.0,
    rope_scaling={
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    tie_word_embeddings=True,
    bos_token_id=128_000,
    eos_token_id=128_001,
)
SMOKE_MODEL = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
)
COMMAND = "`bash benchmarks/gpu_check.sh`"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU: exercise the logic")
    ap.add_argument("--pairs", type=int, default=512, help="pairs to encode (default 512)")
    ap.add_argument("--batch", type=int, default=16, help="pairs per forward pass (default 16)")
    ap.add_argument("--layer", type=int, default=8, help="block read (default 8 of 16)")
    ap.add_argument("--d-sae", type=int, default=32_768)
    ap.add_argument("--k", type=int, default=64, help="TopK SAE k (default 64)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stats-pairs", type=int, default=260_000)
    ap.add_argument("--stats-features", type=int, default=65_536)
    ap.add_argument("--n-boot", type=int, default=1000, help="paired_tests bootstrap resamples")
    ap.add_argument("--skip-encode", action="store_true")
    ap.add_argument("--skip-stats", action="store_true")
    args = ap.parse_args(argv)
    args.max_prompt_tokens, args.max_response_tokens, args.model_label = 384, 256, "Llama-3.2-1B shape"
    if args.cpu_smoke:
        args.pairs, args.batch, args.layer, args.d_sae, args.k = min(args.pairs, 12), 4, 2, 256, 8
        args.repeats, args.max_prompt_tokens, args.max_response_tokens = 1, 64, 32
        args.model_label = "tiny Llama (smoke)"
        args.stats_pairs, args.stats_features = min(args.stats_pairs, 2000), min(args.stats_features, 4096)
    return args


def no_cuda_message() -> str:
    build = torch.version.cuda
    why = (
        f"this torch ({torch.__version__}) is a CPU-only build; install a CUDA wheel of torch"
        if build is None
        else f"torch {torch.__version__} (CUDA {build}) sees no CUDA device (driver? CUDA_VISIBLE_DEVICES?)"
    )
    return (
        f"gpu_check: no CUDA device: {why}. Run this on a CUDA machine, or pass --cpu-smoke to "
        "exercise the same logic at tiny sizes on the CPU."
    )


def env_line(device: str) -> str:
    import sae_lens
    import transformers

    line = (
        f"torch {torch.__version__}, transformers {transformers.__version__}, sae-lens {sae_lens.__version__}"
    )
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        line += f"; {p.name}, {p.total_memory / 2**30:.0f} GiB, compute {p.major}.{p.minor}, CUDA {torch.version.cuda}"
    else:
        line += f"; CPU, {torch.get_num_threads()} threads"
    return line


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ (a) encode
def load_pairs(n: int):
    import prefaudit as pa
    from tests import tiny

    if HH.is_file():
        return pa.load_pairs(HH, limit=n), "HH-RLHF harmless-base slice"
    rows = []
    words = tiny.corpus(4 * n, seed=1)
    for i in range(n):
        rows.append(
            {
                "prompt": " ".join(words[4 * i : 4 * i + 2]) * 3,
                "chosen": words[4 * i + 2] * 4,
                "rejected": words[4 * i + 3] * 4,
            }
        )
    return pa.load_pairs(rows), "synthetic pairs (HH slice not found)"


def build_backbone(args: argparse.Namespace, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    from prefaudit.backbone import Backbone, default_dtype_name
    from tests import tiny

    tok_dir = Path(args.work) / "tokenizer"
    tok = tiny.build_tokenizer(tok_dir)  # ids < 400: throughput is counted in tokens either way
    config = LlamaConfig(**(SMOKE_MODEL if args.cpu_smoke else LLAMA_3_2_1B), pad_token_id=tok.pad_token_id)
    dtype = default_dtype_name(device)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model.to(getattr(torch, dtype)).eval()
    n_params = sum(p.numel() for p in model.parameters())
    bb = Backbone.load(
        model,
        tokenizer=tok,
        layer=args.layer,
        device=device,
        max_prompt_tokens=args.max_prompt_tokens,
        max_response_tokens=args.max_response_tokens,
    )
    return bb, n_params


def build_sae(bb, args: argparse.Namespace, device: str):
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    from prefaudit.features.sae import load_sae

    torch.manual_seed(1)
    cfg = TopKSAEConfig(
        d_in=bb.d_model,
        d_sae=args.d_sae,
        k=args.k,
        device=device,
        metadata=SAEMetadata(hook_name=bb.tl_hook_name, model_name="random Llama-3.2-1B shape"),
    )
    sae = TopKSAE(cfg)
    with torch.no_grad():
        sae.W_enc.normal_(0, bb.d_model**-0.5)
        sae.W_dec.copy_(sae.W_enc.T)
    feats = load_sae(sae)
    feats.check_fits(bb)  # the TransformerLens hook name resolves to the read layer
    return feats


def measure_encode(args: argparse.Namespace, device: str) -> tuple[list[str], bool]:
    from prefaudit.features.encode import encode_batch, encode_pairs, length_batches

    bb, n_params = build_backbone(args, device)
    feats = build_sae(bb, args, device)
    pairs, source = load_pairs(args.pairs)
    n = len(pairs)
    prompts = [bb.prompt_ids(pairs.messages(i)) for i in range(n)]
    resp = [
        (bb.response_ids(c)[0], bb.response_ids(r)[0])
        for c, r in zip(pairs.df["chosen"], pairs.df["rejected"], strict=True)
    ]
    p_len = [len(p) for p in prompts]
    r_len = [max(len(c), len(r)) for c, r in resp]
    full_batches = length_batches(p_len, r_len, args.batch, share_prompt=False)
    shared_batches = length_batches(p_len, r_len, args.batch, share_prompt=True)
    work = sum(2 * p_len[i] + len(resp[i][0]) + len(resp[i][1]) for i in range(n))

    def padded(b):
        seqs = [prompts[i] + list(r) for i in b for r in resp[i]]
        t = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), t), bb.tokenizer.pad_token_id)
        mask = torch.zeros((len(seqs), t), dtype=torch.long)
        for j, s in enumerate(seqs):
            ids[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
        pos = torch.arange(t).expand(len(seqs), t)
        return ids.to(device), mask.to(device), pos.to(device)

    fed = [padded(b) for b in full_batches]

    def bare():
        with torch.inference_mode():
            for ids, mask, pos in fed:
                bb._forward_to_layer(ids, mask, pos)

    def batches(share: bool):
        def run():
            for b in shared_batches if share else full_batches:
                encode_batch(bb, feats, [prompts[i] for i in b], [resp[i] for i in b], share_prompt=share)

        return run

    def end_to_end():
        encode_pairs(pairs, bb, feats, batch_size=args.batch, cache_dir=None, progress=False)

    variants = {
        "bare truncated forward": bare,
        "encode_batch, no sharing": batches(False),
        "encode_batch, shared prompt": batches(True),
        "encode_pairs end to end": end_to_end,
    }
    # Sanity on real kernels: the shared-prompt read equals two full passes (left-padded prompts).
    b0 = shared_batches[0]
    with torch.inference_mode():
        hs, _ = bb.read_pairs([prompts[i] for i in b0], [resp[i] for i in b0], share_prompt=True)
        hf, _ = bb.read_pairs([prompts[i] for i in b0], [resp[i] for i in b0], share_prompt=False)
    seqs0 = [r for i in b0 for r in resp[i]]
    diff = max(float((hs[j, : len(s)] - hf[j, : len(s)]).abs().max()) for j, s in enumerate(seqs0))
    scale = max(float(hf[j, : len(s)].abs().max()) for j, s in enumerate(seqs0))
    finite = bool(torch.isfinite(hs).all() and torch.isfinite(hf).all())
    rel = diff / max(scale, 1e-12)
    ok = finite and rel < 0.1

    for fn in variants.values() if not args.cpu_smoke else ():  # warm-up: kernels, allocator, cuBLAS
        fn()
        sync(device)
    times: dict[str, list[float]] = {k: [] for k in variants}
    peak: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, fn in variants.items():  # interleaved: contention hits every variant alike
            gc.collect()
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
            if device.startswith("cuda"):
                peak[name] = max(peak.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**30)
    best = {k: min(v) for k, v in times.items()}
    tok_s = {k: work / best[k] for k in variants}

    print(
        f"\n(a) encode: {args.model_label}, {n_params / 1e6:,.0f}M parameters (random), layer {bb.layer} "
        f"({bb.hook_name} = {bb.tl_hook_name}), {bb.dtype} on {bb.device}; SAE TopK d_sae {feats.d_sae}, "
        f"k {args.k}; {n} pairs from {source}, cut at {bb.max_prompt_tokens}/{bb.max_response_tokens} tokens; "
        f"batch {args.batch}; {work:,} prompt+response tokens"
    )
    print(f"{'variant':<32} {'best s':>8} {'median s':>9} {'tok/s':>10} {'vs bare':>8} {'peak GiB':>9}")
    for name in variants:
        print(
            f"{name:<32} {best[name]:>8.3f} {statistics.median(times[name]):>9.3f} {tok_s[name]:>10.0f} "
            f"{best['bare truncated forward'] / best[name]:>7.2f}x {peak.get(name, float('nan')):>9.2f}"
        )
    print(
        f"shared vs full read, first batch: max |diff| {diff:.3g} (max |h| {scale:.3g}, relative {rel:.2g}); "
        f"finite: {finite} -> {'ok' if ok else 'FAIL'}"
    )
    where = (
        torch.cuda.get_device_name(0)
        if device.startswith("cuda")
        else f"CPU, {torch.get_num_threads()} threads"
    )
    bare_s = best["bare truncated forward"]
    row = (
        f"| GPU encode vs bare truncated forward ({args.model_label}, random weights, layer {bb.layer}, "
        f"{bb.dtype}, TopK SAE {feats.d_sae}; {n} pairs, batch {args.batch}; {where}) | {COMMAND} | "
        f"encode, shared prompt **{tok_s['encode_batch, shared prompt']:,.0f} tok/s** = "
        f"**{bare_s / best['encode_batch, shared prompt']:.2f}×** the bare truncated forward "
        f"({tok_s['bare truncated forward']:,.0f} tok/s); no sharing {bare_s / best['encode_batch, no sharing']:.2f}×; "
        f"`encode_pairs` end to end {tok_s['encode_pairs end to end']:,.0f} tok/s "
        f"({bare_s / best['encode_pairs end to end']:.2f}×)"
        + (f"; peak GPU memory {max(peak.values()):.1f} GiB" if peak else "")
        + " |"
    )
    return [row], ok


# ------------------------------------------------------------------------------------------ (b) stats
def make_case(n_pairs: int, n_features: int, active: int = 64, seed: int = 0):
    """Chosen and rejected pooled activations, CSR float32 (the distribution of bench_stats.py)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    popularity = rng.lognormal(0.0, 1.0, n_features)
    popularity /= popularity.sum()

    def one_side():
        columns = rng.choice(n_features, size=(n_pairs, active), p=popularity)
        columns.sort(axis=1)
        values = rng.lognormal(0.0, 0.75, size=columns.shape).astype(np.float32)
        indptr = np.arange(0, columns.size + 1, active)
        m = sp.csr_array((values.ravel(), columns.ravel(), indptr), shape=(n_pairs, n_features))
        m.sum_duplicates()
        return m

    return one_side(), one_side()


def measure_stats(args: argparse.Namespace) -> list[str]:
    from prefaudit.stats import paired_tests

    t0 = time.perf_counter()
    chosen, rejected = make_case(args.stats_pairs, args.stats_features)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = paired_tests(chosen, rejected, n_boot=args.n_boot)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    tested = int((table["n_nonzero"] > 0).sum()) if "n_nonzero" in table else len(table)
    print(
        f"\n(b) paired_tests: {args.stats_features:,} features x {args.stats_pairs:,} pairs "
        f"({chosen.nnz + rejected.nnz:,} non-zeros, built in {t_build:.1f} s), n_boot {args.n_boot}: "
        f"{seconds:.2f} s, {tested:,} features tested, peak RSS of this process {rss / 2**30:.2f} GiB"
    )
    return [
        f"| `paired_tests`, {args.stats_features:,} features × {args.stats_pairs:,} sparse pairs "
        f"(CPU of the GPU machine, {torch.get_num_threads()} threads) | {COMMAND} | "
        f"{seconds:.1f} s (one run, n_boot {args.n_boot}), peak RSS {rss / 2**30:.2f} GB |"
    ]


def main(argv: list[str] | None = None) -> int:
    import tempfile

    args = parse_args(argv)
    if args.cpu_smoke:
        device = "cpu"
    elif not torch.cuda.is_available():
        print(no_cuda_message(), file=sys.stderr)
        return 2
    else:
        device = "cuda"
    print(
        ("gpu_check --cpu-smoke (tiny sizes, CPU): " if args.cpu_smoke else "gpu_check: ") + env_line(device)
    )
    t_start = time.perf_counter()
    rows: list[str] = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        args.work = work
        if not args.skip_encode:
            enc_rows, ok = measure_encode(args, device)
            rows += enc_rows
            gc.collect()  # the model and SAE went out of scope: free them before the stats case
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        if not args.skip_stats:
            rows += measure_stats(args)
    print(
        "\nRows for the Measured table (docs/MEASURED.md)"
        + (" (smoke sizes: do not paste)" if args.cpu_smoke else "")
        + ":"
    )
    print("| what | command | result |\n|---|---|---|")
    for row in rows:
        print(row)
    print(f"\ngpu_check: {'ok' if ok else 'FAIL'} in {time.perf_counter() - t_start:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
