"""Compiled (numba) per-column passes of :func:`~prefaudit.stats.paired_tests`, fused into one.

For each column of a canonical CSC Δ, :func:`fused_columns` reads the column's non-zero Δ once
and computes everything :func:`~prefaudit.stats.paired_tests` needs per column, per group of
pairs (one group for a plain call, one per topic for :func:`~prefaudit.stats.grouped.paired_tests_grouped`):

- the sum and the centred sum of squares of Δ (zeros included),
- Σ Δ·x for a centred per-pair regressor x (length control),
- the signed-rank summaries (positives, W⁺ with average ranks, tie term Σ(t³ − t), ties?),
  from one sort of integer keys (``|Δ|``'s IEEE bits shifted left, sign in the lowest bit; see
  :func:`prefaudit.stats.ranks.sort_keys`),
- the bootstrap replicate sums (float32, over the per-pair resample counts) and their four
  order statistics around the CI percentiles (bounded heaps of the smallest and largest sums:
  about one pass for tail percentiles),
- the split halves' sums (float64, over the per-pair half memberships) and their sign agreement.

The weight rows (bootstrap counts, then half memberships; ``weights[i]`` belongs to pair i) are
gathered once per non-zero Δ for the bootstrap and the splits together. That gather dominates:
(non-zero Δ) × (n_boot + 2·n_splits) bytes, from a matrix far larger than the caches.

The kernels are compiled with ``nogil=True``, so Python threads run them on disjoint columns in
parallel (:mod:`prefaudit.stats.fused`), and ``cache=True`` (the first compile, a few seconds,
is reused across processes). :data:`AVAILABLE` is False when numba cannot be imported; the
numpy path of :func:`~prefaudit.stats.paired_tests` then runs.
"""

from __future__ import annotations

import numpy as np

try:  # numba is optional at run time: without it the numpy path runs
    import numba
except ImportError:  # pragma: no cover - numba is a core dependency
    numba = None

#: Whether the compiled kernels can run (numba imported).
AVAILABLE = numba is not None


def _jit(func):  # type: ignore[no-untyped-def]
    return func if numba is None else numba.njit(cache=True, nogil=True)(func)


@_jit
def _sift_down(heap, m):  # type: ignore[no-untyped-def]
    """Restore the max-heap property of ``heap[:m]`` after its root was replaced."""
    i = 0
    v = heap[0]
    while True:
        child = 2 * i + 1
        if child >= m:
            break
        if child + 1 < m and heap[child + 1] > heap[child]:
            child += 1
        if heap[child] <= v:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = v


