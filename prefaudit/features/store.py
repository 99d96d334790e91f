"""The pooled feature store on disk: one set of uncompressed ``.npy`` files, opened memory-mapped.

Encoding writes shards (``.npz``, the unit of resumption). Reading every shard into RAM and
concatenating them holds all pooled values twice at once; at 260,000 pairs that is gigabytes.
The store merges the shards **once** into one array per field, written straight into
``.npy`` files, one shard in memory at a time. Opening it maps the files
(``np.load(mmap_mode="r")``) and reads nothing else: the operating system pages in what a
computation touches, and can drop those pages again, since they are clean copies of the file.

Why merged and not a lazy concatenation of per-shard files: scipy's CSR wraps one
``(data, indices, indptr)`` triple without copying it, so a merged store *is* a
``scipy.sparse.csr_matrix`` and every existing consumer works on it unchanged; a lazy
concatenation would need a matrix type of our own, and the first ``vstack`` would copy all.

Layout (``store.json`` says which files exist, their sizes and the shards the store was merged
from; it is written last, so a store without it is incomplete and is rebuilt). Per side
(``chosen``, ``rejected``), the keys of :meth:`~prefaudit.features.encoded.SidePooled.to_arrays` (``{side}_data``, ``_indices``,
``_indptr``, ``_top_token``, ``_top_pos``, ``_mean_act``, ``_n_tokens``, ``_truncated``,
``_full_length``) plus the same values column-major (``{side}_csc_data``, ``_csc_indices``
(rows), ``_csc_indptr``), so that one feature over all pairs (the drill-down's top pairs) reads
only that feature's entries; then ``prompt_length`` and ``prompt_cut``.

Checks (:func:`store_problem`): a store is used only if every ``.npy`` file is as long as its
header says and ``store.json`` records exactly the shards it is asked for (name, size, digest of
their CRC-32s); otherwise :func:`build_store` warns, naming the file, and builds it again. Files
are allocated before they are written, so a full disk is an ``OSError``, not a ``SIGBUS``.

Example
-------
>>> import numpy as np, tempfile
>>> arrays = {"chosen_data": np.array([1.0, 2.0], np.float32), "chosen_indices": np.array([0, 2], np.int32),
...           "chosen_indptr": np.array([0, 1, 2]), "chosen_shape": np.array([2, 3])}
>>> folder = build_store([arrays], tempfile.mkdtemp() + "/store", sides=("chosen",), fields=())
>>> arrays_out, info = read_store(folder)
>>> arrays_out["chosen_csc_indptr"].tolist(), info["n_pairs"]
([0, 1, 1, 2], 2)
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..durable import fsync_path

#: Written into ``store.json``; a store of another version is not read (it is rebuilt).
STORE_VERSION = 1
#: The store's folder name inside an encode cache folder (next to the shards).
STORE_DIR = f"store-v{STORE_VERSION}"
SIDES = ("chosen", "rejected")
#: Per-response arrays of a side, besides the sparse values (``full_length`` is optional).
SIDE_FIELDS = ("top_token", "top_pos", "mean_act", "n_tokens", "truncated", "full_length")
_PAIR_FIELDS = ("prompt_length", "prompt_cut")
_SCATTERED = ("_csc_data", "_csc_indices")  # filled out of order: written through a mapping

Part = str | os.PathLike | Mapping[str, Any]


class CacheWarning(UserWarning):
    """A cache file was damaged or stale; the warning names it and says what was done instead."""


class CacheFileError(ValueError):
    """A cache file cannot be read; the message names it."""


def build_store(
    parts: Sequence[Part],
    folder: str | Path,
    *,
    pooling: str | None = None,
    sides: Sequence[str] = SIDES,
    fields: Sequence[str] = SIDE_FIELDS,
) -> Path:
    """Merge shards, in order, into a store at ``folder``; returns ``folder``.

    ``parts`` are ``.npz`` shard paths or mappings of the same arrays
    (:meth:`~prefaudit.features.encoded.EncodedFeatures.to_arrays`). Memory holds one part at a
    time. The store is written into a temporary folder beside ``folder`` and renamed into place,
    so an interrupted build leaves no store behind. A sound store merged from these very parts
    (:func:`store_problem`) is kept as it is; any other store at ``folder`` is named in a
    :class:`CacheWarning`, removed and built again. Callers that share a folder between
    processes hold a lock around this call (:class:`~prefaudit.features.shard_cache.ShardCache`).

    Raises ``OSError`` naming ``folder`` on a full disk (leaving nothing behind), and
    :class:`CacheFileError` naming a shard that cannot be read.
    """
    folder = Path(folder)
    if not parts:
        raise ValueError("build_store needs at least one shard")
    records = [part_record(p, k) for k, p in enumerate(parts)]
    problem = store_problem(folder, records)
    if problem is None:
        return folder
    if folder.exists():
        warnings.warn(
            f"{problem}: removing the feature store and building it again", CacheWarning, stacklevel=2
        )
    plan = _plan(parts, sides, fields)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-{owner()}-", dir=folder.parent))
    try:
        _write_store(parts, tmp, plan, sides)
        info = {k: plan[k] for k in ("n_pairs", "d_sae", "nnz")} | {
            "version": STORE_VERSION,
            "pooling": pooling if pooling is not None else plan["pooling"],
            "arrays": sorted(plan["arrays"]),
            "n_shards": len(parts),
            "files": {k: (tmp / f"{k}.npy").stat().st_size for k in sorted(plan["arrays"])},
            "shards": records,
        }
        (tmp / "store.json").write_text(json.dumps(info, indent=1))
        for path in [*tmp.iterdir(), tmp]:  # on disk before the rename makes them the store
            fsync_path(path)
        _move_into_place(tmp, folder, records)
        fsync_path(folder.parent)
    except OSError as e:
        need = sum(np.dtype(dt).itemsize * int(np.prod(shape)) for dt, shape in plan["arrays"].values())
        raise OSError(
            e.errno,
            f"cannot build the feature store {folder} ({e.strerror or e}; it needs {need / 1e6:.1f} MB "
            f"in {folder.parent})",
            str(folder),
        ) from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _write_store(parts: Sequence[Part], tmp: Path, plan: dict[str, Any], sides: Sequence[str]) -> None:
    # Front-to-back writes for what comes in shard order; mapped files only for the two
    # column-major arrays, which are scattered into (mapped pages written count as RSS). All are
    # allocated first: a mapped page the disk has no room for is a SIGBUS, not an OSError.
    out: dict[str, Any] = {}
    try:
        for key, (dt, shape) in plan["arrays"].items():
            path = tmp / f"{key}.npy"
            out[key] = _mapped(path, dt, shape) if key.endswith(_SCATTERED) else _NpyWriter(path, dt, shape)
        _fill(parts, out, plan, sides)
    finally:
        for arr in out.values():
            arr.close() if isinstance(arr, _NpyWriter) else getattr(arr, "flush", lambda: None)()
    short = [f"{w.path.name} ({w.left})" for w in out.values() if isinstance(w, _NpyWriter) and w.left]
    if short:  # the shards changed between the two passes
        raise RuntimeError(f"feature store: values missing from {', '.join(short)}")


class _NpyWriter:
    """An ``.npy`` file of known dtype and shape, allocated in full, then written front to back."""

    def __init__(self, path: Path, dtype: Any, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.left = path, np.dtype(dtype), int(np.prod(shape))
        self._fh, _offset = _create_npy(path, self.dtype, shape)

    def append(self, values: Any) -> None:
        a = np.ascontiguousarray(values, dtype=self.dtype)
        self.left -= a.size
        self._fh.write(a.tobytes())

    def close(self) -> None:
        self._fh.close()


def _mapped(path: Path, dtype: Any, shape: tuple[int, ...]) -> Any:
    """An ``.npy`` file mapped for writing, its blocks allocated before the mapping."""
    fh, offset = _create_npy(path, np.dtype(dtype), shape)
    fh.close()
    if int(np.prod(shape)) == 0:  # nothing to write (and an empty range cannot be mapped)
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r+", offset=offset, shape=shape)


def _create_npy(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> tuple[Any, int]:
    """A new ``.npy`` file with its header written and its full length allocated: (file, data offset)."""
    fh = open(path, "wb")  # noqa: SIM115 -- the caller closes it
    try:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(fh, header)
        fh.flush()
        offset = fh.tell()
        _allocate(fh.fileno(), offset + dtype.itemsize * int(np.prod(shape)))
    except BaseException:
        fh.close()
        raise
    return fh, offset


def _allocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes for ``fd`` on disk; ``OSError`` (ENOSPC) if they are not there."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except AttributeError:  # no posix_fallocate (macOS): write the zeros instead
        pass
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
    start, chunk = os.fstat(fd).st_size, 1 << 20
    for at in range(start, size, chunk):
        os.pwrite(fd, bytes(min(chunk, size - at)), at)


def _move_into_place(tmp: Path, folder: Path, records: list[dict[str, Any]]) -> None:
    if store_problem(folder, records) is None:  # another process finished the same store first
        return
    if folder.exists():  # incomplete (a crash), damaged or merged from other shards: replaced
        shutil.rmtree(folder)
    try:
        os.replace(tmp, folder)
    except OSError:
        if store_problem(folder, records) is not None:
            raise


# ------------------------------------------------------------------------------------ checking
def part_record(part: Part, k: int = 0) -> dict[str, Any]:
    """What ``store.json`` records of a shard: its name, size and a digest of its members' CRC-32s.

    The digest reads only the zip's central directory (no array data), so comparing a store's
    record with the shards on disk costs one small read per shard; a shard of other contents has
    other CRC-32s. A mapping part is hashed whole.
    """
    if isinstance(part, Mapping):
        h = hashlib.sha256()
        for key, a in sorted((key, np.ascontiguousarray(part[key])) for key in part):
            h.update(f"{key}:{a.dtype.str}:{a.shape}".encode() + a.tobytes())
        return {"name": f"part-{k}", "digest": h.hexdigest()[:32]}
    path = Path(part)
    try:
        with zipfile.ZipFile(path) as zf:
            members = sorted((i.filename, i.CRC, i.file_size) for i in zf.infolist())
        size = path.stat().st_size
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
        raise CacheFileError(f"{path}: cannot read this shard ({type(e).__name__}: {e})") from e
    digest = hashlib.sha256(json.dumps(members).encode()).hexdigest()[:32]
    return {"name": path.name, "bytes": size, "digest": digest}


def store_problem(folder: str | Path, records: Sequence[Mapping[str, Any]] | None = None) -> str | None:
    """Why the store at ``folder`` cannot be used, naming the file; ``None`` when it can.

    Checks that ``store.json`` is there and of this version, that every ``.npy`` file is as long as
    its header says (and as ``store.json`` recorded) and, given ``records`` (:func:`part_record` of
    the shards), that the store was merged from exactly those shards.
    """
    folder = Path(folder)
    info_path = folder / "store.json"
    if not folder.exists():
        return f"{folder}: no feature store here"
    try:
        info = json.loads(info_path.read_text())
    except FileNotFoundError:
        return f"{info_path}: missing, the store is incomplete"
    except (OSError, ValueError) as e:
        return f"{info_path}: unreadable ({e})"
    if info.get("version") != STORE_VERSION:
        return f"{info_path}: store version {info.get('version')}, this prefaudit reads {STORE_VERSION}"
    for key in info.get("arrays", []):
        problem = _npy_problem(folder / f"{key}.npy", info.get("files", {}).get(key))
        if problem:
            return problem
    if records is not None:
        built = info.get("shards")
        if built is None:
            return f"{info_path}: does not record the shards it was merged from (an older prefaudit)"
        if len(built) != len(records):
            return f"{info_path}: merged from {len(built)} shards, there are {len(records)} now"
        changed = [r["name"] for r, b in zip(records, built, strict=True) if dict(r) != b]
        if changed:
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            return f"{info_path}: merged from other versions of {', '.join(changed[:3])}{more}"
    return None


def _npy_problem(path: Path, recorded: int | None) -> str | None:
    """What is wrong with an ``.npy`` file of a store (``None``: it is as long as its header says)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            major, _minor = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _fortran, dtype = read(fh)
            expected = fh.tell() + dtype.itemsize * int(np.prod(shape))
    except FileNotFoundError:
        return f"{path}: missing"
    except (OSError, ValueError) as e:
        return f"{path}: unreadable header ({e})"
    if size != expected:
        how = "cut" if size < expected else "too long"
        return f"{path}: {size} bytes where its header says {expected} (the file is {how})"
    if recorded is not None and size != recorded:
        return f"{path}: {size} bytes where store.json recorded {recorded}"
    return None


