"""The files of one encode's shard cache: ``<cache>/encode/<key>/shard-NNNNN.npz`` and ``meta.json``.

A shard is written to a temporary name and renamed, so a shard file is whole or absent. Being
there is not enough to be trusted: each shard carries a ``record`` (its cache key, shard index,
pair range ``start``-``stop``, ``rows`` and ``d_sae``) inside the ``.npz``, and the zip format
keeps a CRC-32 of every member. A shard is *finished* when its file opens and its record is the
one this encode expects (:func:`shard_problem`); before the store is merged from the shards every
member is also read back against its CRC-32 and the arrays against the record (``full``). One
file and one rename, rather than a sidecar checksum file: there is no moment at which the shard
and its checksum disagree, and the CRC-32s come with ``np.savez`` for free. A shard that fails
is named in a :class:`~prefaudit.features.store.CacheWarning`, moved into ``quarantine/`` (kept
for a look, not deleted) and encoded again.

Processes sharing a cache folder share the work (:class:`ShardCache`): a shard is encoded under
its own ``filelock.FileLock`` (``<cache>/locks/encode-<key>/shard-NNNNN.lock``, outside the
folder so that its listing stays the shards), whose holder another process skips and comes back
to; the store is checked and built under ``store.lock``. The kernel releases a lock when its
process dies, so a killed encoder blocks nobody.

``meta.json`` says what the folder holds (model, layer, SAE, pooling, sizes) and how many shards
are finished (``complete``, ``n_shards_finished``); it is rewritten atomically.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from ..durable import fsync_path, process_alive, write_text_atomic
from .encoded import EncodedFeatures
from .store import STORE_DIR, CacheFileError, CacheWarning, owner, part_record, store_problem

#: What :func:`shard_problem` says of a shard file that is not there.
MISSING = "missing"
#: A temporary file or folder whose writer cannot be asked (another host, no owner in its name)
#: is stale once nothing in it changed for this long; a live writer writes every few seconds.
STALE_AFTER = 3600.0
SHARD_FORMAT = 1
_SIDES = ("chosen", "rejected")
# Per side: arrays with one entry per stored value or per pair (from_arrays requires all but full_length).
_LENGTHS = {
    "top_token": "values",
    "top_pos": "values",
    "mean_act": "rows",
    "n_tokens": "rows",
    "truncated": "rows",
    "full_length": "rows",
}

EncodeOne = Callable[[int], tuple[EncodedFeatures, int]]


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


def shard_record(meta: dict[str, Any], s: int) -> dict[str, Any]:
    """The record shard ``s`` of the encode described by ``meta`` (:func:`describe`) carries."""
    start = s * int(meta["shard_size"])
    stop = min(int(meta["n_pairs"]), start + int(meta["shard_size"]))
    return {
        "format": SHARD_FORMAT,
        "key": meta["key"],
        "shard": s,
        "start": start,
        "stop": stop,
        "rows": stop - start,
        "d_sae": int(meta["d_sae"]),
    }


def finished_shards(folder: Path | None, n_shards: int, meta: dict[str, Any] | None = None) -> list[int]:
    """The shards of ``range(n_shards)`` finished in ``folder`` (none when there is no folder).

    With ``meta`` (:func:`describe`) a shard counts only if its record matches; without, if its
    file is there.
    """
    if folder is None:
        return []
    if meta is None:
        return [s for s in range(n_shards) if shard_path(folder, s).is_file()]
    return [s for s in range(n_shards) if shard_problem(shard_path(folder, s), shard_record(meta, s)) is None]


def shard_problem(path: Path, expected: dict[str, Any], *, full: bool = False) -> str | None:
    """What is wrong with the shard file at ``path`` (:data:`MISSING` if absent), ``None`` if it is sound.

    Reads the zip's directory and the small ``record`` member, and compares the record with
    ``expected`` (:func:`shard_record`). ``full`` also reads every member back against its CRC-32
    and checks the arrays' lengths against the record.
    """
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with zipfile.ZipFile(path) as zf:
            if "record.npy" not in zf.namelist():
                return "no record of its key and pair range (written by an older prefaudit)"
            with zf.open("record.npy") as fh:
                record = json.loads(str(np.lib.format.read_array(fh, allow_pickle=False)))
            bad = zf.testzip() if full else None
    except FileNotFoundError:
        return MISSING
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
        return f"unreadable ({type(e).__name__}: {e})"
    if bad is not None:
        return f"member {bad} fails its CRC-32 check (the file is damaged)"
    wrong = [k for k in expected if record.get(k) != expected[k]]
    if wrong:
        says = ", ".join(f"{k}={record.get(k)!r}" for k in wrong)
        return f"its record says {says} where {', '.join(f'{k}={expected[k]!r}' for k in wrong)} is expected"
    return _arrays_problem(path, expected) if full else None


def _arrays_problem(path: Path, rec: dict[str, Any]) -> str | None:
    """Whether the arrays of a shard have the lengths its record implies."""
    rows, d_sae = rec["rows"], rec["d_sae"]
    try:
        with np.load(path, allow_pickle=False) as z:
            for side in _SIDES:
                shape = tuple(int(x) for x in z[f"{side}_shape"])
                if shape != (rows, d_sae):
                    return (
                        f"its {side} values are {shape[0]} pairs x {shape[1]} features, not {rows} x {d_sae}"
                    )
                indptr, nnz = z[f"{side}_indptr"], len(z[f"{side}_data"])
                if (
                    len(indptr) != rows + 1
                    or indptr[0] != 0
                    or indptr[-1] != nnz
                    or np.any(np.diff(indptr) < 0)
                ):
                    return f"{side}_indptr does not fit its {rows} rows and {nnz} values"
                idx = z[f"{side}_indices"]
                if len(idx) != nnz or (nnz and (idx.min() < 0 or idx.max() >= d_sae)):
                    return f"{side}_indices do not fit its {nnz} values and {d_sae} features"
                for f, n in _LENGTHS.items():
                    key, n = f"{side}_{f}", nnz if n == "values" else rows
                    if key in z.files and len(z[key]) != n:
                        return f"{key} has {len(z[key])} entries, not {n}"
            for key in ("prompt_length", "prompt_cut"):  # optional (older shards lack them)
                if key in z.files and len(z[key]) != rows:
                    return f"{key} has {len(z[key])} entries, not {rows}"
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
        return f"unreadable ({type(e).__name__}: {e})"
    return None


def write_shard(enc: EncodedFeatures, path: Path, record: dict[str, Any]) -> None:
    """Write a shard with its ``record``: temporary file, fsync, rename, fsync of the folder."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-{owner()}-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, record=np.asarray(json.dumps(record)), **enc.to_arrays())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    except OSError as e:
        raise OSError(e.errno, f"cannot write the shard {path} ({e.strerror or e})", str(path)) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_meta(folder: Path, meta: dict[str, Any], n_shards: int, done: int | None = None) -> dict[str, Any]:
    """Write ``meta.json`` with the shard count and whether every shard is finished; returns what was written.

    ``done``: the number of finished shards where the caller knows it (else each shard is checked).
    """
    done = len(finished_shards(folder, n_shards, meta)) if done is None else done
    record = {**meta, "n_shards": n_shards, "n_shards_finished": done, "complete": done == n_shards}
    write_text_atomic(folder / "meta.json", json.dumps(record, indent=1), prefix=f".meta.tmp-{owner()}-")
    return record


