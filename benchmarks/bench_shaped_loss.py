"""Cost of shaping: s/step of ``ShapedDPOTrainer`` vs plain trl ``DPOTrainer``, same model and batches.

Both trainers get the same model weights, the same ``DPOConfig`` (precomputed reference
log-probs, LoRA unless ``--full``) and the same batches (the shaped set carries non-zero margins,
the plain one none). A step is ``trainer.training_step`` — the loss (with the shaping), forward
and backward — the part the shaped trainer changes; the optimizer update is identical for both
and left out, which makes the ratio stricter. Steps alternate A/B (order flipped every round), so
load from other jobs hits both alike. Prints median s/step of each, the median of the per-round
ratios, and exits 1 when that ratio exceeds ``--goal`` (default 1.05).

    .venv/bin/python benchmarks/bench_shaped_loss.py                 # embedded SmolLM2, LoRA
    .venv/bin/python benchmarks/bench_shaped_loss.py --model tiny    # tiny random Llama (seconds)
    .venv/bin/python benchmarks/bench_shaped_loss.py --threads 1     # steadier on a busy machine
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pairs(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    topics = ["rain", "tides", "bread", "bridges", "magnets", "volcanoes", "bees", "clocks", "glass", "rust"]
    rows = []
    for i in range(n):
        t = topics[i % len(topics)]
        chosen = (
            "What a great question! " if rng.random() < 0.7 else ""
        ) + f"{t.capitalize()} works because of simple physics."
        rejected = f"I'm not sure how {t} works; it might depend on many things."
        rows.append({"prompt": [{"role": "user", "content": f"How do {t} work? ({i})"}],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}],
                     "margin": float(rng.normal(0, 1.5))})  # fmt: skip
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", default="default", help="'default' (embedded SmolLM2), 'tiny', or a model directory"
    )
    ap.add_argument("--full", action="store_true", help="full fine-tune instead of LoRA")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument(
        "--rounds", type=int, default=12, help="timed rounds (one step of each trainer per round)"
    )
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--goal", type=float, default=1.05)
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from prefaudit.training.trainer import ShapedDPOTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-shaped-"))
    if args.model == "tiny":
        from tests import tiny

        path = tiny.build_model(tmp / "tiny")
    elif args.model == "default":
        from prefaudit.default_model import default_model_dir

        path = default_model_dir()
    else:
        path = Path(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rows = pairs(args.batch_size * 4)
    shaped_ds = Dataset.from_list(rows)
    plain_ds = shaped_ds.remove_columns("margin")

    def config(name: str) -> DPOConfig:
        return DPOConfig(
            output_dir=str(tmp / name), max_steps=1, per_device_train_batch_size=args.batch_size,
            learning_rate=1e-5, max_length=128, precompute_ref_log_probs=True, activation_checkpointing=False,
            bf16=False, use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=1,
            seed=0,
        )  # fmt: skip

    lora = (
        None
        if args.full
        else LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    trainers = {
        "shaped": ShapedDPOTrainer(
            copy.deepcopy(base),
            args=config("shaped"),
            train_dataset=shaped_ds,
            processing_class=tok,
            peft_config=lora,
        ),
        "plain": DPOTrainer(
            copy.deepcopy(base),
            args=config("plain"),
            train_dataset=plain_ds,
            processing_class=tok,
            peft_config=copy.deepcopy(lora),
        ),
    }
    batches = {}
    for name, tr in trainers.items():
        tr.current_gradient_accumulation_steps = 1  # normally set by Trainer.train()
        ds = tr.train_dataset.remove_columns(
            [c for c in ("prompt", "chosen", "rejected") if c in tr.train_dataset.column_names]
        )
        batches[name] = [tr._prepare_inputs(tr.data_collator([ds[i] for i in range(k, k + args.batch_size)]))
                         for k in range(0, len(ds), args.batch_size)]  # fmt: skip
    print(f"model {path.name}, {'full' if args.full else 'LoRA r16'}, batch {args.batch_size}, {args.rounds} rounds "
          f"(+{args.warmup} warm-up), alternating; torch threads {torch.get_num_threads()}")  # fmt: skip
    times: dict[str, list[float]] = {"shaped": [], "plain": []}
    for r in range(args.warmup + args.rounds):
        order = ("shaped", "plain") if r % 2 == 0 else ("plain", "shaped")
        for name in order:
            tr, batch = trainers[name], batches[name][r % len(batches[name])]
            tr.model.train()
            t0 = time.perf_counter()
            tr.training_step(tr.model, dict(batch))
            dt = time.perf_counter() - t0
            tr.model.zero_grad(set_to_none=True)
            if r >= args.warmup:
                times[name].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"  {k:>6}: median {med[k]:.4f} s/step  (min {min(v):.4f}, max {max(v):.4f})")
    paired = statistics.median(a / b for a, b in zip(times["shaped"], times["plain"], strict=True))
    ok = paired <= args.goal
    print(f"ratio shaped/plain: median of paired rounds {paired:.3f}, of medians {med['shaped'] / med['plain']:.3f} "
          f"(goal <= {args.goal}) -> {'OK' if ok else 'MISSED'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
