"""Pair drill-down: following the focus, sort and paging, shading (regex, SAE), hostile text."""

from __future__ import annotations

import json

import numpy as np
import pytest

import prefaudit as pa
from prefaudit.views import Dashboard, PairsView
from prefaudit.views.figures import regex_segments, token_segments
from tests import tiny, views_fixtures
from tests.views_fixtures import HOSTILE, SCRIPT, click, html_values, point_of

session, hostile = views_fixtures.session, views_fixtures.hostile  # shared fixtures


# ---------------------------------------------------------------------- drill-down
def test_pairs_follow_focus_unless_pinned(session):
    view = PairsView(session)
    assert view.widget.feature is None and "Select a feature" in view.widget.status
    session.select_feature("concept:url")
    assert view.widget.feature == "concept:url" and len(view.widget.pairs) == 5
    pinned = PairsView(session, feature="apology")
    assert pinned.widget.pinned and pinned.widget.feature == "concept:apology"
    session.select_feature("concept:flattery")
    assert view.widget.feature == "concept:flattery" and pinned.widget.feature == "concept:apology"
    pinned.widget.set_state({"pinned": False})  # the pin button
    assert pinned.widget.feature == "concept:flattery"


def test_pairs_sort_and_paging_come_from_the_front_end(session):
    session.set_focus("concept:length")
    view = PairsView(session, page_size=4)
    wdg = view.widget
    top = session.space.top_pairs("concept:length", by="abs_delta", n=4)
    assert [p["pair_id"] for p in wdg.pairs] == [str(x) for x in top["pair_id"]]
    wdg.set_state({"page": 2})
    nxt = session.space.top_pairs("concept:length", by="abs_delta", n=4, offset=8)
    assert [p["pair_id"] for p in wdg.pairs] == [str(x) for x in nxt["pair_id"]]
    wdg.set_state({"sort": "rejected"})
    assert wdg.page == 0
    by_rej = session.space.top_pairs("concept:length", by="rejected", n=4)
    assert [p["pair_id"] for p in wdg.pairs] == [str(x) for x in by_rej["pair_id"]]
    assert [p["rejected"]["pooled"] for p in wdg.pairs] == list(by_rej["rejected"])
    wdg.set_state({"page": 99})
    assert wdg.page == 9 and len(wdg.pairs) == 4  # 40 pairs / 4
    version = wdg.version
    session.set_focus("concept:url")
    assert wdg.page == 0 and wdg.version > version
    for p in wdg.pairs:
        assert p["higher"] == (
            "chosen"
            if p["chosen"]["pooled"] > p["rejected"]["pooled"]
            else "rejected"
            if p["rejected"]["pooled"] > p["chosen"]["pooled"]
            else "equal"
        )


def test_pairs_sort_and_page_sent_together_load_one_page(session, monkeypatch):
    view = PairsView(session, feature="length", page_size=4)
    view.widget.set_state({"page": 2})
    calls = []
    real = session.space.top_pairs
    monkeypatch.setattr(session.space, "top_pairs", lambda *a, **k: calls.append(k) or real(*a, **k))
    view.widget.set_state({"sort": "chosen", "page": 0})  # one message from the sort control
    assert [c["by"] for c in calls] == ["chosen"]
    version = view.widget.version
    view.widget.set_state({"pinned": False})
    assert view.widget.version == version and len(calls) == 1
    session.set_label("concept:length", "words")  # results changed: reload the same page
    assert len(calls) == 2 and view.widget.header["label"] == "words"


def test_pairs_regex_concepts_highlight_matches_others_say_no_shading(session):
    view = PairsView(session, feature="url", sort="chosen")
    wdg = view.widget
    assert wdg.legend["kind"] == "regex"
    df = session.data.df.set_index(session.data.df["pair_id"].astype(str))
    for p in wdg.pairs:
        segs = p["chosen"]["segments"]
        assert "".join(s for s, _ in segs) == df.loc[p["pair_id"], "chosen"]
        assert [s for s, a in segs if a == 1.0] == ["http://www.example.com"]
    view2 = PairsView(session, feature="length")
    assert view2.widget.legend["kind"] == "none" and "no token-level shading" in view2.widget.legend["text"]
    assert all(len(p[side]["segments"]) == 1 for p in view2.widget.pairs for side in ("chosen", "rejected"))
    # The flattery concept (0/1 per response) highlights the opener it detected.
    flat = PairsView(session, feature="flattery", sort="chosen").widget
    assert flat.legend["kind"] == "regex"
    top = flat.pairs[0]["chosen"]["segments"]
    hits = [s for s, a in top if a == 1.0]
    assert len(hits) == 1 and "".join(s for s, _ in top).startswith(hits[0])
    fid = session.add_concept("word_the", r"\bthe\b")
    view3 = PairsView(session, feature=fid)
    assert view3.widget.legend["kind"] == "regex" and "the" in view3.widget.legend["text"]


