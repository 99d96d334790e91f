"""Plain sentences from cluster rows: the wording for positive, negative and non-significant rows."""

from __future__ import annotations

import numpy as np
import pytest

from prefaudit.features import cluster_stats as cs
from prefaudit.features import sentences as ps
from tests.test_feature_clusters import planted


def row(**kw):
    base = {
        "cluster": "cluster:0",
        "n_members": 37,
        "d_z": 0.41,
        "q": 0.0004,
        "n_chosen_only": 46,
        "n_rejected_only": 12,
        "n_both": 10,
        "n_neither": 32,
        "fire_ci_low": 0.25,
        "fire_ci_high": 0.43,
        "badge": "chosen",
        "split_half": True,
        "q_ctrl": 0.003,
        "controlled_for": ["cluster:1", "cluster:2", "cluster:3", "cluster:4", "cluster:5"],
    }
    return {**base, **kw}


def test_positive_significant_row():
    s = ps.cluster_sentence(row(), label="markdown headings")
    assert s.startswith(
        "Chosen responses have more “markdown headings” than rejected ones (d_z +0.41, q < 0.001)"
    )
    assert "chosen response only in 46% of pairs and in the rejected only in 12%" in s
    assert "(net +34 points, 95% CI +25 to +43)" in s
    assert (
        "It survives the controls: with length and 5 other concepts held equal it stays significant (q 0.003)."
        in s
    )
    assert s.endswith("This concept groups 37 features.")


def test_negative_significant_row_that_does_not_survive_the_controls():
    s = ps.cluster_sentence(
        row(
            d_z=-0.3,
            q=0.012,
            n_chosen_only=8,
            n_rejected_only=30,
            fire_ci_low=-0.3,
            fire_ci_high=-0.14,
            badge="rejected",
            q_ctrl=0.8,
            n_members=1,
        ),
        label="I'm sorry",
    )
    assert s.startswith("Rejected responses have more “I'm sorry” than chosen ones (d_z -0.30, q 0.012)")
    assert (
        "It does not survive the controls: with length and 5 other concepts held equal it is no longer" in s
    )
    assert "(q 0.8), so something else may explain it." in s
    assert s.endswith("This concept groups 1 feature.")


def test_non_significant_row_says_no_reliable_difference_and_nothing_about_controls():
    s = ps.cluster_sentence(row(d_z=0.03, q=0.62, badge="both", q_ctrl=0.01), label="")
    assert s.startswith(
        "Chosen and rejected responses do not reliably differ in this concept (d_z +0.03, q 0.62)"
    )
    assert "survive" not in s
    assert "It fires on both sides in most pairs where it fires" in s


def test_split_half_failure_and_no_length_control_are_said():
    s = ps.cluster_sentence(row(split_half=False, controlled_for=[]), label="x", length_controlled=False)
    assert "Its lean did not hold in both random halves of the pairs." in s
    assert "with nothing held equal" in s
    s = ps.cluster_sentence(row(controlled_for=[]), label="x")
    assert "with length held equal" in s


def test_sentences_from_a_real_cluster_table_follow_its_rows():
    c, r = planted(600, lean=0.15)
    audit = cs.audit_clusters(c, r, n_boot=200, lengths=np.zeros(600))
    t = audit.table
    out = ps.cluster_sentences(t, {"cluster:0": "block zero"})
    assert out["cluster"].tolist() == t["cluster"].tolist()
    for (_, tr), (_, o) in zip(t.iterrows(), out.iterrows(), strict=True):
        lean = ("chosen" if tr["d_z"] > 0 else "rejected") if tr["q"] < 0.05 else "none"
        assert o["lean"] == lean
        assert f"groups {tr['n_members']} features" in o["sentence"]
    lean_rows = out[out["lean"] == "chosen"]
    assert len(lean_rows) >= 1 and "“block zero”" in " ".join(lean_rows["sentence"])
    overview = ps.overview_sentences(out, t)
    assert overview[0][1] in set(lean_rows["cluster"])
    assert ("No concept is significantly more common in rejected responses.", None) in overview
    with pytest.raises(ValueError, match="labels for"):
        ps.cluster_sentences(t, ["a"])


def test_fit_and_topic_sentences():
    assert "explained variance 0.84" in ps.fit_sentence(0.84, 52.3) and "care" not in ps.fit_sentence(
        0.84, 52
    )
    assert "below 0.7" in ps.fit_sentence(0.62, 40)
    assert (
        ps.topics_sentence(8, 0.02)
        == "The prompts fall into 8 topics that separate hardly (silhouette 0.02)."
    )
    assert "clearly" in ps.topics_sentence(3, 0.8)
    assert ps.topics_sentence(1, None) == "The prompts were put in 1 topic."
    assert set(ps.GLOSSARY) >= {"d_z", "q", "EV", "L0", "share"}
