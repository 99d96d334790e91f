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

Layout (``store.json`` says which files exist and is written last, so a store without it is
incomplete and is rebuilt). Per side (``chosen``, ``rejected``), the keys of
:meth:`~prefaudit.features.encoded.SidePooled.to_arrays` (``{side}_data``, ``_indices``,
``_indptr``, ``_top_token``, ``_top_pos``, ``_mean_act``, ``_n_tokens``, ``_truncated``,
``_full_length``) plus the same values column-major (``{side}_csc_data``, ``_csc_indices``
(rows), ``_csc_indptr``), so that one feature over all pairs (the drill-down's top pairs) reads
only that feature's entries; then ``prompt_length`` and ``prompt_cut``.

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

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

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
    so an interrupted build leaves no store behind. A complete store merged from as many shards
    is kept as it is; one merged from another number of shards is rebuilt.
    """
    folder = Path(folder)
    if not parts:
        raise ValueError("build_store needs at least one shard")
    if _complete(folder, len(parts)):
        return folder
    plan = _plan(parts, sides, fields)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        # Front-to-back writes for what comes in shard order; mapped files only for the two
        # column-major arrays, which are scattered into (mapped pages written count as RSS).
        out: dict[str, Any] = {
            key: np.lib.format.open_memmap(tmp / f"{key}.npy", "w+", dt, shape)
            if key.endswith(_SCATTERED)
            else _NpyWriter(tmp / f"{key}.npy", dt, shape)
            for key, (dt, shape) in plan["arrays"].items()
        }
        try:
            _fill(parts, out, plan, sides)
        finally:
            for arr in out.values():
                arr.flush() if isinstance(arr, np.memmap) else arr.close()
        short = [f"{w.path.name} ({w.left})" for w in out.values() if isinstance(w, _NpyWriter) and w.left]
        if short:  # the shards changed between the two passes
            raise RuntimeError(f"feature store: values missing from {', '.join(short)}")
        del out
        info = {k: plan[k] for k in ("n_pairs", "d_sae", "nnz")} | {
            "version": STORE_VERSION,
            "pooling": pooling if pooling is not None else plan["pooling"],
            "arrays": sorted(plan["arrays"]),
            "n_shards": len(parts),
        }
        (tmp / "store.json").write_text(json.dumps(info, indent=1))
        _move_into_place(tmp, folder, len(parts))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


class _NpyWriter:
    """An ``.npy`` file of known dtype and shape, written front to back with plain writes."""

    def __init__(self, path: Path, dtype: Any, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.left = path, np.dtype(dtype), int(np.prod(shape))
        self._fh = open(path, "wb")  # noqa: SIM115 -- closed by close(), after many appends
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self._fh, header)

    def append(self, values: Any) -> None:
        a = np.ascontiguousarray(values, dtype=self.dtype)
        self.left -= a.size
        self._fh.write(a.tobytes())

    def close(self) -> None:
        self._fh.close()


def _complete(folder: Path, n_shards: int) -> bool:
    """A complete store of this version, merged from ``n_shards`` shards, is at ``folder``."""
    return is_store(folder) and json.loads((folder / "store.json").read_text()).get("n_shards") == n_shards


def _move_into_place(tmp: Path, folder: Path, n_shards: int) -> None:
    if _complete(folder, n_shards):  # another process finished the same store first: keep that one
        return
    if folder.exists():  # incomplete (a crash) or merged from other shards: replaced
        shutil.rmtree(folder)
    try:
        os.replace(tmp, folder)
    except OSError:
        if not _complete(folder, n_shards):
            raise


def is_store(folder: str | Path) -> bool:
    """Whether ``folder`` holds a complete store of this version."""
    try:
        info = json.loads((Path(folder) / "store.json").read_text())
    except (OSError, ValueError):
        return False
    return info.get("version") == STORE_VERSION and all(
        (Path(folder) / f"{k}.npy").is_file() for k in info.get("arrays", [])
    )


def read_store(folder: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every array of a store, memory-mapped read-only (nothing is read yet), and ``store.json``."""
    folder = Path(folder)
    if not is_store(folder):
        raise FileNotFoundError(f"{folder}: no complete feature store (version {STORE_VERSION}) here")
    info = json.loads((folder / "store.json").read_text())
    arrays = {k: np.load(folder / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in info["arrays"]}
    for side in SIDES:
        if f"{side}_data" in arrays:
            arrays[f"{side}_shape"] = np.asarray([info["n_pairs"], info["d_sae"]], dtype=np.int64)
    arrays["pooling"] = np.asarray(info["pooling"])
    return arrays, info


# ----------------------------------------------------------------------------------- building
@contextmanager
def _opened(part: Part) -> Iterator[Mapping[str, Any]]:
    """A shard's arrays; an ``.npz`` reads a member only when it is asked for."""
    if isinstance(part, Mapping):
        yield part
        return
    with np.load(Path(part), allow_pickle=False) as z:
        yield z


def _plan(parts: Sequence[Part], sides: Sequence[str], fields: Sequence[str]) -> dict[str, Any]:
    """Sizes and dtypes of every output array, from a first pass that reads only the indices."""
    rows, nnz = 0, dict.fromkeys(sides, 0)
    col_counts: dict[str, np.ndarray] = {}
    d_sae: int | None = None
    pooling, present, trailing = None, None, {}
    for k, part in enumerate(parts):
        with _opened(part) as arrays:
            keys = set(arrays.keys()) - {"pooling"}
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
