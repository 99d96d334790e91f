"""Columns of a sparse Δ times a dense per-pair weight matrix, from the non-zero Δ only.

For every requested column j of a canonical CSC Δ (pairs × features) and a dense
(pairs × m) weight matrix W, :func:`column_products` computes the length-m row
``Δ[:, j]ᵀ W = Σ_{i: Δᵢⱼ ≠ 0} Δᵢⱼ · W[i, :]`` and hands it to a callback, so a caller can reduce
each column's m sums (to a few order statistics, say) without storing all of them. The work is
(non-zero Δ) × m multiply-adds, done as: gather the W rows of a batch of columns (``np.take``),
cast them to the accumulation dtype, one batched ``matmul``. W may be split into consecutive
parts with their own accumulation dtype, so one gather serves the bootstrap (float32 sums over
the resample counts) and the split halves (float64 sums over the half memberships) at once.

>>> import numpy as np, scipy.sparse as sp
>>> delta = sp.csc_array(np.array([[1.0, 0.0], [2.0, 3.0], [0.0, 4.0]]))
>>> out = np.zeros((2, 2))
>>> def keep(cols, sums):
...     out[cols] = sums[0]
>>> column_products(delta, np.array([[1, 0], [1, 1], [0, 2]], np.uint8), np.arange(2), keep,
...                 parts=[(2, np.float64)])
>>> out.tolist()
[[3.0, 2.0], [3.0, 11.0]]

**Threads.** numpy releases the GIL in take, copyto and matmul, so a few threads share the batches
(each column is summed by one thread, in a fixed order, so results do not depend on scheduling).
BLAS is held to one thread meanwhile (``threadpoolctl``): these products are matrix-vector
shaped, and OpenBLAS's own threads — started for every call above ~10⁴ elements and serialised
when several Python threads call at once — made them many times slower on a busy 2-core machine.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

# Elements (gathered weight rows × m) per batch: large enough to amortise numpy's per-call cost
# (a batch is ~6 calls), small enough that the gathered and cast buffers stay in cache.
_UNIT_ELEMENTS = 1 << 20
# Worker threads (numpy releases the GIL in take, copyto, matmul and sort), one per usable CPU.
_THREADS = max(
    1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
)
# Below this many multiply-adds one thread does it all, without touching the BLAS settings.
_SMALL_WORK = 1 << 22

Finish = Callable[[np.ndarray, list[np.ndarray]], None]

_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Hold BLAS to one thread while inside (nested and concurrent uses share one limit).

    threadpoolctl's limits are process-wide; were each concurrent caller to save and restore
    them, the last to leave could restore another caller's "1". So the first caller in sets the
    limit and the last one out restores what it found. A no-op without threadpoolctl.
    """
    global _blas_users, _blas_limiter
    with _blas_lock:
        if _blas_users == 0:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
                _blas_limiter = None
            else:
                _blas_limiter = threadpool_limits(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def _tasks(k: np.ndarray, columns: np.ndarray, m: int) -> list[tuple[int, np.ndarray]]:
    """Batches ``(width, cols)`` of same-width columns within the unit, and single long columns.

    Long columns (width × m above the unit, summed slice by slice) come first, largest first,
    so that the threads, taking tasks in order, finish at about the same time.
    """
    order = columns[np.argsort(k[columns], kind="stable")]
    widths = k[order]
    long_from = int(np.searchsorted(widths * m, _UNIT_ELEMENTS, side="right"))
    tasks: list[tuple[int, np.ndarray]] = [
        (int(widths[i]), order[i : i + 1]) for i in range(order.size - 1, long_from - 1, -1)
    ]
    short = order[:long_from]
    if short.size:
        for group in np.split(short, np.flatnonzero(np.diff(widths[:long_from])) + 1):
            width = int(k[group[0]])
            per_unit = max(1, _UNIT_ELEMENTS // (width * m))
            tasks.extend((width, group[i : i + per_unit]) for i in range(0, group.size, per_unit))
    return tasks


def column_products(
    delta: sp.csc_array,
    weights: np.ndarray,
    columns: np.ndarray,
    finish: Finish,
    *,
    parts: Sequence[tuple[int, type]],
    threads: int | None = None,
) -> None:
    """Call ``finish(cols, sums)`` with ``sums[p][c] = Δ[:, cols[c]]ᵀ @ weights[:, part p]``.

    Parameters
    ----------
    delta : scipy.sparse.csc_array
        Canonical (pairs × features) Δ; columns without a non-zero Δ are skipped.
    weights : numpy.ndarray, shape (n_pairs, m), C-ordered
        Per-pair weights of any real dtype (uint8 keeps the gathers small).
    columns : array of int
        The columns to compute.
    finish : callable
        Receives an int64 array of columns and, per part, a (len(cols) × width) array of that
        part's dtype, which it may modify but must not keep (the buffers are reused). Called
        from worker threads, once per column; different calls touch different columns.
    parts : sequence of (width, dtype)
        Consecutive column blocks of ``weights`` (widths summing to m) and the float dtype
        each is accumulated in.
    threads : int, optional
        Worker threads (default: up to 4, one per usable CPU; one below ~4·10⁶ multiply-adds).
    """
    m = weights.shape[1]
    bounds = np.concatenate([[0], np.cumsum([w for w, _ in parts])]).astype(int)
    if bounds[-1] != m:
        raise ValueError(f"parts cover {bounds[-1]} weight columns, not {m}")
    dtypes = [np.dtype(d) for _, d in parts]
    indptr = delta.indptr.astype(np.int64)
    k = np.diff(indptr)
    columns = np.asarray(columns, dtype=np.int64)
    columns = columns[k[columns] > 0]
    if columns.size == 0 or m == 0:
        return
    values = {d: delta.data.astype(d, copy=False) for d in set(dtypes)}
    tasks = _tasks(k, columns, m)
    step = max(1, _UNIT_ELEMENTS // m)  # rows per slice of a long column
    rows_max = max([step] + [w * c.size for w, c in tasks if w * m <= _UNIT_ELEMENTS])
    spans = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), dtypes, strict=True))
    lock = threading.Lock()
    queue: Iterator[tuple[int, np.ndarray]] = iter(tasks)

    def worker() -> None:
        # Per-thread buffers: fresh multi-MB arrays per batch would cost page faults each time.
        raw = np.empty(rows_max * m, weights.dtype)
        cast = [np.empty(rows_max * (hi - lo), d) for lo, hi, d in spans]
        out = [np.empty(rows_max * (hi - lo), d) for lo, hi, d in spans]
        acc = [np.empty(hi - lo) for lo, hi, d in spans]  # float64: slices add up exactly enough

        def products(rows: np.ndarray, n_cols: int, width: int, vals: dict) -> list[np.ndarray]:
            # Σ over each column's `width` gathered rows, for n_cols columns at once, per part.
            gathered = raw[: rows.size * m].reshape(rows.size, m)
            np.take(weights, rows, axis=0, out=gathered, mode="clip")
            sums = []
            for p, (lo, hi, d) in enumerate(spans):
                scaled = cast[p][: rows.size * (hi - lo)].reshape(rows.size, hi - lo)
                np.copyto(scaled, gathered[:, lo:hi], casting="unsafe")
                total = out[p][: n_cols * (hi - lo)].reshape(n_cols, 1, hi - lo)
                if width == 1:  # matmul with an inner dimension of 1 is ~10× slower than this
                    np.multiply(scaled[:, None, :], vals[d], out=total)
                else:
                    np.matmul(vals[d], scaled.reshape(n_cols, width, hi - lo), out=total)
                sums.append(total[:, 0, :])
            return sums

        while True:
            with lock:
                task = next(queue, None)
            if task is None:
                return
            width, cols = task
            if width * m <= _UNIT_ELEMENTS:
                index = indptr[cols][:, None] + np.arange(width)
                vals = {d: v[index][:, None, :] for d, v in values.items()}
                finish(cols, products(delta.indices[index].ravel(), cols.size, width, vals))
                continue
            lo_row, hi_row = int(indptr[cols[0]]), int(indptr[cols[0] + 1])
            for a in acc:
                a[:] = 0
            for start in range(lo_row, hi_row, step):
                stop = min(start + step, hi_row)
                vals = {d: v[None, None, start:stop] for d, v in values.items()}
                for a, s in zip(acc, products(delta.indices[start:stop], 1, stop - start, vals), strict=True):
                    a += s[0]
            finish(cols, [a[None, :].astype(d) for a, (_, _, d) in zip(acc, spans, strict=True)])

    if int(k[columns].sum()) * m < _SMALL_WORK:
        worker()
        return
    n_threads = max(1, min(_THREADS if threads is None else threads, len(tasks)))
    with one_blas_thread():
        if n_threads == 1:
            worker()
        else:
            with ThreadPoolExecutor(n_threads) as pool:
                for future in [pool.submit(worker) for _ in range(n_threads)]:
                    future.result()
