"""Resampling over pairs: percentile bootstrap CI of mean Δ and split-half sign agreement.

Both are vectorised over features. The bootstrap draws, for replicate b = 0 … n_boot − 1 in turn,
``idx = rng.integers(0, n_pairs, size=n_pairs)`` from ``rng = numpy.random.default_rng(seed)``;
its pair counts form an (n_pairs × n_boot) matrix, and a feature's replicate means are its
sparse Δ times those counts. Only the rows of the pairs where the feature's Δ ≠ 0 are read,
so the work is (non-zero Δ) × n_boot rather than pairs × features × n_boot.

>>> import numpy as np, scipy.sparse as sp
>>> delta = sp.csc_array(np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]]))
>>> low, high = bootstrap_mean_ci(delta, n_boot=200, alpha=0.1, rng=np.random.default_rng(0))
>>> bool(low[0] < 2.5 < high[0]), (low[1], high[1])
(True, (np.float64(0.0), np.float64(0.0)))
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

# Elements (gathered count rows × replicates) per work unit: small enough that a unit's
# uint8 gather and its float32 copy stay in cache, large enough to amortise numpy's call costs.
_UNIT_ELEMENTS = 1 << 20
# numpy releases the GIL in take/copyto/matmul/sort, so a few threads overlap the work units.
_THREADS = max(1, min(4, os.cpu_count() or 1))
# Replicates drawn before each blockwise transpose into the (pairs × replicates) count matrix.
_COUNT_BLOCK = 64


def bootstrap_counts(n_pairs: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each pair is drawn in each replicate, as an (n_pairs × n_boot) C-ordered array.

    Column b is ``np.bincount(rng.integers(0, n_pairs, size=n_pairs))``, drawn for b = 0, 1, …
    in turn. The dtype is the smallest unsigned one that holds the largest count (uint8 unless
    one pair is drawn > 255 times in a replicate), so the array takes n_pairs × n_boot bytes and
    its rows are cheap to gather.
    """
    counts = np.empty((n_pairs, n_boot), dtype=np.uint8)
    block = np.empty((min(_COUNT_BLOCK, n_boot), n_pairs), dtype=np.int64)
    for start in range(0, n_boot, _COUNT_BLOCK):
        stop = min(start + _COUNT_BLOCK, n_boot)
        drawn = block[: stop - start]
        for b in range(start, stop):
            drawn[b - start] = np.bincount(rng.integers(0, n_pairs, size=n_pairs), minlength=n_pairs)
        if drawn.max() > np.iinfo(counts.dtype).max:
            counts = counts.astype(np.min_scalar_type(n_pairs))
        counts[:, start:stop] = drawn.T  # blockwise transpose: no second n_pairs × n_boot copy
    return counts


def _interpolate(sorted_tails: np.ndarray, t: float) -> np.ndarray:
    # numpy.percentile(method="linear") from the two order statistics around the virtual index.
    a = sorted_tails[:, 0].astype(np.float64)
    b = sorted_tails[:, 1].astype(np.float64)
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def _virtual_index(n: int, q: float) -> tuple[int, float]:
    virtual = np.float64(n) * q + (1 - q) - 1  # numpy's (n − 1)·q, computed as numpy does
    below = int(np.floor(virtual))
    return below, float(virtual - below)