def read_meta(folder: Path) -> dict[str, Any] | None:
    path = folder / "meta.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# -------------------------------------------------------------------------- temporary files
def is_stale(path: Path, now: float | None = None) -> bool:
    """Whether a temporary file or folder (``….tmp-<pid>@<host>-…``) was left by a writer that is gone.

    A writer on this host is asked directly: a dead process's file is stale, a live one's never
    (a slow build, a paused kernel). A writer on another host, or a name without one (older
    prefaudit), cannot be asked: stale once nothing in it changed for :data:`STALE_AFTER` seconds.
    """
    m = re.search(r"\.tmp-(\d+)@([A-Za-z0-9._]+)-", path.name)
    if m and m[2] == owner().split("@", 1)[1] and os.name == "posix":  # Windows' os.kill(pid, 0) kills
        return not process_alive(int(m[1]))
    try:
        inside = list(path.iterdir()) if path.is_dir() else []
        times = [path.stat().st_mtime, *(p.stat().st_mtime for p in inside)]
    except OSError:  # removed meanwhile
        return False
    return (time.time() if now is None else now) - max(times) > STALE_AFTER


def remove_stale(paths: Iterable[Path]) -> list[Path]:
    """Remove the stale (:func:`is_stale`) temporary files and folders among ``paths``, each named in a warning."""
    gone = []
    for p in paths:
        if is_stale(p):
            with suppress(OSError):
                _remove(p)
                gone.append(p)
                warnings.warn(
                    f"{p}: left by a write that did not finish; removed", CacheWarning, stacklevel=3
                )
    return gone


def _remove(p: Path) -> None:
    shutil.rmtree(p) if p.is_dir() else p.unlink()


class _NoLock(nullcontext):
    """Stands in for a ``FileLock`` on a read-only cache, where nobody writes."""

    def acquire(self, timeout: float | None = None) -> None:
        pass

    def release(self) -> None:
        pass


