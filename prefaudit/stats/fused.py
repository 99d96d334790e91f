"""The fused per-column pass over Δ (:mod:`prefaudit.stats.kernels`), run in threads, per group of pairs.

:func:`column_pass` hands the compiled kernel batches of columns from a few Python threads (the
kernel releases the GIL; each column is computed by one thread, so results do not depend on the
number of threads or the batching) and turns its raw outputs into per-group arrays:
:class:`ColumnPass`. :func:`group_weights` draws the resampling weights of every group exactly
as :func:`~prefaudit.stats.paired_tests` draws them for that group's pairs alone, and places
them in the rows of the group's pairs, so the kernel indexes them by the global pair.

>>> import numpy as np, scipy.sparse as sp
>>> from prefaudit.stats.resampling import resampling_weights
>>> delta = sp.csc_array(np.array([[1.0, 0.0], [-2.0, 0.0], [3.0, 0.0]]))
>>> w = resampling_weights(3, n_boot=10, boot_rng=np.random.default_rng(0), n_splits=0, split_rng=None)
>>> out = column_pass(delta, w, n_boot=10, n_splits=0, alpha=0.1)
>>> out.sums[0].tolist(), out.ranks(0).w_plus.tolist()
([2.0, 0.0], [4.0, 0.0])
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from prefaudit.stats import kernels
from prefaudit.stats.products import _THREADS as DEFAULT_THREADS
from prefaudit.stats.ranks import SignedRanks
from prefaudit.stats.resampling import _interpolate, _virtual_index, resampling_weights

# Column batches per thread: enough that threads finish together, few enough to amortise a call.
_BATCHES_PER_THREAD = 8


@dataclass(frozen=True)
class ColumnPass:
    """Per-group, per-column results of :func:`column_pass`; arrays are (groups × features)."""

    n_nonzero: np.ndarray  # int64
    sums: np.ndarray  # Σ Δ over the group's pairs
    centred_ss: np.ndarray  # Σ (Δ − mean)², zeros included
    cross: np.ndarray  # Σ Δ·xc (0 without a regressor)
    rank_values: np.ndarray  # (4, groups, features): positives, W⁺, tie term, has ties
    ci_low: np.ndarray
    ci_high: np.ndarray
    split_half_agree: np.ndarray

    def ranks(self, g: int) -> SignedRanks:
        """Group ``g``'s signed-rank summaries."""
        r = self.rank_values[:, g]
        return SignedRanks(self.n_nonzero[g], r[0].astype(np.int64), r[1], r[2], r[3] > 0)


def _batches(k: np.ndarray, columns: np.ndarray, n_batches: int) -> list[np.ndarray]:
    """Consecutive runs of ``columns`` with about equal non-zero Δ each (plus a fixed cost per column)."""
    cost = np.cumsum(k[columns] + 16)
    cuts = np.searchsorted(cost, np.linspace(0, cost[-1], n_batches + 1)[1:-1], side="right")
    return [b for b in np.split(columns, cuts) if b.size]


