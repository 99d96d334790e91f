"""Encode one dataset with several processes (``accelerate launch`` or ``torchrun``) into one shard cache.

Every process loads the model and SAE on its own device, encodes a disjoint set of the shards the
cache lacks and writes each one atomically into the shared cache folder (the one
:func:`prefaudit.features.encode.encode_pairs` reads: same key, so a later ``prefaudit audit`` or
``AuditSession.encode()`` encodes nothing). Rank, world size and device come from accelerate's
:class:`~accelerate.PartialState` (NCCL on GPUs, gloo on CPUs); one process without a launcher
encodes every shard.

Which process encodes which shard: all processes list the finished shards, meet at a barrier (so
none has written a shard before every one has listed them: they all see the same list), then
take the unfinished shards in turn, the ``i``-th to rank ``i % world_size``. Dealing out the
*unfinished* shards spreads a resumed encode over all processes (with a fixed ``s % world_size``
the shards left by a killed rank would all fall to that rank again), and taking them in turn
rather than in blocks spreads datasets whose lengths change along the file. When every process
is done (a gather of the counts) the main process checks that every shard is there and marks
``meta.json`` complete.

Shards are checked as :func:`~prefaudit.features.encode.encode_pairs` checks them (their record:
key, index, pair range, rows): a damaged one counts as unfinished, and the rank it is dealt to
moves it aside and encodes it again. Each rank encodes a shard holding that shard's file lock
(:class:`~prefaudit.features.shard_cache.ShardCache`); the ranks' shards are disjoint, so the locks
never make one wait, but an encoder started apart on the same cache does not redo their shards.

Example
-------
$ accelerate launch --multi_gpu --num_processes 8 -m prefaudit.cli encode pairs.jsonl --cache-dir /shared/cache
$ torchrun --standalone --nproc_per_node 8 -m prefaudit.cli encode pairs.jsonl --cache-dir /shared/cache
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .encode import _progress, encode_shard_of, open_cache
from .shard_cache import ShardCache, ShardCounts, listing, write_meta

# Processes wait at barriers while the slowest one downloads the model or finishes its last
# shards: on a large encode far longer than NCCL's default 10 minutes.
BARRIER_TIMEOUT = timedelta(hours=12)


def process_state(device: str = "auto") -> Any:
    """accelerate's ``PartialState``: starts the process group under a launcher, a no-op alone.

    The processes run on the CPU (gloo) under ``accelerate launch --cpu``, for ``device="cpu"``
    and where there is no CUDA; accelerate picks gloo only when told (``cpu=True``), so a
    ``torchrun`` on a CPU machine would otherwise start processes that each think they are alone.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or device == "cpu" or not torch.cuda.is_available()
    return PartialState(cpu=cpu, timeout=BARRIER_TIMEOUT)


def rank_device(device: str, state: Any) -> str:
    """The device this process runs on.

    With several processes ``"auto"`` and ``"cuda"`` mean this process's own device
    (``state.device``: ``cuda:<local rank>``, or the CPU under ``accelerate launch --cpu``); one
    process keeps what was asked. An explicit ``"cuda:N"`` or ``"cpu"`` is kept as asked.
    """
    name = str(device).strip().lower()
    if state.num_processes > 1 and name in ("auto", "cuda"):
        # Under gloo accelerate says "cpu:0"; sae-lens takes only "cpu".
        return "cpu" if state.device.type == "cpu" else str(state.device)
    return name


