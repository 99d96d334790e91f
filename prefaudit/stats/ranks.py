"""Signed-rank statistics of every feature column at once, from the non-zero Δ only.

For each column of a sparse Δ (pairs × features) this computes what the Wilcoxon signed-rank test
and the matched-pairs rank-biserial correlation need: the number of non-zero Δ, the number of
positive Δ, W⁺ (sum of the average ranks of |Δ| over the positive Δ) and the tie term Σ(t³ − t)
over groups of tied |Δ|. Zeros are dropped, as ``scipy.stats.wilcoxon``'s default
``zero_method="wilcox"`` does.

>>> import numpy as np, scipy.sparse as sp
>>> r = signed_ranks(sp.csc_array(np.array([[1.0], [-2.0], [2.0], [0.0]])))
>>> r.n_nonzero[0], r.w_plus[0], r.tie_term[0]
(np.int64(3), np.float64(3.5), np.float64(6.0))
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

# Pads a column's keys to its block's width: above every key (a finite |Δ|'s bits shifted left by
# one are < 0xFFE0…), and with a 0 sign bit so that padding never counts as positive.
_PAD = np.uint64(np.iinfo(np.uint64).max - 1)
# Padded keys per block: small enough for the block and its temporaries to stay in cache.
_BLOCK_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class SignedRanks:
    """Per-feature signed-rank summaries; every array has one entry per feature column."""

    n_nonzero: np.ndarray  # int64, pairs with Δ ≠ 0
    n_positive: np.ndarray  # int64, pairs with Δ > 0
    w_plus: np.ndarray  # float64, Σ ranks of |Δ| over Δ > 0 (average ranks for ties)
    tie_term: np.ndarray  # float64, Σ (t³ − t) over groups of t tied |Δ|
    has_ties: np.ndarray  # bool, some |Δ| value occurs twice

    @property
    def rank_biserial(self) -> np.ndarray:
        """Kerby's matched-pairs rank-biserial correlation (W⁺ − W⁻)/(W⁺ + W⁻); 0 without Δ ≠ 0."""
        k = self.n_nonzero.astype(np.float64)
        total = k * (k + 1) / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (2 * self.w_plus - total) / total
        return np.where(k > 0, r, 0.0)


def sort_keys(values: np.ndarray) -> np.ndarray:
    """Integer keys that sort non-zero values by |value|, with the sign in the lowest bit.

    The IEEE-754 bits of a non-negative float64 are monotone in its value, so ``|v|``'s bits
    shifted left by one leave room for the sign: a plain integer sort then yields the order of
    |Δ|, its ties (equal ``key >> 1``) and the signs, without an argsort.
    """
    keys = np.abs(values).view(np.uint64) << np.uint64(1)
    keys |= (values > 0).view(np.uint8).astype(np.uint64)
    return keys


