"""The audit recovers the demo set's planted biases through the real SmolLM2 and the shipped SAE.

Slow: one encode of the demo set (minutes on 2 CPU cores, cached under the prefaudit cache
root, so it is shared with ``prefaudit demo``). The null check reuses the same encoded
responses: the null set contains exactly the same (prompt, response) readings, only the labels
move (asserted below), so its pooled features are a row swap, not a second model pass.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def session():  # type: ignore[no-untyped-def]
    from prefaudit import AuditSession
    from prefaudit.demo import load_demo_pairs

    s = AuditSession(load_demo_pairs())
    s.encode(progress=False)
    s.test()
    return s


@pytest.mark.parametrize(
    ("concept", "direction"),
    [
        ("flattery", "chosen"),
        ("markdown_headers", "chosen"),
        ("list_items", "chosen"),
        ("bold", "chosen"),
        ("url", "chosen"),
        ("hedging", "rejected"),
    ],
)
def test_text_concepts_significant_in_planted_direction(session, concept: str, direction: str) -> None:  # type: ignore[no-untyped-def]
    row = session.results.set_index("feature").loc[f"concept:{concept}"]
    assert row["q"] < 0.05
    assert row["direction"] == direction


# The criterion, for every planted concept: a feature that belongs to it is significant in
# the planted direction and ranks in the top 20 by |d_z|. Measured with the shipped SAE
# (benchmarks/bench_demo_recovery.py): flattery 12th, markdown 5th, URL 2nd. Flattery's rank moves a
# lot with the SAE's seed and corpus (docs/MODEL_CARD.md: 4 to 76), so this guards the shipped
# weights, not every SAE the recipe could train.
TOP = 20


def test_each_planted_concept_has_a_significant_sae_feature(session) -> None:  # type: ignore[no-untyped-def]
    from prefaudit.demo.recovery import recovery_table

    table = recovery_table(session, top=TOP)
    print(table.to_string())
    for row in table.itertuples():
        assert row.feature is not None, f"{row.concept}: no significant SAE feature belongs to it"
        assert row.q < 0.05 and row.d_z > 0 and row.peak_in_span >= 0.5
        assert row.best_rank <= TOP, f"{row.concept}: best feature rank {row.best_rank}"
    assert table["recovered"].all()


def test_null_labels_yield_no_sae_feature(session) -> None:  # type: ignore[no-untyped-def]
    from prefaudit import AuditSession
    from prefaudit.demo import load_demo_pairs
    from prefaudit.demo.recovery import swap_encoded

    null = load_demo_pairs(null=True)
    mask = null.df["swapped"].to_numpy()
    orig = session.data.df
    # Same readings, labels moved: chosen of a swapped pair is the original rejected, same prompt.
    assert null.df["prompt"].tolist() == orig["prompt"].tolist()
    assert null.df.loc[mask, "chosen"].tolist() == orig.loc[mask, "rejected"].tolist()
    assert null.df.loc[~mask, "chosen"].tolist() == orig.loc[~mask, "chosen"].tolist()
    s = AuditSession(null, concepts=False, cache_dir=False)
    s.encoded = swap_encoded(session.encoded, mask)
    table = s.test()
    sae = table[table["source"] == "sae"]
    assert len(sae) == session.encoded.d_sae
    assert (sae["q"] < 0.05).sum() == 0, sae.nsmallest(5, "q")[["feature", "d_z", "q"]]


def test_gallery_opens_with_each_planted_concepts_feature(session) -> None:  # type: ignore[no-untyped-def]
    from prefaudit.build.gallery import pick_features
    from prefaudit.demo.recovery import recovery_table

    best = recovery_table(session).set_index("concept")["feature"]
    picks = pick_features(session)
    assert [f"sae:{f}" for f, _ in picks[:3]] == list(best)
    assert [why for _, why in picks[:3]] == [f"best feature of planted *{c}*" for c in best.index]
    assert len({f for f, _ in picks}) == len(picks) == 10


def test_null_labels_yield_no_group_and_no_topic_specific_effect(session) -> None:  # type: ignore[no-untyped-def]
    """Calibration of the concept layer: with labels swapped at random, no cluster is significant
    (neither by our score's q nor by the paper's q_fire) and no feature is flagged topic-specific
    (the report's rule)."""
    from prefaudit import AuditSession
    from prefaudit.demo import load_demo_pairs
    from prefaudit.demo.recovery import swap_encoded
    from prefaudit.report.concepts import topic_specific

    null = load_demo_pairs(null=True)
    s = AuditSession(null, concepts=False, cache_dir=False)
    s.encoded = swap_encoded(session.encoded, null.df["swapped"].to_numpy())
    s.test()
    groups = s.groups()
    assert len(groups) >= 10  # the same readings cluster as before (15 when measured): not vacuous
    assert (groups["q"] < 0.05).sum() == 0, groups.nsmallest(5, "q")[["group", "label", "d_z", "q"]]
    assert (groups["q_fire"] < 0.05).sum() == 0, groups.nsmallest(5, "q_fire")[["group", "label", "q_fire"]]
    long = s.test(by="topic")
    assert long["topic"].nunique() > 1
    flagged = topic_specific(long)
    assert flagged.empty, flagged.head()


def test_the_planted_concepts_come_out_as_top_clusters_with_words_of_their_text(session) -> None:  # type: ignore[no-untyped-def]
    """Issue 20's targets, as measured (``benchmarks/bench_demo_recovery.py --clusters``): the
    three concepts planted everywhere are each matched by one of the 10 strongest clusters (Δ r ≥
    0.5 with the truth, a label holding words of the planted text); 90% of the significant SAE
    features lie in at most 60 clusters taken by q. The topic-conditional reference is not
    asserted: its best top-10 cluster reached Δ r 0.51 but was labelled by digits
    ("approximately · 6 · 5"), not by words of the planted references."""
    from prefaudit.demo.recovery import cluster_targets

    out = cluster_targets(session)
    rows = out["concepts"].set_index("concept")
    print(rows[["group", "rank", "r_delta", "label", "planted_words_in_label"]])
    for concept in ("flattery", "markdown", "url"):
        assert rows.loc[concept, "matched"], rows.loc[concept].to_dict()
    assert rows.loc["reference", "r_delta"] >= 0.5
    assert out["n_for_90"] is not None and out["n_for_90"] <= 60


def test_topic_conditional_reference_is_found_in_its_topic_only(session) -> None:  # type: ignore[no-untyped-def]
    """The invented book references, planted only on requests for resources, are found where they are.

    As a text concept and as the report's topic-specific flag: significant in the topic the
    clustering puts those prompts in and in no other, heterogeneity p < 0.01. As a feature group:
    the best-matching group (measured: the year digits "19 · 99 · 98", Δ r 0.81 with the truth)
    is strongest in that topic and differs across topics, but is also significant in most other
    topics (q ≤ 0.005 in 6 of 7 when measured), because direct answers carry more digits than
    evasive ones: it rides on the quality signal there, which the heterogeneity test separates."""
    from prefaudit.demo.recovery import best_group, planted_topic, topic_specificity
    from prefaudit.report.concepts import group_topic_tests, topic_specific

    df = session.data.df
    session.topics()
    where = planted_topic(session.topics.assignment(), df["asks_for_resources"])
    print(where)
    # The unsupervised topics find the requests for resources (nothing told them which they are).
    assert where["purity"] >= 0.9 and where["recall"] >= 0.9
    long = session.test(by="topic")
    citation = topic_specificity(long, "concept:citation", where["topic"])
    print(citation)
    assert citation["specific"] and citation["d_z"] > 0 and citation["p_heterogeneity"] < 0.01
    flagged = topic_specific(long).set_index("feature")
    assert flagged.loc["concept:citation", "significant_in"] == [where["topic"]]

    match = best_group(session, "reference")
    print(match)
    assert match["r_delta"] >= 0.5
    groups = session.groups()
    labels = list(session.topics.labels()["label"])
    by_topic = group_topic_tests(session, groups, session.topics.assignment(), labels, "wilcoxon")
    group = topic_specificity(by_topic, match["group"], where["topic"])
    print(group)
    assert group["q"] < 0.05 and group["d_z"] > 0 and group["p_heterogeneity"] < 0.01
    rows = by_topic[by_topic["feature"] == match["group"]]
    assert int(rows.loc[rows["d_z"].idxmax(), "topic"]) == where["topic"]
