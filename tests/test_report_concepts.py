"""The report's groups, topics, drivers and SAE-fit sections; the session repr's fit; summary.json.

Topics and drivers on a concepts-only session with two planted prompt topics (cooking,
programming; "sparkle" ends 80 % of the chosen cooking responses) and a ``<script>`` payload
in one pair; groups and the fit on the tiny real model and SAE.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy import stats

import prefaudit as pa
from prefaudit.cli import write_outputs
from prefaudit.report.concepts import (
    concept_summary,
    gather,
    group_topic_tests,
    lead_summary,
    strongest,
    topic_specific,
)
from prefaudit.stats import paired_tests
from tests.test_report import parse
from tests.test_topics_drivers_fit import topic_pairs
from tests.tiny import BLOCK_A, plant_blocks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAYLOAD = "<script>alert('pair')</script>"
CLUSTERS = "Concepts: clusters of co-firing features"


def topic_rows(n: int = 120, seed: int = 0) -> list[dict]:
    """The topic pairs of tests/test_topics_drivers_fit.py ("sparkle" in cooking pairs only)."""
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in topic_pairs(n, seed)]
    # The strongest driver of "sparkle" carries a script in both responses (and a long chosen one).
    rows[0]["chosen"] = f"sparkle sparkle sparkle {PAYLOAD} " + "x" * 400
    rows[0]["rejected"] = f"no {PAYLOAD}"
    return rows


def topic_session() -> pa.AuditSession:
    s = pa.AuditSession(pa.load_pairs(topic_rows()), sae=False, cache_dir=False)
    s.add_concept("sparkle", r"sparkle")
    s.test(n_boot=100)
    return s


def section(text: str, title: str) -> str:
    m = re.search(rf"<h2>{re.escape(title)}</h2>(.*?)(?=<h2>|</body>)", text, re.S)
    assert m, f"no section {title!r}"
    return m.group(1)


@pytest.fixture(scope="module")
def topic_report(tmp_path_factory):
    s = topic_session()
    assert s.topics.results("topic") is None  # the report computes the tests by topic
    path = s.report(tmp_path_factory.mktemp("topics") / "r.html")
    return s, path.read_text(encoding="utf-8")


def test_the_report_flags_the_effect_that_lives_in_one_topic(topic_report):
    s, text = topic_report
    long = s.topics.results("topic")
    assert long is not None and long["topic"].nunique() == 2
    cooking = int(s.topics()["topic"].iloc[0])
    topics = section(text, "Prompt topics")
    for r in s.topics.labels().itertuples():
        assert f"<td>{r.label}</td><td class='num'>{r.n_pairs:,}</td>" in topics
    flagged = topic_specific(long)
    assert "concept:sparkle" in flagged["feature"].tolist()
    row = flagged.set_index("feature").loc["concept:sparkle"]
    assert row["significant_in"] == [cooking] and row["q_heterogeneity"] < 0.05
    # By hand from the long table: heterogeneous, and significant in some but not all topics.
    per = long.groupby("feature")
    by_hand = {
        f
        for f, sub in per
        if sub["q_heterogeneity"].iloc[0] < 0.05 and 0 < (sub["q"] < 0.05).sum() < sub["topic"].nunique()
    }
    assert set(flagged["feature"]) == by_hand
    assert f"<b>{len(flagged):,} topic-specific features</b>" in topics
    assert re.search(r"<code>concept:sparkle</code>.*?<b>\+\d", topics, re.S)  # bold where significant


def test_drivers_show_the_pairs_text_escaped(topic_report):
    s, text = topic_report
    drivers = section(text, "Drivers: the pairs that carry the signal")
    top = strongest(s.results[s.results["q"] < 0.05], 3)["feature"].tolist()
    assert "concept:sparkle" in top  # the planted effect is among the drivers shown
    for fid in top:
        assert f"<h3 class='driver'><code>{fid}</code>" in drivers
    d = s.drivers("concept:sparkle", top_k=5)
    for pid in d["pair_id"].head(5):
        assert f"<td><code>{pid}</code></td>" in drivers
    assert f"carry {100 * d['share'].head(5).sum():.0f} % of it" in drivers
    # The payload is text: escaped in both responses, the long response cut with an ellipsis.
    assert "&lt;script&gt;alert(&#x27;pair&#x27;)&lt;/script&gt;" in drivers
    assert "x" * 100 + "…" in drivers
    res = parse(text)
    assert [t for t, _ in res.tags].count("script") == 2  # plotly.js and the figure only
    assert res.handlers == [] and res.loads == []


def test_groups_and_fit_are_skipped_with_a_reason_in_a_concepts_only_audit(topic_report):
    _, text = topic_report
    assert "Concepts-only audit: groups cluster SAE features" in section(text, CLUSTERS)
    assert "Concepts-only audit: there is no SAE" in section(text, "How well the SAE reads this data")


def test_the_report_builds_when_nothing_was_computed_and_computes_nothing(tmp_path):
    s = topic_session()
    text = s.report(tmp_path / "r.html", compute=()).read_text(encoding="utf-8")
    assert s.topics.results("topic") is None
    assert "Not computed: session.topics() clusters the prompts" in section(text, "Prompt topics")
    with pytest.raises(pa.ConfigError, match="compute"):
        s.report(tmp_path / "bad.html", compute=["volcano"])


def test_summary_json_carries_the_same_topics_and_drivers(topic_report, tmp_path):
    s, _ = topic_report
    summary = write_outputs(s, tmp_path, {"out": str(tmp_path)})
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["concepts"] == json.loads(json.dumps(summary["concepts"], default=str))
    topics = saved["concepts"]["topics"]
    assert [t["n_pairs"] for t in topics["topics"]] == s.topics.labels()["n_pairs"].tolist()
    flagged = topic_specific(s.topics.results("topic"))
    assert topics["n_topic_specific_features"] == len(flagged)
    assert [r["id"] for r in topics["topic_specific_features"]] == flagged["feature"].head(15).tolist()
    assert topics["n_topic_specific_groups"] is None  # no groups in a concepts-only audit
    assert list(saved["concepts"]["groups"]) == ["skipped"]
    # Keys named for what they hold lead; "concepts" stays one release, said so.
    assert list(saved)[:2] == ["sentences", "clusters"] and list(saved["clusters"]) == ["skipped"]
    for key in ("fit", "topics", "drivers"):
        assert saved[key] == saved["concepts"][key]
    assert "concepts" in saved["deprecated_keys"]
    assert saved["sentences"][-1]["text"].startswith("The prompts fall into 2 topics")
    assert [d["feature"] for d in saved["concepts"]["drivers"]] == [
        d.attrs["feature"] for d in gather(s, compute=()).drivers
    ]


# ---------------------------------------------------------------------------- SAE: fit and groups
@pytest.fixture()
def sae_session(tiny_session):
    tiny_session.encode(progress=False)
    plant_blocks(tiny_session)  # the tiny random SAE's own features form no cluster
    tiny_session.test(n_boot=50)
    return tiny_session


def test_the_repr_shows_the_cached_fit_only(sae_session, tmp_path):
    s = sae_session
    assert "not measured yet (session.sae_fit()" in repr(s)
    assert "session.sae_fit()" in s._repr_html_()
    assert s.lens_fit.measured() is None  # a repr never measures
    fit = s.sae_fit()
    assert str(fit).splitlines()[0] in repr(s)
    assert fit.warning and "⚠" in s._repr_html_()  # the tiny random SAE reconstructs badly
    text = s.report(tmp_path / "r.html", compute=("fit",)).read_text(encoding="utf-8")
    fit_part = section(text, "How well the SAE reads this data")
    assert f"Explained variance <b>{fit.explained_variance:.3f}</b>" in fit_part
    assert f"{fit.n_tokens:,} response tokens of {fit.n_responses} sampled responses" in fit_part
    assert "<div class='warning' role='alert'>⚠ Low fit" in fit_part
    assert "Not computed: session.groups()" in section(text, CLUSTERS)


def test_groups_in_the_report_and_their_tests_by_topic(sae_session, tmp_path):
    s = sae_session
    text = s.report(tmp_path / "r.html").read_text(encoding="utf-8")
    g = s.groups.computed()
    assert g is not None and s.lens_fit.measured() is not None
    groups = section(text, CLUSTERS)
    top = strongest(g, 10)
    for r in top.itertuples():
        assert f"<tr id='{r.group}'><td><code>{r.group}</code></td><td>{r.label}</td>" in groups
        assert f"<td>{r.badge}</td>" in groups
    assert groups.count("<tr id='group:") == len(top)
    # The report opens with sentences; the planted block's one says it leans to chosen, linked to its row.
    first = section(text, "What this data teaches")
    g_a = s.groups.of(f"sae:{BLOCK_A[0]}")
    assert f"<a href='#{g_a}'><code>{g_a}</code></a>" in first and "Chosen responses have more" in first
    assert text.index("What this data teaches") < text.index(CLUSTERS) < text.index("Volcano")
    # The groups tested within topics (an alternating split here) equal paired_tests and scipy.
    assignment = np.arange(len(s.data)) % 2
    long = group_topic_tests(s, g, assignment, ["even", "odd"], "wilcoxon")
    lc, lr = s.space.lengths()
    for t in (0, 1):
        rows = np.flatnonzero(assignment == t)
        scores = [s.groups.scores(k) for k in g["group"]]
        c = np.column_stack([x["chosen"] for x in scores])[rows]
        r_ = np.column_stack([x["rejected"] for x in scores])[rows]
        ref = paired_tests(c, r_, lengths=(lc[rows], lr[rows]), n_boot=100)
        part = long[long["topic"] == t].reset_index(drop=True)
        np.testing.assert_array_equal(part["p"].to_numpy(), ref["p"].to_numpy())
    delta = np.column_stack([x["delta"] for x in scores])
    for j in range(delta.shape[1]):
        if np.ptp(delta[:, j]) > 0:
            ref = stats.kruskal(delta[assignment == 0, j], delta[assignment == 1, j]).pvalue
            np.testing.assert_allclose(long["p_heterogeneity"].iloc[j], ref, rtol=1e-9)
    summary = concept_summary(gather(s, compute=()))
    assert summary["groups"]["n_groups"] == len(g)
    assert [x["group"] for x in summary["groups"]["top"]] == top["group"].tolist()
    lead = lead_summary(gather(s, compute=()))
    clusters = lead["clusters"]
    assert clusters["n_clusters"] == len(g) and clusters["n_unclustered"] == g.attrs["n_unclustered"]
    assert [x["group"] for x in clusters["top"]] == top["group"].tolist()
    row = next(x for x in clusters["top"] if x["group"] == g_a)
    assert row["badge"] == "chosen" and row["sentence"].startswith("Chosen responses have more")
    assert {x["group"] for x in lead["sentences"] if x["group"]} <= set(g["group"])
    json.dumps(lead)  # plain JSON
    s.set_label(g_a, "a person's name")
    row = next(x for x in lead_summary(gather(s, compute=()))["clusters"]["top"] if x["group"] == g_a)
    assert row["label"] == "a person's name" and row["label_kind"] == "set by a person"
    assert summary["fit"]["explained_variance"] == s.lens_fit.measured().explained_variance


def test_write_outputs_without_a_report_says_what_was_skipped(tmp_path):
    s = topic_session()
    write_outputs(s, tmp_path, {"out": str(tmp_path)}, report=False)
    concepts = json.loads((tmp_path / "summary.json").read_text())["concepts"]
    assert concepts["topics"]["skipped"].startswith("Not computed")
    assert not (tmp_path / "report.html").exists()