def _padded_width(k: np.ndarray) -> np.ndarray:
    # Round k up to a multiple of 2**(bit_length(k) − 3): at most ~25 % padding and only a few
    # distinct widths, so each width group is sorted as one 2-D array row by row.
    bits = np.floor(np.log2(np.maximum(k, 1))).astype(np.int64) + 1
    granule = np.left_shift(1, np.maximum(bits - 3, 0))
    return -(-k // granule) * granule


def _sorted_blocks(delta: sp.csc_array) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(columns, counts, block)``: each column's sort keys (see :func:`sort_keys`) in one
    row of ``block``, sorted, padded at the end with ``_PAD`` up to a shared width."""
    indptr = delta.indptr.astype(np.int64)
    k = np.diff(indptr)
    tested = np.flatnonzero(k)
    if tested.size == 0:
        return
    widths = _padded_width(k[tested])
    order = np.argsort(widths, kind="stable")
    bounds = np.flatnonzero(np.diff(widths[order])) + 1
    last = delta.data.size - 1
    for group in np.split(order, bounds):
        width = int(widths[group[0]])
        offsets = np.arange(width)
        step = max(1, _BLOCK_ELEMENTS // width)  # bounds the padded temporaries
        for start in range(0, group.size, step):
            columns = tested[group[start : start + step]]
            counts = k[columns]
            index = np.minimum(indptr[columns][:, None] + offsets, last)
            block = sort_keys(delta.data[index])
            np.putmask(block, offsets >= counts[:, None], _PAD)
            block.sort(axis=1)
            yield columns, counts, block


def _run_statistics(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """(positives, W⁺, tie term, has ties) of columns whose sorted keys are concatenated in ``keys``.

    Position i (0-based, over all columns) has ordinal rank i + 1 − start of its column, so with
    prefix sums of "positive" and "positive × (i + 1)" each column's count of positive Δ and its
    W⁺ without ties are differences at the column bounds (exact integer arithmetic). Ties move
    ranks to their group's average: a run of t equal |Δ| starting at position s gives each
    positive member s + 1 + (t − 1)/2 instead of its ordinal rank. Runs never cross columns
    because a column's first key starts a run.
    """
    starts = np.cumsum(counts) - counts
    ends = starts + counts
    positive = (keys & np.uint64(1)).astype(np.int64)
    cum_positive = np.concatenate([[0], np.cumsum(positive)])
    cum_weighted = np.concatenate([[0], np.cumsum(positive * np.arange(1, keys.size + 1))])
    positives = cum_positive[ends] - cum_positive[starts]
    w = ((cum_weighted[ends] - cum_weighted[starts]) - starts * positives).astype(np.float64)
    magnitude = keys >> np.uint64(1)
    repeats = magnitude[1:] == magnitude[:-1]
    repeats[starts[1:] - 1] = False
    follower = np.flatnonzero(repeats) + 1  # positions equal to the previous one
    tie = np.zeros(counts.size)
    has_ties = np.zeros(counts.size, dtype=bool)
    if follower.size:
        first = np.concatenate([[True], np.diff(follower) > 1])
        run_start = follower[first] - 1
        run_end = np.append(follower[np.flatnonzero(first)[1:] - 1], follower[-1]) + 1
        t = (run_end - run_start).astype(np.float64)
        run_positive = cum_positive[run_end] - cum_positive[run_start]
        run_weighted = cum_weighted[run_end] - cum_weighted[run_start]
        shift = run_positive * (run_start + 1 + (t - 1) / 2) - run_weighted
        run_column = np.searchsorted(starts, run_start, side="right") - 1
        w += np.bincount(run_column, weights=shift, minlength=counts.size)
        tie = np.bincount(run_column, weights=t**3 - t, minlength=counts.size)
        has_ties[np.unique(run_column)] = True
    return positives, w, tie, has_ties


def signed_ranks(delta: sp.csc_array) -> SignedRanks:
    """Signed-rank summaries of every column of ``delta`` (canonical CSC: no stored zeros).

    Equivalent, column by column, to ranking ``|d[d != 0]|`` with ``scipy.stats.rankdata``
    (average ranks) — but vectorised over all columns with one padded row-wise sort per block of
    columns. Each sorted block is summarised where it lies (positives and ordinal W⁺ from its
    sign bits; ties, rare for continuous activations, from equal neighbours): no array over all
    non-zero Δ is built, so the temporaries stay cache-sized.
    """
    n_features = delta.shape[1]
    n_nonzero = np.diff(delta.indptr).astype(np.int64)
    n_positive = np.zeros(n_features, dtype=np.int64)
    w_plus = np.zeros(n_features)
    tie_term = np.zeros(n_features)
    has_ties = np.zeros(n_features, dtype=bool)
    low_byte = 0 if np.little_endian else 7  # where the sign bit of a uint64 key sits
    for columns, counts, block in _sorted_blocks(delta):
        width = block.shape[1]
        # _PAD's lowest bit is 0, so padding never counts as positive.
        positive = block.view(np.uint8)[:, low_byte::8] & np.uint8(1)
        n_positive[columns] = positive.sum(axis=1, dtype=np.int64)
        # Σ ordinal ranks of the positive Δ, in exact integer arithmetic.
        w_plus[columns] = np.einsum("ij,j->i", positive, np.arange(1, width + 1, dtype=np.int64))
        if width < 2:
            continue
        # Equal |Δ| differ at most in the sign bit; padding next to padding is not a tie.
        tied = (block[:, 1:] ^ block[:, :-1]) < np.uint64(2)
        tied &= np.arange(1, width) < counts[:, None]
        rows = np.flatnonzero(tied.any(axis=1))
        if rows.size:
            valid = np.arange(width) < counts[rows, None]
            _, w, tie, ties = _run_statistics(block[rows][valid], counts[rows])
            w_plus[columns[rows]] = w
            tie_term[columns[rows]] = tie
            has_ties[columns[rows]] = ties
    return SignedRanks(n_nonzero, n_positive, w_plus, tie_term, has_ties)


def dense_average_ranks(absolute: np.ndarray) -> np.ndarray:
    """Average ranks of the non-zero entries of each column of a small dense ``|Δ|`` (zeros → 0).

    O(n²) per column; meant for the ≤ 13-pair permutation case only.
    """
    nonzero = absolute > 0
    a = absolute[:, None, :]
    b = absolute[None, :, :]
    both = nonzero[:, None, :] & nonzero[None, :, :]
    below = np.sum((b < a) & both, axis=1)
    tied = np.sum((b == a) & both, axis=1)
    return np.where(nonzero, below + (tied + 1) / 2, 0.0)
