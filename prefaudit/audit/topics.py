"""Prompt topics of an audit, and every feature tested within each topic.

Mixed into :class:`~prefaudit.audit.core.AuditCore`, which provides ``data``, ``matrix``,
``feature_ids``, ``labels``, ``auto_labels``, ``encoded``, ``concepts`` and ``lengths``. The
clustering and the heterogeneity test are pure functions of :mod:`prefaudit.features.topics`.

API
---
``session.topics(n_topics="auto")``
    One row per pair (row i = the pair at position i): ``pair_id, topic, topic_label``. The call
    also makes these the session's current topics, which ``test(by="topic")`` uses.
``session.topic_labels()``
    One row per topic: ``topic, label, n_pairs, terms``; ``attrs["rule"]`` says how the number
    of topics was chosen, ``attrs["silhouette"]`` the score of each candidate k.
``session.test(by="topic")`` (= ``session.test_by_topic()``)
    The long table, one row per topic × feature, stored as ``session.results_by_topic``;
    ``session.results`` (the per-feature table the views show) is left as it was.

Example
-------
>>> session.topics().head(2)                       # doctest: +SKIP
   pair_id  topic        topic_label
0        0      0  help, make, insults
>>> long = session.test(by="topic")                # doctest: +SKIP
>>> long[(long.q < 0.05) & (long.q_heterogeneity < 0.05)]   # effects that live in some topics  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .. import ids
from ..errors import ConfigError
from ..features.topics import PromptTopics, cluster_prompts, kruskal_wallis_columns, prompt_text
from ..stats import PAIRED_TEST_COLUMNS, paired_tests
from ..stats.pvalues import benjamini_hochberg

_DEFAULT_TOPICS: tuple[Any, ...] = ("auto", "user", 8, 20)


class TopicsMixin:
    """Topics of the prompts and per-topic tests."""

    data: Any
    labels: dict[str, str]
    auto_labels: dict[str, str]
    encoded: Any
    concepts: list[Any]
    _topics_cache: dict[tuple[Any, ...], PromptTopics] | None = None
    _topics_current: tuple[Any, ...] | None = None
    _grouped_results: dict[str, tuple[tuple[Any, ...], pd.DataFrame]] | None = None

    # ------------------------------------------------------------------ topics
    def topics(
        self,
        n_topics: int | str = "auto",
        *,
        turns: str = "user",
        max_topics: int = 8,
        min_per_topic: int = 20,
    ) -> pd.DataFrame:
        """Cluster the prompts into topics; one row per pair: ``pair_id, topic, topic_label``.

        TF-IDF of the prompt's user turns (``turns="user"``; or ``"last_user"``, ``"all"``) and
        spherical k-means, seeded; ``n_topics="auto"`` takes the k in 2 … min(``max_topics``,
        n // ``min_per_topic``) with the best silhouette (:func:`prefaudit.features.topics.cluster_prompts`
        documents the method). Topics are numbered by size, largest first; a label is the
        topic's three most distinctive words. Cached per settings; the call also makes these
        topics the current ones for ``test(by="topic")``.
        """
        key = (n_topics, turns, int(max_topics), int(min_per_topic))
        topics = self._prompt_topics(key)
        self._topics_current = key
        return pd.DataFrame(
            {
                "pair_id": self.data.df["pair_id"].to_numpy(),
                "topic": topics.assignment,
                "topic_label": [topics.labels[t] for t in topics.assignment],
            }
        )

    def topic_labels(self) -> pd.DataFrame:
        """One row per current topic: ``topic, label, n_pairs, terms`` (top 10 distinctive words).

        ``attrs`` holds ``rule`` (how k was chosen) and ``silhouette`` (k -> score, when auto).
        """
        topics = self._prompt_topics(self._topics_current or _DEFAULT_TOPICS)
        out = pd.DataFrame(
            {
                "topic": np.arange(topics.n_topics),
                "label": topics.labels,
                "n_pairs": topics.sizes,
                "terms": topics.terms,
            }
        )
        out.attrs.update(rule=topics.rule, silhouette=dict(topics.silhouette))
        return out

    def _prompt_topics(self, key: tuple[Any, ...]) -> PromptTopics:
        if self._topics_cache is None:
            self._topics_cache = {}
        if key not in self._topics_cache:
            n_topics, turns, max_topics, min_per_topic = key
            texts = [prompt_text(p, turns) for p in self.data.df["prompt"]]
            self._topics_cache[key] = cluster_prompts(
                texts, n_topics, max_topics=max_topics, min_per_topic=min_per_topic
            )
        return self._topics_cache[key]

    # ------------------------------------------------------------------ tests by group
    def test_by(self, by: str, **kwargs: Any) -> pd.DataFrame:
        """``test(by=...)``: ``"topic"`` (:meth:`test_by_topic`) or a metadata column of ``data.df``.

        A metadata column groups the pairs by its values (missing values form one group, ``"nan"``);
        the long table then has a column named ``by`` (``<by>_group`` if a result column has
        that name) with each group's value; a metadata column called "topic" is shadowed by the
        clustering. Keyword arguments are those of ``test``.
        """
        if by == "topic":
            return self.test_by_topic(**kwargs)
        df = self.data.df
        core = ("pair_id", "prompt", "chosen", "rejected")
        if by in core or by not in df.columns:
            extra = [c for c in df.columns if c not in core]
            raise ConfigError(
                f"by={by!r}: choose 'topic' or a metadata column of the pairs ({', '.join(extra) or 'none'})."
            )
        values = df[by].astype(str).to_numpy()
        names, assignment = np.unique(values, return_inverse=True)
        taken = {*PAIRED_TEST_COLUMNS, "p_heterogeneity", "q_heterogeneity"}
        col = f"{by}_group" if by in taken else by
        table = self._grouped_tests(assignment.ravel(), [str(v) for v in names], col, **kwargs)
        table[col] = names[table[col].to_numpy()].astype(str)
        table = table.drop(columns=[f"{col}_label"])
        self._store_grouped(by, ("column", by), table)
        return table

    def test_by_topic(
        self,
        test: str = "wilcoxon",
        *,
        n_boot: int = 1000,
        seed: int = 0,
        length_control: bool = True,
        alpha: float = ids.ALPHA,
    ) -> pd.DataFrame:
        """Test every feature within each topic; one row per topic × feature.

        Uses the current topics (the last :meth:`topics` call; its defaults if none). Columns:
        ``topic``, ``topic_label``, then those of :func:`prefaudit.stats.paired_tests` run on
        that topic's pairs (``n_pairs``, ``delta_mean``, ``d_z``, ``p`` of ``test``,
        ``split_half_agree`` within the topic, the length-controlled effect, ...), then:

        - ``q``: Benjamini–Hochberg over **all** topic × feature tests (a row without a non-zero
          Δ in its topic is untested: ``p = q = 1``, left out of the count, as in ``paired_tests``);
        - ``p_heterogeneity``: does the feature's Δ differ across topics? Kruskal–Wallis on Δ
          across the topics (one value per feature, repeated on its rows; 1 when Δ never varies);
        - ``q_heterogeneity``: its Benjamini–Hochberg q over the features whose Δ varies.

        *Why Kruskal–Wallis and not Cochran's Q.* Q weighs each topic's mean Δ by 1/SE², and a
        sparse feature that never fires in a topic has SE = 0 there (infinite weight), while
        heavy-tailed Δ make the normal approximation of each mean poor in small topics. The
        rank test needs no variance estimate, is the across-groups sibling of the Wilcoxon
        test behind ``p``, and is computed from the non-zero Δ only. It tests equal
        distributions of Δ, so it reacts mostly to a shift of Δ between topics.

        The table is stored as ``session.results_by_topic``; ``session.results`` is unchanged.
        """
        key = self._topics_current or _DEFAULT_TOPICS
        topics = self._prompt_topics(key)
        table = self._grouped_tests(
            topics.assignment,
            topics.labels,
            "topic",
            test=test,
            n_boot=n_boot,
            seed=seed,
            length_control=length_control,
            alpha=alpha,
        )
        table.attrs.update(rule=topics.rule, n_topics=topics.n_topics)
        self._store_grouped("topic", ("topic", key), table)
        return table

    def _grouped_tests(
        self,
        assignment: np.ndarray,
        group_labels: list[str],
        name: str,
        *,
        test: str = "wilcoxon",
        n_boot: int = 1000,
        seed: int = 0,
        length_control: bool = True,
        alpha: float = ids.ALPHA,
    ) -> pd.DataFrame:
        m = self.matrix
        fids = self.feature_ids
        sources = [ids.parse(f)[0] for f in fids]
        names = [self.labels.get(f) or self.auto_labels.get(f, "") for f in fids]
        lengths = self.lengths() if length_control else None
        chosen, rejected = m.chosen.tocsr(), m.rejected.tocsr()
        self.status = "testing by " + name
        try:
            table = tests_within(
                chosen, rejected, m.delta, assignment, group_labels, name, lengths=lengths, test=test,
                n_boot=n_boot, seed=seed, names=fids, source=sources, labels=names, alpha=alpha,
            )  # fmt: skip
        finally:
            self.status = ""
        table.attrs.update(test=test, by=name)
        return table

    # ------------------------------------------------------------------ stored long tables
    @property
    def results_by_topic(self) -> pd.DataFrame | None:
        """The last ``test(by="topic")`` table, or ``None`` (none yet, or features changed since)."""
        return self.results_by("topic")

    def results_by(self, by: str) -> pd.DataFrame | None:
        """The last ``test(by=by)`` table while it still describes the session's features and groups."""
        entry = (self._grouped_results or {}).get(by)
        if entry is None:
            return None
        state, table = entry
        encoded, concepts, groups = state
        if encoded is not self.encoded or concepts != tuple(c.name for c in self.concepts):
            return None
        if by == "topic" and groups != ("topic", self._topics_current or _DEFAULT_TOPICS):
            return None
        return table

    def _store_grouped(self, by: str, groups: tuple[Any, ...], table: pd.DataFrame) -> None:
        if self._grouped_results is None:
            self._grouped_results = {}
        state = (self.encoded, tuple(c.name for c in self.concepts), groups)
        self._grouped_results[by] = (state, table)


