"""The top of a ranking without sorting every pair (the drill-down's pages at 260k pairs).

>>> import numpy as np
>>> top_k_order(np.array([0.5, 2.0, 2.0, -1.0]), 2).tolist()
[1, 2]
"""

from __future__ import annotations

import numpy as np


def top_k_order(key: np.ndarray, k: int) -> np.ndarray:
    """``np.argsort(-key, kind="stable")[:k]`` in O(n + k log k): largest first, ties by position.

    ``np.partition`` finds the k-th value; the values beyond it and the first of its ties make the k.
    """
    k = min(int(k), len(key))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k >= len(key) // 2 or np.isnan(key).any():  # NaN order or most rows wanted: the full sort
        return np.argsort(-key, kind="stable")[:k]
    neg = -key
    kth = np.partition(neg, k - 1)[k - 1]
    better = np.flatnonzero(neg < kth)
    cand = np.concatenate([better, np.flatnonzero(neg == kth)[: k - len(better)]])
    return cand[np.lexsort((cand, neg[cand]))]