def test_segment_helpers_cover_the_text():
    assert regex_segments("a bb a", __import__("re").compile("b+")) == [["a ", 0.0], ["bb", 1.0], [" a", 0.0]]
    segs = token_segments("hello world, truncated", ["hel", "lo", " world"], np.array([0.0, 1.5, 0.25]))
    assert segs == [["hel", 0.0], ["lo", 1.5], [" world", 0.25], [", truncated", None]]


def test_pairs_keep_hostile_text_verbatim_as_data(hostile):
    view = PairsView(hostile, feature="url", sort="chosen")
    state = view.widget.get_state()
    raw = json.dumps(state["pairs"])
    assert SCRIPT.replace("/", "\\/") in raw or SCRIPT in raw  # verbatim: the front end uses textContent
    first = next(p for p in state["pairs"] if p["pair_id"] in {"0", "1", "2"})
    assert first["prompt"][0]["content"] == f"prompt {HOSTILE}"
    assert state["header"]["label"] == f"url {SCRIPT}"
    assert html_values(view) == [""]  # only the (empty) error box is HTML


def test_pairs_sae_tokens_are_shaded_by_activation(sae_session):
    s = sae_session
    fid = (
        s.results[(s.results["source"] == "sae") & (s.results["n_active"] > 0)]
        .sort_values("q")["feature"]
        .iloc[0]
    )
    view = PairsView(s, feature=fid, page_size=2)
    wdg = view.widget
    assert wdg.legend["kind"] == "sae" and wdg.legend["max"] > 0
    p = wdg.pairs[0]
    tokens, acts = s.space.token_activations(p["position"], fid)["chosen"]
    segs = p["chosen"]["segments"]
    assert [t for t, _ in segs[: len(tokens)]] == list(tokens)
    np.testing.assert_allclose([a for _, a in segs[: len(tokens)]], acts, atol=1e-4)
    assert "".join(t for t, _ in segs) == s.data.df["chosen"].iloc[p["position"]]
    assert max(a for t, a in segs if a is not None) <= wdg.legend["max"] + 1e-9


def test_pairs_sae_page_answers_with_its_rows_before_reading_the_model(sae_session, monkeypatch):
    """An SAE page goes down twice: the rows at once (plain text, legend "pending"), then the
    shading; the model is read only after the rows were sent. A regex page goes down once."""
    s = sae_session
    fids = s.results[s.results["source"] == "sae"].sort_values("q")["feature"].tolist()
    view = PairsView(s, page_size=2)
    wdg = view.widget
    seen: list[tuple] = []
    reads: list[int] = []
    real = s.space.token_activations
    monkeypatch.setattr(s.space, "token_activations", lambda pos, f: reads.append(len(seen)) or real(pos, f))
    wdg.observe(
        lambda _c: seen.append((wdg.legend["kind"], wdg.status, [p["pair_id"] for p in wdg.pairs])),
        names="version",
    )
    s.set_focus(fids[0])
    assert [k for k, _, _ in seen] == ["pending", "sae"] and [st for _, st, _ in seen] == [
        "shading tokens…",
        "",
    ]
    assert seen[0][2] == seen[1][2] and len(seen[0][2]) == 2  # the same rows, shaded the second time
    assert reads and min(reads) == 1  # every model read came after the rows were sent
    assert wdg.legend["max"] > 0 and view.last_error is None
    seen.clear()
    s.set_focus("concept:url")  # a regex concept shades without the model: one page
    assert [k for k, _, _ in seen] == ["regex"] and wdg.status == ""


@pytest.fixture(scope="module")
def sae_session(tiny_model_dir, tiny_sae_dir, tmp_path_factory):
    s = pa.AuditSession(
        pa.load_pairs(tiny.planted_pairs(24)),
        model=tiny_model_dir,
        sae=tiny_sae_dir,
        cache_dir=tmp_path_factory.mktemp("views-cache"),
        batch_size=8,
        shard_size=24,
    )
    s.encode(progress=False)
    s.test(n_boot=50)
    return s


