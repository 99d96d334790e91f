"""Prompt topics: cluster the prompts of a preference set, and test effects across the clusters.

Pure computation (numpy, scipy, scikit-learn; no model, no session). The audit's
:class:`~prefaudit.audit.topics.Topics` calls it; ``docs/DESIGN.md`` ("From features to
concepts") says why: an effect can live in one kind of prompt only.

Method
------
1. **Text** — what the person asked: the *user* turns of the prompt joined (``turns="user"``).
   The last user turn alone is often "why?" or "yes" in multi-turn data such as HH-RLHF, and the
   assistant turns are model text that would cluster the prompts by the old model's style.
2. **Vectors** — TF-IDF (:class:`~sklearn.feature_extraction.text.TfidfVectorizer`: English stop
   words removed, words of two or more letters, sublinear tf, terms in at least 2 prompts and at
   most 80 % of them), rows L2-normalised: Euclidean k-means on them is cosine (spherical)
   k-means. No LSA step: on short prompts it gave no better clusters on the HH slice and cost
   more than the clustering (a randomized SVD; the sparse rows have ~10 non-zeros each).
3. **Clusters** — :class:`~sklearn.cluster.KMeans` (``n_init=4``, ``random_state=0``), run with
   one BLAS/OpenMP thread (:func:`threadpoolctl.threadpool_limits`): these problems are small,
   and thread barriers on a busy machine made them 5-10× slower.
4. **How many** — ``n_topics="auto"``: the k in 2 … min(``max_topics`` = 8, n // ``min_per_topic``
   = n // 20) with the largest silhouette (cosine, on a seeded sample of at most 2,000 prompts);
   the smaller k on a tie. Clearly separated prompts get their number of topics; real prompts
   (silhouette ≈ 0.02 on HH-RLHF, rising slowly with k) get the cap, which keeps every topic big
   enough to test. Fewer than ``2 * min_per_topic`` prompts, or no term that occurs twice: a
   single topic. An int fixes k.
5. **Order and labels** — topics are numbered by size (largest first; ties: the one whose first
   prompt comes first), so the numbering does not depend on k-means' arbitrary cluster ids. A
   topic's label is its ``n_label_terms`` most distinctive terms: largest mean TF-IDF inside
   the topic minus mean TF-IDF in the other prompts.

Everything is seeded: the same prompts give the same topics, labels and order.

Example
-------
>>> import random
>>> rng = random.Random(0)
>>> bake, code = "bread yeast flour oven dough bake".split(), "python code bug error debug function".split()
>>> texts = [" ".join(rng.sample(words, 3)) for words in [bake] * 30 + [code] * 30]
>>> t = cluster_prompts(texts)
>>> t.n_topics, t.sizes.tolist(), len(set(t.assignment[:30])), len(set(t.assignment[30:]))
(2, [30, 30], 1, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import stats

from ..errors import ConfigError, MissingDependencyError

#: Which turns of a chat prompt make the text that is clustered.
TURNS = ("user", "last_user", "all")

_SILHOUETTE_SAMPLE = 2000


@dataclass
class PromptTopics:
    """Topics of a list of prompts (see the module docstring for the method).

    Attributes
    ----------
    assignment : ndarray[int], shape (n_prompts,) — the topic of each prompt, 0 … n_topics − 1
    labels : list[str] — one per topic, its most distinctive terms joined by ", "
    terms : list[list[str]] — one per topic, its 10 most distinctive terms, best first
    sizes : ndarray[int], shape (n_topics,) — prompts per topic (non-increasing)
    rule : str — how the number of topics was chosen, in words
    silhouette : dict[int, float] — silhouette per candidate k (empty unless ``"auto"``)
    """

    assignment: np.ndarray
    labels: list[str]
    terms: list[list[str]]
    sizes: np.ndarray
    rule: str
    silhouette: dict[int, float] = field(default_factory=dict)

    @property
    def n_topics(self) -> int:
        return len(self.labels)


def prompt_text(prompt: Any, turns: str = "user") -> str:
    """The text of one prompt that is clustered: a string as is, or chosen turns of a chat.

    >>> chat = [{"role": "user", "content": "pens?"}, {"role": "assistant", "content": "Yes."},
    ...         {"role": "user", "content": "which ones"}]
    >>> prompt_text(chat), prompt_text(chat, "last_user"), prompt_text(chat, "all")
    ('pens?\\nwhich ones', 'which ones', 'pens?\\nYes.\\nwhich ones')
    """
    if turns not in TURNS:
        raise ConfigError(f"turns={turns!r}; choose one of {', '.join(TURNS)}.")
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    messages = [m for m in prompt if isinstance(m, dict)]
    if turns == "all":
        return "\n".join(str(m.get("content", "")) for m in messages)
    users = [str(m.get("content", "")) for m in messages if m.get("role") == "user"]
    if turns == "last_user":
        return users[-1] if users else ""
    return "\n".join(users)


def _sklearn() -> Any:
    try:
        import sklearn  # noqa: F401
    except ImportError as err:  # pragma: no cover - scikit-learn is a dependency
        raise MissingDependencyError(
            "Prompt topics need scikit-learn: pip install 'scikit-learn>=1.4'"
        ) from err
    from sklearn import cluster, feature_extraction, metrics

    return cluster, feature_extraction.text, metrics


def _single(n: int, rule: str) -> PromptTopics:
    return PromptTopics(np.zeros(n, dtype=np.int64), ["all prompts"], [[]], np.array([n]), rule)


def cluster_prompts(
    texts: Sequence[str],
    n_topics: int | str = "auto",
    *,
    max_topics: int = 8,
    min_per_topic: int = 20,
    n_label_terms: int = 3,
) -> PromptTopics:
    """Cluster ``texts`` into topics (TF-IDF → spherical k-means); see the module docstring.

    Parameters
    ----------
    texts : sequence of str — one per prompt (:func:`prompt_text`)
    n_topics : int or "auto" — a fixed k, or the silhouette rule over 2 … ``max_topics``
    max_topics, min_per_topic : int — the auto rule tries k ≤ min(max_topics, n // min_per_topic)
    n_label_terms : int — terms in each label
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _cluster_prompts(
            list(texts), n_topics, int(max_topics), int(min_per_topic), int(n_label_terms)
        )


def _cluster_prompts(
    texts: list[str], n_topics: int | str, max_topics: int, min_per_topic: int, n_label_terms: int
) -> PromptTopics:
    cluster, text, metrics = _sklearn()
    n = len(texts)
    auto = n_topics == "auto"
    if not auto and (isinstance(n_topics, bool) or not isinstance(n_topics, (int, np.integer))):
        raise ConfigError(f"n_topics must be a positive int or 'auto'; got {n_topics!r}.")
    if not auto and not 1 <= int(n_topics) <= max(n, 1):
        raise ConfigError(f"n_topics={n_topics} must be between 1 and the number of prompts ({n}).")
    if n == 0:
        raise ConfigError("No prompts to cluster.")
    k_max = min(max_topics, n // max(min_per_topic, 1))
    if (auto and k_max < 2) or (not auto and int(n_topics) == 1):
        return _single(n, "one topic: too few prompts for two" if auto else "fixed: 1 topic")
    vectorizer = text.TfidfVectorizer(
        lowercase=True,
        stop_words="english",
        token_pattern=r"(?u)\b[^\W\d_]{2,}\b",
        sublinear_tf=True,
        min_df=2 if n >= 4 else 1,
        max_df=0.8 if n >= 10 else 1.0,
        max_features=20_000,
        dtype=np.float64,
    )
    try:
        tfidf = vectorizer.fit_transform([str(s) for s in texts]).tocsr()
    except ValueError:  # no term survives (empty or stop-word-only prompts)
        return _single(n, "one topic: the prompts share no informative words")
    vocab = vectorizer.get_feature_names_out()
    x = tfidf  # rows are L2-normalised (TfidfVectorizer's norm="l2")

    def fit(k: int, rows: np.ndarray | None = None) -> np.ndarray:
        data = x if rows is None else x[rows]
        return cluster.KMeans(n_clusters=k, n_init=4, random_state=0).fit_predict(data)

    scores: dict[int, float] = {}
    if auto:
        # k is chosen on a seeded sample (all prompts up to 2,000): its cosine distances are
        # computed once and reused for every candidate k; the chosen k is then fitted on all.
        rows = (
            np.sort(np.random.default_rng(0).choice(n, _SILHOUETTE_SAMPLE, replace=False))
            if n > _SILHOUETTE_SAMPLE
            else None
        )
        xs = x if rows is None else x[rows]
        dist = np.clip(1.0 - (xs @ xs.T).toarray(), 0.0, 2.0)
        np.fill_diagonal(dist, 0.0)
        for k in range(2, min(k_max, _n_distinct_rows(xs)) + 1):
            labels = fit(k, rows)
            if np.unique(labels).size < 2:
                continue
            scores[k] = float(metrics.silhouette_score(dist, labels, metric="precomputed"))
        if not scores:
            return _single(n, "one topic: the prompts do not separate")
        best = max(scores, key=lambda k: (scores[k], -k))
        raw = fit(best)
        where = "all prompts" if rows is None else f"a seeded sample of {_SILHOUETTE_SAMPLE} prompts"
        rule = f"silhouette (cosine, {where}) over k = 2…{max(scores)}: k = {best} ({scores[best]:.3f})"
    else:
        k = min(int(n_topics), _n_distinct_rows(x))
        raw = fit(k)
        rule = f"fixed: {k} topics" + (
            "" if k == int(n_topics) else f" (asked {n_topics}; the distinct prompts)"
        )
    assignment, sizes = _by_size(raw)
    terms = _distinctive_terms(tfidf, assignment, vocab, 10)
    labels = [", ".join(t[:n_label_terms]) or "(no distinctive words)" for t in terms]
    return PromptTopics(assignment, labels, terms, sizes, rule, scores)


def _n_distinct_rows(x: sp.csr_matrix) -> int:
    """Distinct rows of a sparse matrix (k-means cannot make more clusters than that)."""
    x = sp.csr_matrix(x)
    keys = {
        (x.indices[a:b].tobytes(), np.round(x.data[a:b], 12).tobytes())
        for a, b in zip(x.indptr[:-1], x.indptr[1:], strict=True)
    }
    return len(keys)


def _by_size(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber clusters 0 … k − 1 by size (largest first), ties by first appearance."""
    ids, first, counts = np.unique(raw, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    new = np.empty(ids.size, dtype=np.int64)
    new[order] = np.arange(ids.size)
    return new[np.searchsorted(ids, raw)], counts[order].astype(np.int64)


def _distinctive_terms(
    tfidf: sp.csr_matrix, assignment: np.ndarray, vocab: np.ndarray, k: int
) -> list[list[str]]:
    n = tfidf.shape[0]
    n_topics = int(assignment.max()) + 1
    onehot = sp.csr_matrix((np.ones(n), (assignment, np.arange(n))), shape=(n_topics, n))
    sums = np.asarray((onehot @ tfidf).todense())
    sizes = np.bincount(assignment, minlength=n_topics).astype(np.float64)
    total = sums.sum(axis=0)
    out = []
    for t in range(n_topics):
        inside = sums[t] / sizes[t]
        rest = n - sizes[t]
        outside = (total - sums[t]) / rest if rest > 0 else np.zeros_like(inside)
        score = inside - outside
        # Stable sort on −score: equal scores keep the vocabulary's alphabetical order.
        order = np.argsort(-score, kind="stable")
        out.append([str(vocab[j]) for j in order[:k] if score[j] > 0])
    return out


# ---------------------------------------------------------------------------- heterogeneity


def kruskal_wallis_columns(delta: Any, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kruskal–Wallis H, p and ``varies`` of every column of ``delta`` across ``groups``.

    Equals ``scipy.stats.kruskal(*[delta[groups == g, f] for g in present])`` per column ``f``
    (tie-corrected H, χ² with (number of groups present − 1) degrees of freedom). A column whose
    values are all equal (e.g. never active) has no evidence of a difference: H = 0, p = 1
    (scipy returns NaN there), and ``varies`` is False for it. Fewer than two groups: NaN.

    The zeros of a column form one tie block between its negative and positive values, so only
    the non-zero entries are sorted (work grows with the non-zeros, not pairs × features).

    >>> import numpy as np
    >>> d = np.array([[0.0], [1.0], [2.0], [-1.0], [0.0], [0.0]])
    >>> h, p, varies = kruskal_wallis_columns(d, np.array([0, 0, 0, 1, 1, 1]))
    >>> from scipy import stats
    >>> bool(np.isclose(p[0], stats.kruskal(d[:3, 0], d[3:, 0]).pvalue))
    True
    """
    groups = np.asarray(groups)
    _, g = np.unique(groups, return_inverse=True)
    g = g.ravel().astype(np.int64)
    d = sp.csc_matrix(delta, dtype=np.float64)
    if d.shape[0] != g.size:
        raise ConfigError(f"groups has {g.size} entries but delta has {d.shape[0]} rows.")
    d = d.copy()
    d.sum_duplicates()
    d.eliminate_zeros()
    n, p = d.shape
    n_groups = int(g.max()) + 1 if n else 0
    if n_groups < 2:
        return np.full(p, np.nan), np.full(p, np.nan), np.zeros(p, dtype=bool)
    counts = np.bincount(g, minlength=n_groups).astype(np.float64)
    nnz = np.diff(d.indptr)
    col = np.repeat(np.arange(p), nnz)
    # Sort each column's values in place of one lexsort over all of them: columns are contiguous
    # in CSC, and per-column argsorts were 20x faster than np.lexsort((data, col)) at 4.5M entries.
    order = np.arange(d.nnz)
    for j in np.flatnonzero(nnz > 1):
        a, b = d.indptr[j], d.indptr[j + 1]
        order[a:b] = a + np.argsort(d.data[a:b])  # any order of ties: their ranks are averaged
    v, c, rows = d.data[order], col[order], d.indices[order]
    # Tie runs of equal values within a column: each entry gets its run's average position.
    start = np.r_[True, (c[1:] != c[:-1]) | (v[1:] != v[:-1])] if v.size else np.zeros(0, bool)
    run = np.cumsum(start) - 1
    run_first = np.flatnonzero(start)
    run_size = np.diff(np.r_[run_first, v.size])
    pos = np.arange(v.size) - d.indptr[c]  # 0-based position among the column's non-zeros
    first_pos = pos[run_first]
    avg = (first_pos + (run_size - 1) / 2.0)[run] + 1.0  # 1-based rank among non-zeros
    zeros = n - nnz
    n_neg = np.bincount(c[v < 0], minlength=p)
    rank = avg + np.where(v > 0, zeros[c], 0)  # negatives rank below the zero block
    zero_rank = n_neg + (zeros + 1) / 2.0
    # Rank sums per (group, column): non-zeros summed, plus the group's zeros at the zero rank.
    gc = g[rows] * p + c
    rank_sum = np.bincount(gc, rank, minlength=n_groups * p).reshape(n_groups, p)
    nz_count = np.bincount(gc, minlength=n_groups * p).reshape(n_groups, p)
    rank_sum += (counts[:, None] - nz_count) * zero_rank[None, :]
    mean_rank = rank_sum / counts[:, None]
    h = 12.0 / (n * (n + 1.0)) * (counts[:, None] * (mean_rank - (n + 1) / 2.0) ** 2).sum(axis=0)
    run_ties = np.bincount(c[run_first], run_size.astype(np.float64) ** 3 - run_size, minlength=p)
    ties = run_ties + zeros.astype(np.float64) ** 3 - zeros
    correction = 1.0 - ties / (float(n) ** 3 - n)
    constant = correction <= 1e-12
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.where(constant, 0.0, h / np.where(constant, 1.0, correction))
    pval = np.where(constant, 1.0, stats.chi2.sf(h, n_groups - 1))
    return h, pval, ~constant
