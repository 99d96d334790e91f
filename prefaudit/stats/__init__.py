"""Paired statistics of preference data: per-feature tests of chosen − rejected activations.

>>> import numpy as np
>>> from prefaudit.stats import paired_tests
>>> rng = np.random.default_rng(0)
>>> chosen, rejected = rng.exponential(size=(100, 4)), rng.exponential(size=(100, 4))
>>> list(paired_tests(chosen, rejected, n_boot=100).columns[:4])
['feature', 'source', 'label', 'n_pairs']

Modules: :mod:`~prefaudit.stats.paired` (the table), :mod:`~prefaudit.stats.grouped` (the table
within each group of pairs, in one pass), :mod:`~prefaudit.stats.kernels` and
:mod:`~prefaudit.stats.fused` (the compiled per-column pass and its threads),
:mod:`~prefaudit.stats.effects` (summaries → table), :mod:`~prefaudit.stats.ranks` (blockwise
signed ranks), :mod:`~prefaudit.stats.pvalues` (scipy-equal p-values, Benjamini–Hochberg),
:mod:`~prefaudit.stats.resampling` (bootstrap CI, split halves),
:mod:`~prefaudit.stats.products` (sparse Δ columns times dense per-pair weights, threaded),
:mod:`~prefaudit.stats.regression` (length control), :mod:`~prefaudit.stats.moments` and
:mod:`~prefaudit.stats.inputs` (validation and the canonical sparse form).
"""

from __future__ import annotations

from prefaudit.stats.grouped import paired_tests_grouped
from prefaudit.stats.paired import ENGINES, PAIRED_TEST_COLUMNS, PAIRED_TESTS, paired_tests
from prefaudit.stats.pvalues import benjamini_hochberg

__all__ = [
    "ENGINES",
    "PAIRED_TESTS",
    "PAIRED_TEST_COLUMNS",
    "benjamini_hochberg",
    "paired_tests",
    "paired_tests_grouped",
]
