"""Automatic feature labels from top-activating response tokens (no LLM needed).

For each SAE feature, take the responses where its pooled activation is highest and the token
at which each of them peaked; the label is the most frequent of those tokens, e.g.
``"sorry · apolog · unfortunately"``. A person can override any label in the session.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from .encoded import EncodedFeatures


def top_token_ids(enc: EncodedFeatures, *, n_top: int = 30) -> dict[int, list[tuple[int, float]]]:
    """For each active feature, ``[(token_id, value), ...]`` of its ``n_top`` strongest responses."""
    feats, vals, toks = [], [], []
    for side in (enc.chosen, enc.rejected):
        coo = side.values.tocoo()
        feats.append(coo.col)
        vals.append(coo.data)
        # tocoo keeps CSR storage order, so top_token stays aligned with the data.
        toks.append(side.top_token)
    f = np.concatenate(feats)
    v = np.concatenate(vals)
    t = np.concatenate(toks)
    order = np.lexsort((-v, f))
    f, v, t = f[order], v[order], t[order]
    starts = np.flatnonzero(np.r_[True, f[1:] != f[:-1]])
    ends = np.r_[starts[1:], len(f)]
    out: dict[int, list[tuple[int, float]]] = {}
    for s, e in zip(starts, ends, strict=True):
        e = min(e, s + n_top)
        out[int(f[s])] = list(zip(t[s:e].tolist(), v[s:e].tolist(), strict=True))
    return out


def auto_labels(
    enc: EncodedFeatures,
    decode: Callable[[Sequence[int]], list[str]],
    *,
    n_top: int = 30,
    n_words: int = 3,
) -> dict[int, str]:
    """Label every active feature with its most frequent peak tokens, most frequent first."""
    tops = top_token_ids(enc, n_top=n_top)
    vocab = sorted({tok for pairs in tops.values() for tok, _ in pairs})
    text = dict(zip(vocab, decode(vocab), strict=True))
    labels = {}
    for feat, pairs in tops.items():
        counts = Counter(_clean(text[tok]) for tok, _ in pairs)
        counts.pop("", None)
        words = [w for w, _ in counts.most_common(n_words)]
        labels[feat] = " · ".join(words) if words else "(whitespace)"
    return labels


def _clean(token: str) -> str:
    s = token.strip()
    if not s:
        return "⏎" if "\n" in token else ""
    return s