def is_store(folder: str | Path) -> bool:
    """Whether ``folder`` holds a complete, uncut store of this version."""
    return store_problem(folder) is None


def read_store(folder: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every array of a store, memory-mapped read-only (nothing is read yet), and ``store.json``.

    Raises ``FileNotFoundError`` where there is no complete store and :class:`CacheFileError`
    naming the file where one is damaged (cut, unreadable).
    """
    folder = Path(folder)
    problem = store_problem(folder)
    if problem is not None:
        if not (folder / "store.json").is_file():
            raise FileNotFoundError(f"{folder}: no complete feature store (version {STORE_VERSION}) here")
        raise CacheFileError(problem)
    info = json.loads((folder / "store.json").read_text())
    arrays = {k: np.load(folder / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in info["arrays"]}
    for side in SIDES:
        if f"{side}_data" in arrays:
            arrays[f"{side}_shape"] = np.asarray([info["n_pairs"], info["d_sae"]], dtype=np.int64)
    arrays["pooling"] = np.asarray(info["pooling"])
    return arrays, info


def owner() -> str:
    """``<pid>@<host>``, put into temporary names so that a cleaner can ask whether their writer lives."""
    return f"{os.getpid()}@{re.sub(r'[^A-Za-z0-9.]', '_', socket.gethostname())[:40] or 'host'}"


# ----------------------------------------------------------------------------------- building
class _Members(Mapping):
    """A shard's ``.npz`` members, read when asked for; a read that fails names the file."""

    def __init__(self, npz: Any, path: Path) -> None:
        self._npz, self.path = npz, path

    def __getitem__(self, key: str) -> Any:
        try:
            return self._npz[key]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            raise CacheFileError(f"{self.path}: cannot read {key!r} ({type(e).__name__}: {e})") from e

    def __contains__(self, key: object) -> bool:
        return key in self._npz.files

    def __iter__(self) -> Iterator[str]:
        return iter(self._npz.files)

    def __len__(self) -> int:
        return len(self._npz.files)


@contextmanager
def _opened(part: Part) -> Iterator[Mapping[str, Any]]:
    """A shard's arrays; an ``.npz`` reads a member only when it is asked for."""
    if isinstance(part, Mapping):
        yield part
        return
    try:
        npz = np.load(Path(part), allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CacheFileError(f"{part}: cannot read this shard ({type(e).__name__}: {e})") from e
    with npz:
        yield _Members(npz, Path(part))


def _plan(parts: Sequence[Part], sides: Sequence[str], fields: Sequence[str]) -> dict[str, Any]:
    """Sizes and dtypes of every output array, from a first pass that reads only the indices."""
    rows, nnz = 0, dict.fromkeys(sides, 0)
    col_counts: dict[str, np.ndarray] = {}
    d_sae: int | None = None
    pooling, present, trailing = None, None, {}
    for k, part in enumerate(parts):
        with _opened(part) as arrays:
            keys = set(arrays.keys()) - {"pooling", "record"}
            if present is None:  # trailing shapes (d_model) from the first shard
                trailing = {key: np.shape(arrays[key])[1:] for key in keys if key.endswith("_mean_act")}
            if pooling is None and "pooling" in arrays:
                pooling = str(arrays["pooling"])
            n_part = None
            for side in sides:
                n_rows, n_cols = (int(x) for x in arrays[f"{side}_shape"])
                if d_sae is not None and n_cols != d_sae:
                    raise ValueError(f"shard {k} has {n_cols} features, shard 0 has {d_sae}")
                if n_part is not None and n_rows != n_part:
                    raise ValueError(f"shard {k}: chosen and rejected have different numbers of pairs")
                d_sae, n_part = n_cols, n_rows
                indices = np.asarray(arrays[f"{side}_indices"])
                nnz[side] += len(indices)
                counts = np.bincount(indices, minlength=d_sae)
                col_counts[side] = counts if side not in col_counts else col_counts[side] + counts
        # An optional array that one shard lacks is left out, as EncodedFeatures.concat leaves it out.
        present = keys if present is None else present & keys
        rows += int(n_part or 0)
    assert d_sae is not None and present is not None
    index_dtype = np.int32 if max([*nnz.values(), rows, d_sae or 0]) < 2**31 else np.int64
    plan: dict[str, Any] = {"arrays": {}, "n_pairs": rows, "d_sae": d_sae, "nnz": nnz, "pooling": pooling}
    plan["col_counts"] = col_counts
    for side in sides:
        n = nnz[side]
        plan["arrays"] |= {
            f"{side}_data": (np.float32, (n,)),
            f"{side}_indices": (index_dtype, (n,)),
            f"{side}_indptr": (np.int64, (rows + 1,)),
            f"{side}_csc_data": (np.float32, (n,)),
            f"{side}_csc_indices": (index_dtype, (n,)),
            f"{side}_csc_indptr": (np.int64, (d_sae + 1,)),
        }
        for f in fields:
            key = f"{side}_{f}"
            if key in present:
                dt = np.float32 if f == "mean_act" else (bool if f == "truncated" else np.int32)
                per_row = f not in ("top_token", "top_pos")
                plan["arrays"][key] = (dt, ((rows, *trailing.get(key, ())) if per_row else (n,)))
    for f in _PAIR_FIELDS:
        if f in present:
            plan["arrays"][f] = (bool if f == "prompt_cut" else np.int32, (rows,))
    return plan


def _fill(parts: Sequence[Part], out: dict[str, Any], plan: dict[str, Any], sides: Sequence[str]) -> None:
    """Second pass: copy each shard into its rows, and scatter its values into the CSC columns."""
    cursor = {}
    for side in sides:
        starts = np.zeros(plan["d_sae"] + 1, dtype=np.int64)
        np.cumsum(plan["col_counts"][side], out=starts[1:])
        out[f"{side}_csc_indptr"].append(starts)
        out[f"{side}_indptr"].append([0])
        cursor[side] = starts[:-1].copy()  # next free slot of each column
    row0, nz0 = 0, dict.fromkeys(sides, 0)
    for part in parts:
        with _opened(part) as arrays:
            n = _fill_part(arrays, out, plan, sides, cursor, row0, nz0)
        row0 += n


def _fill_part(
    arrays: Mapping[str, Any],
    out: dict[str, Any],
    plan: dict[str, Any],
    sides: Sequence[str],
    cursor: dict[str, np.ndarray],
    row0: int,
    nz0: dict[str, int],
) -> int:
    """Copy one shard (rows from ``row0``) into the store; returns its number of rows."""
    n = 0
    for side in sides:
        data = np.asarray(arrays[f"{side}_data"], dtype=np.float32)
        cols = np.asarray(arrays[f"{side}_indices"])
        indptr = np.asarray(arrays[f"{side}_indptr"], dtype=np.int64)
        n, k, z = len(indptr) - 1, len(data), nz0[side]
        out[f"{side}_data"].append(data)
        out[f"{side}_indices"].append(cols)
        out[f"{side}_indptr"].append(indptr[1:] + z)
        for f in ("top_token", "top_pos"):
            if f"{side}_{f}" in out:
                out[f"{side}_{f}"].append(arrays[f"{side}_{f}"])
        # Column-major copy: stable by column keeps rows ascending within each column,
        # and shards come in row order, so every column is sorted.
        order = np.argsort(cols, kind="stable")
        c_sorted = cols[order]
        rows = np.repeat(np.arange(row0, row0 + n), np.diff(indptr))[order]
        counts = np.bincount(c_sorted, minlength=plan["d_sae"])
        first = np.zeros(len(counts), dtype=np.int64)
        np.cumsum(counts[:-1], out=first[1:])
        dest = cursor[side][c_sorted] + (np.arange(k) - first[c_sorted])
        out[f"{side}_csc_data"][dest] = data[order]
        out[f"{side}_csc_indices"][dest] = rows
        cursor[side] += counts
        for f in ("mean_act", "n_tokens", "truncated", "full_length"):
            if f"{side}_{f}" in out:
                out[f"{side}_{f}"].append(arrays[f"{side}_{f}"])
        nz0[side] = z + k
    for f in _PAIR_FIELDS:
        if f in out:
            out[f].append(arrays[f])
    return n