# ------------------------------------------------------------------------------ the cache
class ShardCache:
    """One encode's cache folder: which shards are sound, who encodes the others, and the store.

    Parameters
    ----------
    folder : Path
        ``<cache>/encode/<key>``.
    meta : dict
        :func:`describe` of the encode.
    n_shards : int
    """

    def __init__(self, folder: Path, meta: dict[str, Any], n_shards: int) -> None:
        self.folder, self.meta, self.n_shards = Path(folder), meta, n_shards
        self._sound: dict[int, tuple[int, int, int, bool]] = {}  # shard -> (inode, size, mtime, full)
        self.locks = self.folder.parent.parent / "locks" / f"encode-{self.folder.name}"
        # Shard and meta temporaries; the store's are removed under the store lock (open_store).
        remove_stale(p for p in self.folder.glob(".*tmp-*") if not p.name.startswith(f".{STORE_DIR}."))

    def path(self, s: int) -> Path:
        return shard_path(self.folder, s)

    def problem(self, s: int, *, full: bool = False) -> str | None:
        """:func:`shard_problem` of shard ``s``; a file found sound is not read again while unchanged."""
        try:
            st = os.stat(self.path(s))
            seen = (st.st_ino, st.st_size, st.st_mtime_ns, full)
        except OSError:
            seen = None
        if seen is not None and self._sound.get(s) in {seen, (*seen[:3], True)}:
            return None
        problem = shard_problem(self.path(s), shard_record(self.meta, s), full=full)
        if problem is None and seen is not None:
            self._sound[s] = seen
        return problem

    def finished(self) -> list[int]:
        return [s for s in range(self.n_shards) if self.problem(s) is None]

    def lock(self, name: str) -> Any:
        """A ``FileLock`` named ``name`` for this folder (a stand-in on a read-only cache)."""
        try:
            self.locks.mkdir(parents=True, exist_ok=True)
        except OSError:
            return _NoLock()
        return FileLock(self.locks / f"{name}.lock")

    def fill(
        self,
        shards: Iterable[int],
        encode_one: EncodeOne,
        counts: ShardCounts,
        on_found: Callable[[int], None] | None = None,
    ) -> ShardCounts:
        """Make every shard of ``shards`` sound: found, repaired, or encoded (``encode_one(s)``).

        A shard another process is encoding (its lock is held) is skipped and come back to at
        the end, when that process has finished it; so two encoders split the shards between them.
        """
        deferred = []
        for s in shards:
            if self.problem(s) is None:
                self._found(s, counts, on_found)
                continue
            lock = self.lock(f"shard-{s:05d}")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                deferred.append(s)
                continue
            try:
                self._settle(s, encode_one, counts, on_found)
            finally:
                lock.release()
        for s in deferred:
            with self.lock(f"shard-{s:05d}"):
                self._settle(s, encode_one, counts, on_found)
        return counts

    def open_store(self, encode_one: EncodeOne, counts: ShardCounts) -> EncodedFeatures:
        """The features, memory-mapped from the store (:mod:`prefaudit.features.store`), under ``store.lock``.

        A sound store merged from these very shards is opened as it is. Otherwise every shard not
        written by this run is read back in full first (:func:`shard_problem` ``full``), those that
        fail are quarantined and encoded again, and the store is built anew.
        """
        paths = [self.path(s) for s in range(self.n_shards)]
        with self.lock("store"):
            remove_stale(self.folder.glob(f".{STORE_DIR}.tmp-*"))
            try:
                current = store_problem(self.folder / STORE_DIR, [part_record(p) for p in paths]) is None
            except CacheFileError:
                current = False
            if not current:
                for s in range(self.n_shards):
                    if s not in counts.encoded and self.problem(s, full=True) is not None:
                        with self.lock(f"shard-{s:05d}"):
                            self._settle(s, encode_one, counts, None, full=True)
            return EncodedFeatures.from_shards(paths, self.folder)

    def quarantine(self, s: int, reason: str) -> Path | None:
        """Move shard ``s`` into ``quarantine/`` and warn, naming it and ``reason``; returns where it went."""
        path, stamp = self.path(s), datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        dest = self.folder / "quarantine" / f"{path.stem}.{stamp}.npz"
        dest.parent.mkdir(exist_ok=True)
        try:
            os.replace(path, dest)
        except FileNotFoundError:
            return None
        warnings.warn(
            f"{path}: {reason}; moved to {dest}, encoding shard {s} again", CacheWarning, stacklevel=4
        )
        return dest

    def _found(self, s: int, counts: ShardCounts, on_found: Callable[[int], None] | None) -> None:
        if s not in counts.found:
            counts.found.append(s)
        if on_found is not None:
            on_found(s)

    def _settle(
        self,
        s: int,
        encode_one: EncodeOne,
        counts: ShardCounts,
        on_found: Callable[[int], None] | None,
        full: bool = False,
    ) -> None:
        """Holding shard ``s``'s lock: found sound (another process may just have written it), or encoded."""
        problem = self.problem(s, full=full)
        if problem is None:
            self._found(s, counts, on_found)
            return
        if problem != MISSING:
            self.quarantine(s, problem)
        enc, used = encode_one(s)
        write_shard(enc, self.path(s), shard_record(self.meta, s))
        counts.tokens_processed += used
        counts.encoded.append(s)
        if s in counts.found:
            counts.found.remove(s)


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