def column_pass(
    delta: sp.csc_array,
    weights: np.ndarray,
    *,
    n_boot: int,
    n_splits: int,
    alpha: float,
    group_of_row: np.ndarray | None = None,
    group_sizes: np.ndarray | None = None,
    xc: np.ndarray | None = None,
    threads: int | None = None,
) -> ColumnPass:
    """Run the fused kernel over every column of ``delta`` with a non-zero Δ.

    Parameters
    ----------
    delta : scipy.sparse.csc_array
        Canonical (pairs × features) Δ.
    weights : numpy.ndarray, (n_pairs × (n_boot + 2·n_splits)) unsigned ints
        Row i: pair i's bootstrap counts, then its split-half memberships (within its group).
    n_boot, n_splits, alpha : as for :func:`~prefaudit.stats.paired_tests` (n_splits = 0 for
        no splits; groups of fewer than 2 pairs get NaN agreement).
    group_of_row, group_sizes : optional
        The group (0 … G − 1) of every pair and the pairs per group; default one group.
    xc : numpy.ndarray, optional
        A per-pair regressor centred within its group, for Σ Δ·xc.
    threads : int, optional
        Python threads sharing the columns (default one per usable CPU, up to 4).
    """
    n_pairs, n_features = delta.shape
    if group_of_row is None:
        group_of_row, group_sizes = np.zeros(n_pairs, np.int64), np.array([n_pairs], np.int64)
    group_of_row = np.ascontiguousarray(group_of_row, dtype=np.int64)
    group_sizes = np.asarray(group_sizes, dtype=np.int64)
    n_groups = group_sizes.size
    indptr = delta.indptr.astype(np.int64)
    k = np.diff(indptr)
    columns = np.flatnonzero(k).astype(np.int64)
    moments = np.zeros((4, n_groups, n_features))
    rank_values = np.zeros((4, n_groups, n_features))
    tails = np.zeros((n_groups, n_features, 4), np.float32)
    agree = np.full((n_groups, n_features), np.nan)
    picks = np.zeros(4, np.int64)
    if n_boot:
        (below_low, t_low), (below_high, t_high) = (
            _virtual_index(n_boot, alpha / 2),
            _virtual_index(n_boot, 1 - alpha / 2),
        )
        last = n_boot - 1
        picks[:] = [below_low, min(below_low + 1, last), below_high, min(below_high + 1, last)]
    if weights.shape[1] != n_boot + 2 * n_splits:
        raise ValueError(f"weights have {weights.shape[1]} columns, not n_boot + 2·n_splits")
    regressor = np.zeros(0) if xc is None else np.ascontiguousarray(xc, dtype=np.float64)
    weights = np.ascontiguousarray(weights)

    def run(batch: np.ndarray) -> None:
        kernels.fused_columns(
            indptr,
            delta.indices,
            delta.data,
            batch,
            group_of_row,
            group_sizes,
            weights,
            n_boot,
            n_splits,
            picks,
            regressor,
            moments,
            rank_values,
            tails,
            agree,
        )

    if columns.size:
        n_threads = max(1, DEFAULT_THREADS if threads is None else int(threads))
        batches = _batches(k, columns, n_threads * _BATCHES_PER_THREAD if n_threads > 1 else 1)
        if n_threads == 1 or len(batches) == 1:
            for batch in batches:
                run(batch)
        else:
            with ThreadPoolExecutor(n_threads) as pool:
                list(pool.map(run, batches))
    n_nonzero = moments[0].astype(np.int64)
    tested = n_nonzero > 0
    sizes = group_sizes[:, None].astype(np.float64)
    if n_boot:
        low = np.where(tested, _interpolate(tails[..., :2].reshape(-1, 2), t_low).reshape(tested.shape), 0.0)
        high = np.where(
            tested, _interpolate(tails[..., 2:].reshape(-1, 2), t_high).reshape(tested.shape), 0.0
        )
        low, high = low / sizes, high / sizes
    else:
        low, high = np.full(tested.shape, np.nan), np.full(tested.shape, np.nan)
    # Untested cells: no half with a non-zero sign; NaN as paired_tests documents.
    agree = np.where(tested, agree, np.nan)
    if not n_splits:
        agree[:] = np.nan
    agree[group_sizes < 2] = np.nan
    return ColumnPass(n_nonzero, moments[1], moments[2], moments[3], rank_values, low, high, agree)


def group_weights(
    group_rows: list[np.ndarray],
    n_pairs: int,
    *,
    n_boot: int,
    n_splits: int,
    seeds: np.random.SeedSequence,
) -> np.ndarray:
    """Every group's resampling weights, drawn as paired_tests draws them for the group alone.

    Group g (pairs ``group_rows[g]``, in order) gets :func:`resampling_weights` of its size from
    fresh generators of ``seeds`` (the bootstrap's and the splits', see paired_tests' Notes; no
    splits for a group of fewer than two pairs); row i of the result holds pair i's weights.
    """
    width = n_boot + 2 * n_splits
    out = np.zeros((n_pairs, width), np.uint8)
    for rows in group_rows:
        if rows.size == 0:
            continue
        splits = n_splits if rows.size >= 2 else 0
        w = resampling_weights(
            rows.size,
            n_boot=n_boot,
            boot_rng=np.random.default_rng(seeds),
            n_splits=splits,
            split_rng=np.random.default_rng(np.random.SeedSequence(seeds.entropy, spawn_key=(1,))),
        )
        if w.dtype.itemsize > out.dtype.itemsize:
            out = out.astype(w.dtype)
        out[rows, : w.shape[1]] = w
    return out