def encode_shards(
    pairs: Any,
    backbone: Any,
    sae: Any,
    shards: Iterable[int],
    *,
    cache_dir: str | Path,
    pooling: str = "max",
    batch_size: int | None = 8,
    shard_size: int = 128,
    share_prompt: bool = True,
    batch_tokens: int | None = None,
    progress: bool = True,
) -> ShardCounts:
    """Encode the ``shards`` of ``pairs`` that the cache lacks into the cache; keeps nothing in memory.

    One process's part of :func:`encode_distributed`. ``meta.json`` is left to the caller.
    Returns which shards were found finished and which were encoded.
    """
    if cache_dir is None:
        raise ConfigError("encode_shards writes into the shard cache: pass cache_dir.")
    meta, folder, n_shards = open_cache(
        pairs,
        backbone,
        sae,
        pooling=pooling,
        batch_size=batch_size,
        shard_size=shard_size,
        cache_dir=cache_dir,
    )
    assigned = sorted({int(s) for s in shards})
    bad = [s for s in assigned if not 0 <= s < n_shards]
    if bad:
        raise ConfigError(f"shards {bad} do not exist: {len(pairs)} pairs make shards 0..{n_shards - 1}.")
    cache = ShardCache(folder, meta, n_shards)
    todo = [s for s in assigned if cache.problem(s) is not None]
    bar = _progress(sum(min(shard_size, len(pairs) - s * shard_size) for s in todo), progress)
    kw = {
        "pooling": pooling,
        "batch_size": batch_size,
        "batch_tokens": batch_tokens,
        "share_prompt": share_prompt,
    }

    def encode_one(s: int) -> tuple[Any, int]:
        return encode_shard_of(
            pairs, backbone, sae, s, shard_size, on_batch=lambda k, _u: bar.update(k), **kw
        )

    try:
        return cache.fill(assigned, encode_one, ShardCounts(n_shards, assigned=assigned))
    finally:
        bar.close()


def _stderr(line: str) -> None:
    # One write per line: ranks share stderr, and print() writes the text and the newline apart,
    # so two ranks' lines could interleave (a single short write to a pipe is atomic).
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def encode_distributed(
    pairs: Any,
    backbone: Any,
    sae: Any,
    *,
    cache_dir: str | Path,
    pooling: str = "max",
    batch_size: int | None = 8,
    shard_size: int = 128,
    share_prompt: bool = True,
    batch_tokens: int | None = None,
    progress: bool = True,
    state: Any = None,
    log: Callable[[str], None] = _stderr,
) -> dict[str, Any] | None:
    """This process's part of a distributed encode (see the module docstring); call it on every rank.

    Logs one line per rank (``rank 0/2: 6 shards in all, 2 found finished, encoding 2 ...``).
    Returns, on the main process, a summary: ``n_shards``, ``found`` (shards finished before this
    run), ``encoded`` (per rank), ``tokens_processed``, ``folder``, ``meta``; ``None`` elsewhere.
    Raises :class:`ConfigError` on the main process if a shard is missing at the end.
    """
    from accelerate.utils import gather_object

    state = state if state is not None else process_state()
    rank, world = state.process_index, state.num_processes
    meta, folder, n_shards = open_cache(
        pairs,
        backbone,
        sae,
        pooling=pooling,
        batch_size=batch_size,
        shard_size=shard_size,
        cache_dir=cache_dir,
    )
    cache = ShardCache(folder, meta, n_shards)
    found = cache.finished()
    state.wait_for_everyone()  # every process has listed the finished shards before any writes one
    if state.is_main_process:
        write_meta(folder, meta, n_shards)
    left = [s for s in range(n_shards) if s not in set(found)]
    mine = left[rank::world]
    log(
        f"rank {rank}/{world}: {n_shards} shards in all, {len(found)} found finished, "
        f"encoding {len(mine)} of the {len(left)} left" + (f" (shards {listing(mine)})" if mine else "")
    )
    counts = encode_shards(
        pairs,
        backbone,
        sae,
        mine,
        cache_dir=cache_dir,
        pooling=pooling,
        batch_size=batch_size,
        batch_tokens=batch_tokens,
        shard_size=shard_size,
        share_prompt=share_prompt,
        progress=progress and state.is_main_process,
    )
    # gather_object is also the barrier: every process has written its shards when it returns.
    per_rank = gather_object([(rank, counts.encoded, counts.tokens_processed)])
    if not state.is_main_process:
        return None
    missing = [s for s in range(n_shards) if cache.problem(s) is not None]
    if missing:
        raise ConfigError(
            f"{len(missing)} of {n_shards} shards are missing from {folder} after every process finished "
            f"(shards {listing(missing)}) or fail their check: is the cache directory shared by all processes?"
        )
    record = write_meta(folder, meta, n_shards)
    return {
        "n_shards": n_shards,
        "found": found,
        "encoded": {r: enc for r, enc, _tok in sorted(per_rank)},
        "tokens_processed": sum(tok for _r, _enc, tok in per_rank),
        "world_size": world,
        "folder": str(folder),
        "meta": record,
    }
