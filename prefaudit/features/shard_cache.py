"""The files of one encode's shard cache: ``<cache>/encode/<key>/shard-NNNNN.npz`` and ``meta.json``.

A shard file exists only once it is finished (it is written to a temporary name and renamed), so
"finished" is "the file is there". ``meta.json`` says what the folder holds (model, layer, SAE,
pooling, sizes) and whether every shard is there (``complete``, ``n_shards_finished``); it is
rewritten atomically, so processes encoding into the same folder never read half of it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def describe(
    key: str, n_pairs: int, backbone: Any, sae: Any, pooling: str, shard_size: int
) -> dict[str, Any]:
    """What a cache folder holds, as ``meta.json`` records it."""
    return {
        "key": key,
        "model": backbone.name,
        "layer": backbone.layer,
        "hook_name": backbone.hook_name,
        "dtype": backbone.dtype,
        "sae": sae.name,
        "d_sae": sae.d_sae,
        "pooling": pooling,
        "n_pairs": n_pairs,
        "shard_size": shard_size,
        "max_prompt_tokens": backbone.max_prompt_tokens,
        "max_response_tokens": backbone.max_response_tokens,
    }


def shard_count(n_pairs: int, shard_size: int) -> int:
    return (n_pairs + shard_size - 1) // shard_size


def shard_path(folder: Path, s: int) -> Path:
    return folder / f"shard-{s:05d}.npz"


def finished_shards(folder: Path | None, n_shards: int) -> list[int]:
    """The shards of ``range(n_shards)`` whose file is in ``folder`` (none when there is no folder)."""
    if folder is None:
        return []
    return [s for s in range(n_shards) if shard_path(folder, s).is_file()]


def write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_meta(folder: Path, meta: dict[str, Any], n_shards: int) -> dict[str, Any]:
    """Write ``meta.json`` with the shard count and whether every shard is finished; returns what was written."""
    done = len(finished_shards(folder, n_shards))
    record = {**meta, "n_shards": n_shards, "n_shards_finished": done, "complete": done == n_shards}
    write_text_atomic(folder / "meta.json", json.dumps(record, indent=1))
    return record


def read_meta(folder: Path) -> dict[str, Any] | None:
    path = folder / "meta.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@dataclass
class ShardCounts:
    """What one call of :func:`prefaudit.features.encode.encode_shards` did with the shards it was given."""

    n_shards: int
    assigned: list[int] = field(default_factory=list)
    found: list[int] = field(default_factory=list)
    encoded: list[int] = field(default_factory=list)
    tokens_processed: int = 0

    def add(self, other: ShardCounts) -> ShardCounts:
        return ShardCounts(
            self.n_shards,
            sorted(self.assigned + other.assigned),
            sorted(self.found + other.found),
            sorted(self.encoded + other.encoded),
            self.tokens_processed + other.tokens_processed,
        )


def listing(shards: Iterable[int], most: int = 8) -> str:
    """``"1, 4, 7"``, or the first ``most`` and how many more."""
    items = list(shards)
    head = ", ".join(str(s) for s in items[:most])
    return head + (f" and {len(items) - most} more" if len(items) > most else "")