def test_volcano_and_dashboard_on_an_sae_session(sae_session):
    dash = Dashboard(sae_session)
    fid = sae_session.results.sort_values("q")["feature"].iloc[0]
    click(dash.volcano, *point_of(dash.volcano, fid))
    assert dash.pairs.widget.feature == fid and fid in dash.shaper.rows
    assert dash.volcano.last_error is None and dash.pairs.last_error is None


# ---------------------------------------------------------------------- regex concepts by description
def test_regex_concepts_are_named_by_description_with_the_pattern_apart(session):
    flat = session.concept("flattery")
    wdg = PairsView(session, feature="flattery").widget
    assert wdg.header["label"] == flat.description == wdg.header["description"]
    assert wdg.header["pattern"] == flat.regex.pattern
    assert (
        wdg.legend["text"] == f"highlighted: {flat.description}"
        and wdg.legend["pattern"] == flat.regex.pattern
    )
    assert flat.regex.pattern not in json.dumps([wdg.header["label"], wdg.legend["text"]])
    # A regex concept added without a description is named after the concept, not its regex.
    fid = session.add_concept("word_the", r"\bthe\b")
    session.test(n_boot=20)
    wdg = PairsView(session, feature=fid).widget
    assert session.label(fid) == r"matches of /\bthe\b/"  # the automatic label quotes the regex …
    assert wdg.header["label"] == "matches of the 'word_the' pattern"  # … the drill-down does not
    assert wdg.header["pattern"] == r"\bthe\b" and "\\b" not in wdg.legend["text"]
    session.set_label(fid, "the definite article")  # a person's label wins
    assert wdg.header["label"] == "the definite article" and wdg.header["pattern"] == r"\bthe\b"
    # Concepts without a regex have a description and no pattern; SAE ids neither.
    length = PairsView(session, feature="length").widget.header
    assert length["description"] == "response length in words" and "pattern" not in length
    assert length["d_z"] == session.results.set_index("feature").loc["concept:length", "d_z"]


# ---------------------------------------------------------------------- top-k without sorting every pair
def test_top_k_order_equals_the_stable_full_sort():
    from prefaudit.audit.ranking import top_k_order

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1000):
        for key in (
            rng.normal(size=n),
            rng.integers(-2, 3, size=n).astype(float),  # many ties
            np.where(rng.random(n) < 0.9, 0.0, rng.exponential(size=n)),  # sparse: mostly zero
        ):
            ref = np.argsort(-key, kind="stable")
            for k in (0, 1, 3, n // 3, n - 1, n, n + 5):
                np.testing.assert_array_equal(top_k_order(key, k), ref[: max(k, 0)])
    key = np.array([1.0, np.nan, 3.0, 3.0, 0.0])
    np.testing.assert_array_equal(top_k_order(key, 2), np.argsort(-key, kind="stable")[:2])


def test_top_pairs_ranks_once_per_feature_and_order_and_matches_a_full_sort(session, monkeypatch):
    import prefaudit.audit.ranking as queries

    calls = []
    real = queries.top_k_order
    monkeypatch.setattr(queries, "top_k_order", lambda key, k: calls.append(k) or real(key, k))
    for by in ("abs_delta", "delta", "chosen", "rejected"):
        for fid in ("concept:length", "concept:url", "concept:flattery"):
            vals = session.space.values(fid)
            key = vals["delta"].abs() if by == "abs_delta" else vals[by]
            ref = np.argsort(-key.to_numpy(), kind="stable")
            for offset in (0, 5, 35):
                top = session.space.top_pairs(fid, by=by, n=5, offset=offset)
                np.testing.assert_array_equal(top["position"], ref[offset : offset + 5])
                np.testing.assert_allclose(top["delta"], vals["delta"].to_numpy()[ref[offset : offset + 5]])
                assert top["pair_id"].tolist() == vals["pair_id"].iloc[ref[offset : offset + 5]].tolist()
    assert len(calls) == 12  # one ranking per (feature, order); later pages come from the cache
    session.add_concept("cats", r"\bcat\b")  # features changed: the cache is dropped with the matrix
    session.space.top_pairs("concept:length", by="chosen", n=5)
    assert len(calls) == 13