@_jit
def _smallest_two(a, sign, m, heap, out, at, at_second):  # type: ignore[no-untyped-def]
    """The m-th and (m − 1)-th smallest of ``sign · a`` (1-based; the second equals the first when
    m = 1), times ``sign``, into ``out[at]`` and ``out[at_second]``.

    A max-heap of the m smallest seen so far: after it fills, most values are rejected by one
    comparison with its root, so the bootstrap's tail percentiles cost about one pass.
    """
    for i in range(m):
        heap[i] = sign * a[i]
    for i in range(m // 2 - 1, -1, -1):  # heapify bottom-up
        v = heap[i]
        j = i
        while True:
            child = 2 * j + 1
            if child >= m:
                break
            if child + 1 < m and heap[child + 1] > heap[child]:
                child += 1
            if heap[child] <= v:
                break
            heap[j] = heap[child]
            j = child
        heap[j] = v
    for i in range(m, a.size):
        v = sign * a[i]
        if v < heap[0]:
            heap[0] = v
            _sift_down(heap, m)
    out[at] = sign * heap[0]
    second = heap[0]
    if m >= 2:
        second = heap[1] if m == 2 or heap[1] >= heap[2] else heap[2]
    out[at_second] = sign * second


@_jit
def _order_statistics(a, picks, out, heap):  # type: ignore[no-untyped-def]
    """``out[i]`` = the ``picks[i]``-th smallest of ``a`` (0-based; p0 ≤ p1 ≤ p2 ≤ p3 with
    p1 − p0 ≤ 1 and p3 − p2 ≤ 1), as a full sort would place them."""
    n = a.size
    p0, p1, p2, p3 = picks[0], picks[1], picks[2], picks[3]
    _smallest_two(a, np.float32(1.0), p1 + 1, heap, out, 1, 0)
    if p0 == p1:
        out[0] = out[1]
    # The high end from the largest: the (n − p2)-th largest is the p2-th smallest.
    _smallest_two(a, np.float32(-1.0), n - p2, heap, out, 2, 3)
    if p3 == p2:
        out[3] = out[2]


@_jit
def _ranks(vals, k, absbuf, absbits, keys, out_rank, g, j):  # type: ignore[no-untyped-def]
    """Signed-rank summaries of ``vals[:k]`` (all non-zero) into ``out_rank[:, g, j]``:
    positives, W⁺, tie term, has-ties (0/1)."""
    for i in range(k):
        absbuf[i] = abs(vals[i])
    for i in range(k):
        keys[i] = (absbits[i] << np.uint64(1)) | np.uint64(vals[i] > 0)
    ks = keys[:k]
    ks.sort()
    positives = 0
    w_plus = 0.0
    tie = 0.0
    i = 0
    while i < k:
        magnitude = ks[i] >> np.uint64(1)
        e = i + 1
        while e < k and (ks[e] >> np.uint64(1)) == magnitude:
            e += 1
        run_positive = 0
        for q in range(i, e):
            run_positive += int(ks[q] & np.uint64(1))
        t = e - i
        # Each member of a run of t ties at positions i … e − 1 gets the average rank.
        w_plus += run_positive * (i + 1 + (t - 1) / 2.0)
        positives += run_positive
        if t > 1:
            tie += float(t) ** 3 - t
        i = e
    out_rank[0, g, j] = positives
    out_rank[1, g, j] = w_plus
    out_rank[2, g, j] = tie
    out_rank[3, g, j] = 1.0 if tie > 0 else 0.0


@_jit
def _segment(
    vals,
    rows,
    k,
    n,
    g,
    j,
    weights,
    n_boot,
    n_splits,
    picks,
    xc,
    scratch,
    out_moments,
    out_rank,
    out_tails,
    out_agree,
):  # type: ignore[no-untyped-def]
    """Every per-column statistic of one group's non-zero Δ ``vals[:k]`` (pairs ``rows[:k]``)."""
    absbuf, absbits, keys, acc32, acc64, heap = scratch
    total = 0.0
    for i in range(k):
        total += vals[i]
    mean = total / n
    css = 0.0
    for i in range(k):
        d = vals[i] - mean
        css += d * d
    css += (n - k) * mean * mean
    cross = 0.0
    if xc.size:
        for i in range(k):
            cross += vals[i] * xc[rows[i]]
    out_moments[0, g, j] = k
    out_moments[1, g, j] = total
    out_moments[2, g, j] = css
    out_moments[3, g, j] = cross
    _ranks(vals, k, absbuf, absbits, keys, out_rank, g, j)
    n_half = 2 * n_splits
    if n_boot + n_half == 0:
        return
    acc32[:n_boot] = 0.0
    acc64[:n_half] = 0.0
    for i in range(k):
        w = weights[rows[i]]
        v = vals[i]
        v32 = np.float32(v)
        for b in range(n_boot):
            acc32[b] += v32 * np.float32(w[b])
        for s in range(n_half):
            acc64[s] += v * w[n_boot + s]
    if n_boot:
        _order_statistics(acc32[:n_boot], picks, out_tails[g, j], heap)
    if n_splits:
        same = 0
        for s in range(n_splits):
            a, b = np.sign(acc64[s]), np.sign(acc64[n_splits + s])
            if a == b and a != 0:
                same += 1
        out_agree[g, j] = same / n_splits


@_jit
def fused_columns(  # type: ignore[no-untyped-def]
    indptr,
    indices,
    data,
    columns,
    group_of_row,
    group_sizes,
    weights,
    n_boot,
    n_splits,
    picks,
    xc,
    out_moments,
    out_rank,
    out_tails,
    out_agree,
):
    """Every per-column statistic of ``columns`` of Δ, per group of pairs.

    Parameters
    ----------
    indptr, indices, data : CSC arrays of Δ (canonical: sorted rows, no stored zeros)
    columns : int64 array of the columns to compute (each with at least one non-zero Δ)
    group_of_row : int64 array, the group of each pair (all 0 for one group)
    group_sizes : int64 array, pairs per group
    weights : (n_pairs × (n_boot + 2·n_splits)) unsigned ints; row i is pair i's resample
        counts then its half memberships (within its group)
    picks : int64[4], the order statistics wanted of the n_boot replicate sums
    xc : float64 per pair, the centred length regressor (within its group); empty to skip
    out_moments : float64 (4, groups, features): non-zero Δ, Σ Δ, Σ (Δ − mean)², Σ Δ·xc
    out_rank : float64 (4, groups, features): positives, W⁺, tie term, has ties
    out_tails : float32 (groups, features, 4): the order statistics
    out_agree : float64 (groups, features): split-half agreement

    Only the tested (group, column) cells are written; the caller fills the rest.
    """
    n_groups = group_sizes.size
    kmax = 1
    for j in columns:
        kmax = max(kmax, indptr[j + 1] - indptr[j])
    vals = np.empty(kmax, np.float64)
    rows = np.empty(kmax, np.int64)
    absbuf = np.empty(kmax, np.float64)
    scratch = (
        absbuf,
        absbuf.view(np.uint64),
        np.empty(kmax, np.uint64),
        np.empty(max(n_boot, 1), np.float32),
        np.empty(max(2 * n_splits, 1), np.float64),
        np.empty(max(n_boot, 1), np.float32),
    )
    starts = np.zeros(n_groups + 1, np.int64)
    fill = np.zeros(n_groups, np.int64)
    for j in columns:
        a, b = indptr[j], indptr[j + 1]
        if n_groups == 1:
            k = b - a
            for i in range(k):
                vals[i] = data[a + i]
                rows[i] = indices[a + i]
            if k:
                _segment(
                    vals,
                    rows,
                    k,
                    group_sizes[0],
                    0,
                    j,
                    weights,
                    n_boot,
                    n_splits,
                    picks,
                    xc,
                    scratch,
                    out_moments,
                    out_rank,
                    out_tails,
                    out_agree,
                )
            continue
        # Several groups: a stable counting sort of the column's non-zeros by group.
        starts[:] = 0
        for i in range(a, b):
            starts[group_of_row[indices[i]] + 1] += 1
        for g in range(n_groups):
            starts[g + 1] += starts[g]
        fill[:] = starts[:n_groups]
        for i in range(a, b):
            row = indices[i]
            g = group_of_row[row]
            vals[fill[g]] = data[i]
            rows[fill[g]] = row
            fill[g] += 1
        for g in range(n_groups):
            lo, hi = starts[g], starts[g + 1]
            if hi > lo:
                _segment(
                    vals[lo:hi],
                    rows[lo:hi],
                    hi - lo,
                    group_sizes[g],
                    g,
                    j,
                    weights,
                    n_boot,
                    n_splits,
                    picks,
                    xc,
                    scratch,
                    out_moments,
                    out_rank,
                    out_tails,
                    out_agree,
                )


@_jit
def grouped_column_summaries(indptr, indices, data, group_of_row, n_groups, out):  # type: ignore[no-untyped-def]
    """Per group and column of a CSC matrix: stored count, sum, largest |value| → ``out[0..2]``."""
    for j in range(indptr.size - 1):
        for i in range(indptr[j], indptr[j + 1]):
            g = group_of_row[indices[i]]
            v = data[i]
            out[0, g, j] += 1.0
            out[1, g, j] += v
            out[2, g, j] = max(out[2, g, j], abs(v))


@_jit
def grouped_overlap(c_indptr, c_indices, r_indptr, r_indices, group_of_row, out):  # type: ignore[no-untyped-def]
    """Per group and column: pairs where both chosen and rejected are stored (a merge of rows)."""
    for j in range(c_indptr.size - 1):
        a, a_end = c_indptr[j], c_indptr[j + 1]
        b, b_end = r_indptr[j], r_indptr[j + 1]
        while a < a_end and b < b_end:
            x, y = c_indices[a], r_indices[b]
            if x == y:
                out[group_of_row[x], j] += 1
                a += 1
                b += 1
            elif x < y:
                a += 1
            else:
                b += 1
