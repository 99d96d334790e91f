"""Paired tests within each group of pairs (topics, metadata values), all groups in one pass.

:func:`paired_tests_grouped` returns, for every group g, the rows that
``paired_tests(chosen[rows_g], rejected[rows_g], ...)`` returns — the same resamples (each group's
bootstrap and splits drawn from ``seed`` as if it were tested alone), the same table — but with
the numba engine the per-column passes of all groups run as one pass over Δ
(:func:`~prefaudit.stats.fused.column_pass` with a group per pair), instead of one call, one
copy of the rows and one resampling setup per group.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> chosen, rejected = rng.exponential(size=(60, 2)), rng.exponential(size=(60, 2))
>>> long = paired_tests_grouped(chosen, rejected, np.repeat([0, 1], 30), n_boot=50)
>>> long[["group", "feature", "n_pairs"]].values.tolist()
[[0, '0', 30], [0, '1', 30], [1, '0', 30], [1, '1', 30]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from prefaudit.errors import ConfigError
from prefaudit.stats import kernels
from prefaudit.stats.effects import Summaries, build_table, column_eps, declared_dtype
from prefaudit.stats.fused import column_pass, group_weights
from prefaudit.stats.inputs import as_canonical_csc, length_difference, per_feature_strings
from prefaudit.stats.moments import centred_sum_of_squares, column_means
from prefaudit.stats.paired import check_options, paired_tests, resolve_engine


def _assignment(assignment: Any, n_pairs: int, n_groups: int | None) -> tuple[np.ndarray, int]:
    g = np.asarray(assignment)
    if g.ndim != 1 or g.size != n_pairs:
        raise ConfigError(f"assignment must be 1-D with one group per pair ({n_pairs}); got shape {g.shape}")
    if g.size and (g.dtype.kind not in "iu" or g.min() < 0):
        raise ConfigError("assignment must hold non-negative integer group numbers (0, 1, …)")
    found = int(g.max()) + 1 if g.size else 0
    if n_groups is not None and found > n_groups:
        raise ConfigError(f"assignment has group {found - 1} but n_groups is {n_groups}")
    return g.astype(np.int64), found if n_groups is None else int(n_groups)


def paired_tests_grouped(
    chosen: Any,
    rejected: Any,
    assignment: Any,
    *,
    n_groups: int | None = None,
    test: str = "wilcoxon",
    lengths: Any = None,
    n_boot: int = 1000,
    n_splits: int = 20,
    seed: int | None = 0,
    names: Sequence[str] | None = None,
    source: str | Sequence[str] = "sae",
    labels: Sequence[str] | None = None,
    alpha: float = 0.05,
    engine: str | None = None,
) -> pd.DataFrame:
    """:func:`~prefaudit.stats.paired_tests` within each group of pairs, as one long table.

    Parameters
    ----------
    chosen, rejected, test, lengths, n_boot, n_splits, seed, names, source, labels, alpha, engine
        As for :func:`~prefaudit.stats.paired_tests` (over all pairs; ``lengths`` per pair).
    assignment : 1-D array of int, one per pair
        The group (0, 1, …) of each pair.
    n_groups : int, optional
        Groups 0 … n_groups − 1 (default: the largest in ``assignment`` + 1).

    Returns
    -------
    pandas.DataFrame
        Column ``group`` then :data:`~prefaudit.stats.PAIRED_TEST_COLUMNS`; group-major (group 0's
        features in column order, then group 1's, …); groups without pairs are left out. Group
        g's rows equal ``paired_tests(chosen[rows], rejected[rows], lengths=lengths[rows], …)``
        for ``rows = flatnonzero(assignment == g)``, its ``q`` included (BH within the group).
    """
    n_boot, n_splits, seeds = check_options(test, n_boot, n_splits, alpha, seed)
    dtype = np.result_type(declared_dtype(chosen), declared_dtype(rejected))
    c = as_canonical_csc(chosen, "chosen")
    r = as_canonical_csc(rejected, "rejected")
    if c.shape != r.shape:
        raise ConfigError(f"chosen has shape {c.shape} but rejected has shape {r.shape}; both must match")
    n_pairs, n_features = c.shape
    g, n_groups = _assignment(assignment, n_pairs, n_groups)
    feature = per_feature_strings(names, n_features, "names", None)
    label = per_feature_strings(labels, n_features, "labels", "")
    sources = per_feature_strings(source, n_features, "source", "sae")
    dlen = length_difference(lengths, n_pairs)
    order = np.argsort(g, kind="stable")
    group_rows = np.split(order, np.cumsum(np.bincount(g, minlength=n_groups))[:-1])
    options = {"test": test, "n_boot": n_boot, "n_splits": n_splits, "seed": seed, "alpha": alpha}
    tables = []
    if resolve_engine(engine) == "numpy":
        for k, rows in enumerate(group_rows):
            if rows.size:
                part = paired_tests(
                    c[rows],
                    r[rows],
                    lengths=None if dlen is None else dlen[rows],
                    names=feature,
                    source=sources,
                    labels=label,
                    engine="numpy",
                    **options,
                )
                tables.append(part.assign(group=k))
        return _long(tables)

    sizes = np.array([rows.size for rows in group_rows], np.int64)
    weights = group_weights(group_rows, n_pairs, n_boot=n_boot, n_splits=n_splits, seeds=seeds)
    xc = None
    if dlen is not None:
        xc = np.empty(n_pairs)
        for rows in group_rows:  # centred within the group, as its own length control does
            xc[rows] = dlen[rows] - np.mean(dlen[rows]) if rows.size else 0.0
    delta = sp.csc_array(c - r)
    delta.sum_duplicates()
    delta.eliminate_zeros()
    out = column_pass(
        delta,
        weights,
        n_boot=n_boot,
        n_splits=n_splits,
        alpha=float(alpha),
        group_of_row=g,
        group_sizes=sizes,
        xc=xc,
    )
    side = np.zeros((2, 3, n_groups, n_features))
    for s, m in enumerate((c, r)):
        kernels.grouped_column_summaries(m.indptr, m.indices, m.data, g, n_groups, side[s])
    both = np.zeros((n_groups, n_features), np.int64)
    kernels.grouped_overlap(c.indptr, c.indices, r.indptr, r.indices, g, both)
    counts = side[:, 0].astype(np.int64)
    for k, rows in enumerate(group_rows):
        if rows.size == 0:
            continue
        # The moments as paired_tests sums them (numpy's order), so a group's row equals
        # paired_tests on that group's pairs exactly, not only to rounding.
        sub = sp.csc_array(delta[rows])
        delta_mean = column_means(sub)
        summaries = Summaries(
            n_pairs=int(rows.size),
            n_active=counts[0, k] + counts[1, k] - both[k],
            n_chosen=counts[0, k],
            n_rejected=counts[1, k],
            sum_chosen=side[0, 1, k],
            sum_rejected=side[1, 1, k],
            delta_mean=delta_mean,
            centred_ss=centred_sum_of_squares(sub, delta_mean),
            ranks=out.ranks(k),
            ci_low=out.ci_low[k],
            ci_high=out.ci_high[k],
            split_half_agree=out.split_half_agree[k],
            scale=np.maximum(side[0, 2, k], side[1, 2, k]),
            cross=None if xc is None else out.cross[k],
        )
        table = build_table(
            summaries,
            test=test,
            delta=lambda rows=rows: sp.csc_array(delta[rows]),
            eps_of=lambda columns, rows=rows: column_eps(c[rows], r[rows], columns, dtype),
            dtype=dtype,
            dlen=None if dlen is None else dlen[rows],
            feature=feature,
            sources=sources,
            label=label,
        )
        tables.append(table.assign(group=k))
    return _long(tables)


def _long(tables: list[pd.DataFrame]) -> pd.DataFrame:
    table = pd.concat(tables, ignore_index=True)
    return table[["group", *table.columns[:-1]]]