def bootstrap_mean_ci(
    delta: sp.csc_array,
    *,
    n_boot: int,
    alpha: float,
    rng: np.random.Generator,
    columns: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap (1 − alpha) CI of each column's mean Δ over pairs.

    Parameters
    ----------
    delta : scipy.sparse.csc_array
        Canonical (pairs × features) Δ.
    n_boot : int
        Replicates (≥ 1).
    alpha : float
        The CI is [alpha/2, 1 − alpha/2] percentiles of the replicate means (numpy's linear
        method).
    rng : numpy.random.Generator
        Source of the resample indices (see the module docstring for the exact draws).
    columns : array of int, optional
        Columns to bootstrap (default: those with a non-zero Δ). Others get [0, 0] when Δ ≡ 0
        and NaN otherwise.

    Notes
    -----
    The replicate sums are accumulated in float32 (relative error ≈ 1e-6, far below the Monte
    Carlo error of a percentile bootstrap); the percentiles are interpolated in float64.
    """
    n_pairs, n_features = delta.shape
    indptr = delta.indptr.astype(np.int64)
    k = np.diff(indptr)
    low = np.where(k == 0, 0.0, np.nan)
    high = low.copy()
    counts = bootstrap_counts(n_pairs, n_boot, rng)
    if columns is None:
        columns = np.flatnonzero(k)
    columns = np.asarray(columns, dtype=np.int64)
    columns = columns[k[columns] > 0]
    if columns.size == 0:
        return low, high
    values = delta.data.astype(np.float32)
    below_low, t_low = _virtual_index(n_boot, alpha / 2)
    below_high, t_high = _virtual_index(n_boot, 1 - alpha / 2)
    picks = [below_low, min(below_low + 1, n_boot - 1), below_high, min(below_high + 1, n_boot - 1)]
    tails = np.empty((n_features, 4), dtype=np.float32)  # the 4 order statistics per column
    local = threading.local()

    def gathered(n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        # Per-thread buffers: fresh multi-MB arrays per unit would cost page faults each time.
        need = n_rows * n_boot
        buffers = getattr(local, "buffers", None)
        if buffers is None or buffers[0].size < need:
            buffers = local.buffers = (np.empty(need, counts.dtype), np.empty(need, np.float32))
        return buffers[0][:need].reshape(n_rows, n_boot), buffers[1][:need].reshape(n_rows, n_boot)

    def run(unit: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        cols, rows, vals = unit
        n_cols, width = rows.shape
        raw, scaled = gathered(n_cols * width)
        np.take(counts, rows.ravel(), axis=0, out=raw, mode="clip")
        np.copyto(scaled, raw, casting="unsafe")
        sums = np.matmul(vals[:, None, :], scaled.reshape(n_cols, width, n_boot))[:, 0, :]
        sums.sort(axis=1)
        tails[cols] = sums[:, picks]

    def run_long(col: int) -> None:
        # A column with many non-zero Δ: accumulate its replicate sums slice by slice.
        sums = np.zeros(n_boot, dtype=np.float32)
        step = max(1, _UNIT_ELEMENTS // n_boot)
        for start in range(indptr[col], indptr[col + 1], step):
            stop = min(start + step, indptr[col + 1])
            raw, scaled = gathered(stop - start)
            np.take(counts, delta.indices[start:stop], axis=0, out=raw, mode="clip")
            np.copyto(scaled, raw, casting="unsafe")
            sums += values[start:stop] @ scaled
        sums.sort()
        tails[col] = sums[picks]

    units: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    long_columns: list[int] = []
    # Columns with the same number of non-zero Δ share one batched (1 × k)·(k × n_boot) product.
    by_width = columns[np.argsort(k[columns], kind="stable")]
    for group in np.split(by_width, np.flatnonzero(np.diff(k[by_width])) + 1):
        width = int(k[group[0]])
        if width * n_boot > _UNIT_ELEMENTS:
            long_columns.extend(group.tolist())
            continue
        index = indptr[group][:, None] + np.arange(width)
        rows, vals = delta.indices[index], values[index]
        per_unit = _UNIT_ELEMENTS // (width * n_boot)
        units.extend(
            (group[i : i + per_unit], rows[i : i + per_unit], vals[i : i + per_unit])
            for i in range(0, group.size, per_unit)
        )
    if _THREADS > 1 and len(units) + len(long_columns) > 1:
        with ThreadPoolExecutor(_THREADS) as pool:
            list(pool.map(run, units))
            list(pool.map(run_long, long_columns))
    else:
        for unit in units:
            run(unit)
        for col in long_columns:
            run_long(col)
    low[columns] = _interpolate(tails[columns, :2], t_low) / n_pairs
    high[columns] = _interpolate(tails[columns, 2:], t_high) / n_pairs
    return low, high


def split_half_agreement(
    delta: sp.csc_array, *, n_splits: int, rng: np.random.Generator, columns: np.ndarray | None = None
) -> np.ndarray:
    """Fraction of random half-splits whose two halves' mean Δ have the same non-zero sign.

    Split s draws ``perm = rng.permutation(n_pairs)``; its first half is ``perm[: n_pairs // 2]``
    and its second half the rest. Columns not in ``columns`` (default: those with a non-zero Δ)
    get NaN, as do all columns when there are fewer than two pairs.

    >>> import numpy as np, scipy.sparse as sp
    >>> delta = sp.csc_array(np.array([[1.0], [2.0], [1.5], [3.0]]))
    >>> split_half_agreement(delta, n_splits=5, rng=np.random.default_rng(0)).tolist()
    [1.0]
    """
    n_pairs, n_features = delta.shape
    out = np.full(n_features, np.nan)
    if columns is None:
        columns = np.flatnonzero(np.diff(delta.indptr))
    if n_pairs < 2 or n_splits < 1 or len(columns) == 0:
        return out
    first = np.zeros((n_pairs, n_splits))
    for s in range(n_splits):
        first[rng.permutation(n_pairs)[: n_pairs // 2], s] = 1.0
    # Both halves' sums are computed directly: "total − first half" could leave a rounding
    # residue where the second half is exactly zero, and flip the sign test.
    halves = np.hstack([first, 1.0 - first])
    sums = (delta.T @ halves)[columns].reshape(len(columns), 2, n_splits)
    sign_first, sign_second = np.sign(sums[:, 0]), np.sign(sums[:, 1])
    agree = (sign_first == sign_second) & (sign_first != 0)
    out[columns] = agree.mean(axis=1)
    return out
