"""Prompt topics of an audit, and every feature tested within each topic.

A part owned by :class:`~prefaudit.audit.core.AuditCore` (``session.topics``). The
clustering and the heterogeneity test are pure functions of :mod:`prefaudit.features.topics`.

API
---
``session.topics(n_topics="auto")``
    One row per pair (row i = the pair at position i): ``pair_id, topic, topic_label``. The call
    also makes these the session's current topics, which ``test(by="topic")`` uses.
``session.topics.labels()``
    One row per topic: ``topic, label, n_pairs, terms``; ``attrs["rule"]`` says how the number
    of topics was chosen, ``attrs["silhouette"]`` the score of each candidate k.
``session.test(by="topic")`` (= ``session.topics.test()``)
    The long table, one row per topic × feature, kept as ``session.topics.results("topic")``;
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

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import ids
from ..errors import ConfigError
from ..features.topics import PromptTopics, cluster_prompts, kruskal_wallis_columns, prompt_text
from ..stats import PAIRED_TEST_COLUMNS, paired_tests_grouped
from ..stats.pvalues import benjamini_hochberg
from .versions import Memo

if TYPE_CHECKING:
    from .core import AuditCore

#: The settings of the current topics until ``session.topics(...)`` chooses others.
DEFAULT_TOPICS: tuple[Any, ...] = ("auto", "user", 8, 20)


class Topics:
    """Topics of the prompts and per-topic tests (``session.topics``; calling it clusters the prompts)."""

    def __init__(self, core: AuditCore) -> None:
        self.core = core
        self.current: tuple[Any, ...] = DEFAULT_TOPICS  # the settings test(by="topic") uses
        self._clusterings = Memo(core.versions, "data")  # settings -> PromptTopics
        self._by_topic = Memo(core.versions, "data", "features", "topics")  # "topic" -> table
        self._by_column = Memo(core.versions, "data", "features")  # column name -> table

    def __call__(
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
        topics = self.clustering(key)
        if key != self.current:
            self.current = key
            self.core.versions.bump("topics")
        return pd.DataFrame(
            {
                "pair_id": self.core.data.df["pair_id"].to_numpy(),
                "topic": topics.assignment,
                "topic_label": [topics.labels[t] for t in topics.assignment],
            }
        )

    def labels(self) -> pd.DataFrame:
        """One row per current topic: ``topic, label, n_pairs, terms`` (top 10 distinctive words).

        ``attrs`` holds ``rule`` (how k was chosen) and ``silhouette`` (k -> score, when auto).
        """
        topics = self.clustering()
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

    def assignment(self) -> np.ndarray:
        """The topic of every pair (row order) under the current topics."""
        return self.clustering().assignment

    def clustering(self, key: tuple[Any, ...] | None = None) -> PromptTopics:
        """The :class:`~prefaudit.features.topics.PromptTopics` of ``key`` (default: the current settings)."""
        key = self.current if key is None else key

        def compute() -> PromptTopics:
            n_topics, turns, max_topics, min_per_topic = key
            texts = [prompt_text(p, turns) for p in self.core.data.df["prompt"]]
            return cluster_prompts(texts, n_topics, max_topics=max_topics, min_per_topic=min_per_topic)

        return self._clusterings.get(key, compute)

    # ------------------------------------------------------------------ the drill-down's topic filter
    def set_filter(self, topic: int | None) -> None:
        """Show only this topic's pairs in the drill-down (``None``: every pair).

        ``topic`` is a topic number of the current topics (:meth:`labels`); the trait
        ``topic_filter`` holds it and :meth:`filtered_positions` is what queries read.
        """
        if topic is None:
            self.core.topic_filter = None
            return
        if isinstance(topic, bool) or not isinstance(topic, (int, np.integer)):
            raise ConfigError(f"topic must be a topic number or None, not {topic!r}.")
        n_topics = self.clustering().n_topics
        if not 0 <= int(topic) < n_topics:
            raise ConfigError(f"Unknown topic {topic!r}: the current topics are 0..{n_topics - 1}.")
        self.core.topic_filter = int(topic)

    def filtered_positions(self) -> np.ndarray:
        """Rows of ``data.df`` the drill-down shows: the topic filter's pairs, else every pair."""
        if self.core.topic_filter is None:
            return np.arange(len(self.core.data))
        return np.flatnonzero(self.clustering().assignment == self.core.topic_filter)

    # ------------------------------------------------------------------ tests by group
    def test(
        self,
        by: str = "topic",
        *,
        test: str = "wilcoxon",
        n_boot: int = 1000,
        seed: int = 0,
        length_control: bool = True,
        alpha: float = ids.ALPHA,
    ) -> pd.DataFrame:
        """Test every feature within each group of pairs; one row per group × feature.

        ``by="topic"`` groups by the current topics (the last call of the part; its defaults if
        none). Columns: ``topic``, ``topic_label``, then those of
        :func:`prefaudit.stats.paired_tests` run on that topic's pairs (``n_pairs``,
        ``delta_mean``, ``d_z``, ``p`` of ``test``, ``split_half_agree`` within the topic, the
        length-controlled effect, ...), then:

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

        ``by`` may instead name a metadata column of ``data.df``: the pairs are grouped by its
        values (missing values form one group, ``"nan"``); the long table then has a column named
        ``by`` (``<by>_group`` if a result column has that name) with each group's value; a
        metadata column called "topic" is shadowed by the clustering.

        The table is kept (:meth:`results`); ``session.results`` is unchanged.
        """
        kw = {"test": test, "n_boot": n_boot, "seed": seed, "length_control": length_control, "alpha": alpha}
        if by == "topic":
            topics = self.clustering()
            table = self._grouped_tests(topics.assignment, topics.labels, "topic", **kw)
            table.attrs.update(rule=topics.rule, n_topics=topics.n_topics)
            self._by_topic.put("topic", table)
            return table
        df = self.core.data.df
        core_cols = ("pair_id", "prompt", "chosen", "rejected")
        if by in core_cols or by not in df.columns:
            extra = [c for c in df.columns if c not in core_cols]
            raise ConfigError(
                f"by={by!r}: choose 'topic' or a metadata column of the pairs ({', '.join(extra) or 'none'})."
            )
        values = df[by].astype(str).to_numpy()
        names, assignment = np.unique(values, return_inverse=True)
        taken = {*PAIRED_TEST_COLUMNS, "p_heterogeneity", "q_heterogeneity"}
        col = f"{by}_group" if by in taken else by
        table = self._grouped_tests(assignment.ravel(), [str(v) for v in names], col, **kw)
        table[col] = names[table[col].to_numpy()].astype(str)
        table = table.drop(columns=[f"{col}_label"])
        self._by_column.put(by, table)
        return table

    def results(self, by: str = "topic") -> pd.DataFrame | None:
        """The last ``test(by=by)`` table while it still describes the session's features and topics."""
        return (self._by_topic if by == "topic" else self._by_column).peek(by)

    def _grouped_tests(
        self, assignment: np.ndarray, group_labels: list[str], name: str, **kw: Any
    ) -> pd.DataFrame:
        core, space = self.core, self.core.space
        m = space.matrix
        fids = space.feature_ids
        sources = [ids.parse(f)[0] for f in fids]
        names = [core.labels.get(f) or core.auto_labels.get(f, "") for f in fids]
        lengths = space.lengths() if kw.pop("length_control") else None
        chosen, rejected = m.chosen.tocsr(), m.rejected.tocsr()
        core.status = "testing by " + name
        try:
            table = tests_within(
                chosen,
                rejected,
                m.delta,
                assignment,
                group_labels,
                name,
                lengths=lengths,
                names=fids,
                source=sources,
                labels=names,
                **kw,
            )
        finally:
            core.status = ""
        table.attrs.update(test=kw["test"], by=name)
        return table


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
    """:func:`~prefaudit.stats.paired_tests` within each group of pairs (``assignment``), as one long table.

    Columns ``name, name_label`` then the paired-test columns; ``q`` is BH over every tested
    group × column (untested: q = 1); ``p_heterogeneity`` is Kruskal–Wallis of each column of
    ``delta`` across the groups, ``q_heterogeneity`` its BH over the columns whose Δ varies.
    Used by ``test(by="topic")`` for features and by the report for feature groups.
    """
    # One pass over every group (stats.paired_tests_grouped): each group's rows equal
    # paired_tests on that group's pairs alone, resamples included.
    table = paired_tests_grouped(
        chosen, rejected, assignment, n_groups=len(group_labels), lengths=lengths, **paired_kw
    )
    groups = table.pop("group").to_numpy()
    table.insert(0, f"{name}_label", np.asarray(group_labels, dtype=object)[groups])
    table.insert(0, name, groups)
    n_tables = np.unique(groups).size
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
    table["p_heterogeneity"] = np.tile(p_het, n_tables)
    table["q_heterogeneity"] = np.tile(q_het, n_tables)
    return table
