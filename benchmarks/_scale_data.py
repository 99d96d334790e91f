"""The data of a scale run: real HH texts repeated to N pairs, and synthetic SAE features in the store.

Used by ``bench_audit_scale.py`` (and its smoke test). Nothing here is timed.

* :func:`hh_rows` — the shared HH-RLHF slice (located as ``tests/conftest.py`` locates it), rows
  that ``load_pairs`` keeps, repeated in order until there are ``n`` of them. Repeated texts are
  realistic for memory (each row is its own Python string after parsing) and for the text-side
  work (concepts, topics, tokenisation).
* :func:`write_feature_store` — pooled codes of ``n_features`` latents, about ``active`` per
  response, from ``bench_clusters.synthetic_pairs`` (half the latents in planted co-firing blocks
  of 16, the first 1/16 of the blocks leaning to chosen, the rest independent noise), wrapped as
  the per-response arrays ``encode_pairs`` writes (peak token and position, mean activation,
  token counts), written chunk by chunk into the memory-mapped store
  (:func:`prefaudit.features.store.build_store`) exactly as an encode cache holds it.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_clusters import synthetic_pairs  # noqa: E402 - the co-firing generator

from prefaudit.features.encoded import EncodedFeatures, SidePooled  # noqa: E402
from prefaudit.features.store import STORE_DIR, build_store  # noqa: E402

#: Pairs per chunk handed to ``build_store`` (one chunk's arrays at a time in memory).
CHUNK = 20_000
#: Latents the planted blocks of ``synthetic_pairs`` put in a response (2 blocks × 16 × 0.8).
MIN_ACTIVE = 26
#: Response tokens the audit reads at most (``max_response_tokens``).
MAX_RESPONSE_TOKENS = 256


def hh_path() -> Path:
    """The shared HH slice, found as the tests find it (``tests/conftest.py``'s ``HH_PATH``)."""
    from tests.conftest import HH_PATH

    if not HH_PATH.is_file():
        raise FileNotFoundError(f"shared HH data not found at {HH_PATH} (set PREFAUDIT_SHARED_DATA)")
    return HH_PATH


def hh_rows(n: int, path: Path | None = None) -> list[dict[str, Any]]:
    """``n`` HH rows (``{"chosen", "rejected"}`` dialogues): the kept rows of the slice, repeated."""
    import prefaudit as pa

    with gzip.open(path or hh_path(), "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    rejected = {r.index for r in pa.load_pairs(rows).report.rejected}
    kept = [r for i, r in enumerate(rows) if i not in rejected]
    return [kept[i % len(kept)] for i in range(n)]


def response_tokens(texts: list[str]) -> np.ndarray:
    """A token count per response without a tokenizer: 1.3 per word, 1 … ``MAX_RESPONSE_TOKENS``."""
    words = np.array([len(t.split()) for t in texts], dtype=np.float64)
    return np.clip(np.ceil(1.3 * words), 1, MAX_RESPONSE_TOKENS).astype(np.int32)


def _side(
    values: Any, n_tokens: np.ndarray, d_model: int, vocab: int, rng: np.random.Generator
) -> SidePooled:
    values = values.tocsr()
    values.sort_indices()
    rows = np.repeat(np.arange(values.shape[0]), np.diff(values.indptr))
    return SidePooled(
        values=values,
        top_token=rng.integers(0, vocab, values.nnz).astype(np.int32),
        top_pos=(rng.random(values.nnz) * n_tokens[rows]).astype(np.int32),
        mean_act=rng.standard_normal((values.shape[0], d_model), dtype=np.float32),
        n_tokens=n_tokens,
        truncated=n_tokens >= MAX_RESPONSE_TOKENS,
        full_length=n_tokens,
    )


def write_feature_store(
    folder: Path,
    tokens: tuple[np.ndarray, np.ndarray],
    n_features: int,
    *,
    active: int = 64,
    d_model: int = 576,
    vocab: int = 49_152,
    seed: int = 0,
) -> Path:
    """Write the store of ``len(tokens[0])`` pairs into ``folder/STORE_DIR``; returns that folder.

    ``tokens`` are the chosen and rejected response token counts (:func:`response_tokens`).
    """
    n_pairs = len(tokens[0])
    if active <= MIN_ACTIVE:
        raise ValueError(
            f"active={active}: the co-firing blocks alone put ~{MIN_ACTIVE} latents in a response"
        )
    chosen, rejected, _ = synthetic_pairs(n_pairs, n_features, active=active, seed=seed)
    rng = np.random.default_rng(seed + 1)
    shards = folder / "shards"  # as an encode cache holds them: one chunk in memory at a time
    shards.mkdir(parents=True, exist_ok=True)
    parts = []
    for lo in range(0, n_pairs, CHUNK):
        hi = min(lo + CHUNK, n_pairs)
        enc = EncodedFeatures(
            chosen=_side(chosen[lo:hi], tokens[0][lo:hi], d_model, vocab, rng),
            rejected=_side(rejected[lo:hi], tokens[1][lo:hi], d_model, vocab, rng),
            pooling="max",
            prompt_length=rng.integers(1, 385, hi - lo).astype(np.int32),
            prompt_cut=np.zeros(hi - lo, dtype=bool),
        )
        parts.append(shards / f"shard-{lo // CHUNK:05d}.npz")
        enc.save(parts[-1])
    del chosen, rejected
    return build_store(parts, folder / STORE_DIR, pooling="max")