def tests_within(
    chosen: Any,
    rejected: Any,
    delta: Any,
    assignment: np.ndarray,
    group_labels: list[str],
    name: str,
    *,
    lengths: tuple[np.ndarray, np.ndarray] | None,
    **paired_kw: Any,
) -> pd.DataFrame:
    """:func:`paired_tests` within each group of pairs (``assignment``), as one long table.

    Columns ``name, name_label`` then the paired-test columns; ``q`` is BH over every tested
    group × column (untested: q = 1); ``p_heterogeneity`` is Kruskal–Wallis of each column of
    ``delta`` across the groups, ``q_heterogeneity`` its BH over the columns whose Δ varies.
    Used by ``test(by="topic")`` for features and by the report for feature groups.
    """
    tables = []
    for g, label in enumerate(group_labels):
        rows = np.flatnonzero(assignment == g)
        if rows.size == 0:
            continue
        part = paired_tests(
            chosen[rows],
            rejected[rows],
            lengths=None if lengths is None else (lengths[0][rows], lengths[1][rows]),
            **paired_kw,
        )
        part.insert(0, f"{name}_label", label)
        part.insert(0, name, g)
        tables.append(part)
    table = pd.concat(tables, ignore_index=True)
    p = table["p"].to_numpy(dtype=np.float64)
    tested = table["n_nonzero"].to_numpy() > 0
    q = np.where(tested, np.nan, 1.0)
    corrected = tested & np.isfinite(p)
    q[corrected] = benjamini_hochberg(p[corrected])
    table["q"] = q
    _, p_het, varies = kruskal_wallis_columns(delta, assignment)
    q_het = np.where(varies, np.nan, 1.0)
    het_ok = varies & np.isfinite(p_het)
    q_het[het_ok] = benjamini_hochberg(p_het[het_ok])
    table["p_heterogeneity"] = np.tile(p_het, len(tables))
    table["q_heterogeneity"] = np.tile(q_het, len(tables))
    return table
