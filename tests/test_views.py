"""Notebook views at the Python level: state, intents, linking, hostile text, scale.

``widget.get_state()`` / ``set_state({...})`` is exactly what a comm update does, and a plotly
click or lasso is simulated through the FigureWidget's JS→Python trait
(``_js2py_pointsCallback``), so these tests exercise the same paths as a browser.
"""

from __future__ import annotations

import json

import ipywidgets as w
import numpy as np
import pandas as pd
import pytest

import prefaudit as pa
from prefaudit.views import Dashboard, PairsView, SessionView, ShaperView, VolcanoView
from prefaudit.views.drilldown import regex_segments, token_segments
from prefaudit.views.volcano import CATEGORIES, SELECTED_TRACE, volcano_points
from tests import tiny

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
MARKDOWN = "**bold** [link](javascript:alert(3)) # header"
ENTITY = "&lt;b&gt; &amp; &#60;i&#62;"
HOSTILE = f"{SCRIPT} {IMG} {MARKDOWN} {ENTITY}"


def make_session(rows: list[dict] | None = None) -> pa.AuditSession:
    s = pa.AuditSession(pa.load_pairs(rows or tiny.planted_pairs(40)), sae=False, cache_dir=False)
    s.test(n_boot=50)
    return s


@pytest.fixture()
def session() -> pa.AuditSession:
    return make_session()


@pytest.fixture()
def hostile() -> pa.AuditSession:
    rows = tiny.planted_pairs(40)
    for r in rows[:3]:
        r["prompt"] = f"prompt {HOSTILE}"
        r["chosen"] = f"What a great question! {HOSTILE} See http://www.example.com/{SCRIPT}"
        r["rejected"] = f"Sorry, I cannot help. {HOSTILE}"
    s = make_session(rows)
    s.set_label("concept:url", f"url {SCRIPT}")
    s.set_label("concept:apology", IMG)
    s.set_note("concept:url", HOSTILE)
    s.select_feature("concept:url")
    s.select_feature("concept:apology", focus=False)
    s.set_weight("concept:url", -1.0)
    return s


def click(view: VolcanoView, trace: int, point: int) -> None:
    view.figure._js2py_pointsCallback = {
        "event_type": "plotly_click",
        "points": {"trace_indexes": [trace], "point_indexes": [point], "xs": [0.0], "ys": [0.0]},
    }


def lasso(view: VolcanoView, points: list[tuple[int, int]]) -> None:
    view.figure._js2py_pointsCallback = {
        "event_type": "plotly_selected",
        "points": {
            "trace_indexes": [t for t, _ in points],
            "point_indexes": [p for _, p in points],
            "xs": [0.0] * len(points),
            "ys": [0.0] * len(points),
        },
        "selector": {"type": "lasso", "selector_state": {"xs": [0, 1, 1], "ys": [0, 0, 1]}},
    }


def point_of(view: VolcanoView, fid: str) -> tuple[int, int]:
    row = int(np.flatnonzero(view.session.results["feature"].to_numpy() == fid)[0])
    for k, rows in enumerate(view._rows):
        hits = np.flatnonzero(rows == row)
        if hits.size:
            return k, int(hits[0])
    raise AssertionError(f"{fid} is not drawn")


def html_values(widget: w.Widget) -> list[str]:
    """Every HTML string an ipywidgets HTML/HTMLMath in the tree would render as markup."""
    out = []
    if isinstance(widget, (w.HTML, w.HTMLMath)):
        out.append(widget.value)
    for child in getattr(widget, "children", ()):
        out.extend(html_values(child))
    return out


# ---------------------------------------------------------------------- base class
@pytest.mark.parametrize("cls", [VolcanoView, PairsView, ShaperView, Dashboard])
def test_views_reject_unknown_kwargs_with_a_suggestion(session, cls):
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        cls(session, colour="red")
    if cls is VolcanoView:
        with pytest.raises(TypeError, match="did you mean 'effect'"):
            cls(session, efect="d_z")


def test_session_delegation_passes_kwargs_and_rejects_typos(session):
    assert isinstance(session.volcano(effect="rank_biserial"), VolcanoView)
    assert isinstance(session.pairs("url", sort="chosen"), PairsView)
    assert isinstance(session.shaper(), ShaperView)
    assert isinstance(session.dashboard(page_size=3), Dashboard)
    with pytest.raises(TypeError, match="page_sise"):
        session.pairs(page_sise=3)


def test_view_needs_a_session():
    with pytest.raises(TypeError, match="AuditSession"):
        ShaperView(object())


def test_callback_error_is_shown_in_the_view_escaped_and_dismissable(session):
    view = ShaperView(session)
    view.add_box.value = f"nope{IMG}"  # not a feature: the intent raises ConfigError
    assert isinstance(view.last_error, pa.ConfigError)
    assert view._error_box.layout.display == "flex"
    assert "ConfigError" in view._error_html.value and "traceback" in view._error_html.value
    assert IMG not in view._error_html.value and "&lt;img" in view._error_html.value
    view.clear_error()
    assert view.last_error is None and view._error_box.layout.display == "none"


def test_observer_errors_stay_in_the_view_and_do_not_break_the_intent(session):
    class Broken(SessionView):
        def __init__(self, session, **kwargs):
            super().__init__(session, **kwargs)
            self.observe_session(self._boom, "selection")

        def _boom(self, change):
            raise RuntimeError("redraw failed")

    view = Broken(session)
    session.select_feature("concept:url")  # must not raise in the caller
    assert session.selection == ["concept:url"]
    assert isinstance(view.last_error, RuntimeError)


def test_close_stops_observing_the_session(session):
    notifiers = session._trait_notifiers
    before = {k: len(v.get("change", [])) for k, v in notifiers.items()}
    view = Dashboard(session)
    assert len(notifiers["selection"]["change"]) > before.get("selection", 0)
    view.close()
    after = {k: len(v.get("change", [])) for k, v in notifiers.items()}
    assert after == {k: before.get(k, 0) for k in after}
    session.select_feature("concept:url")  # nothing observes a closed view any more


# ---------------------------------------------------------------------- volcano
def test_volcano_draws_every_varying_feature_as_typed_arrays(session):
    view = VolcanoView(session)
    res = session.results
    drawn = np.concatenate(view._rows)
    expected = np.flatnonzero(np.isfinite(res["d_z"]) & np.isfinite(res["q"]))
    assert sorted(drawn) == sorted(expected)
    state = view.figure.get_state()
    for k in range(len(CATEGORIES)):
        x = state["_widget_data"][k]["x"]
        assert isinstance(x, dict) and isinstance(x["buffer"], memoryview) and x["dtype"] == "float64"
        rows = view._rows[k]
        np.testing.assert_allclose(np.frombuffer(x["buffer"], dtype=np.float64), res["d_z"].to_numpy()[rows])
        text = state["_widget_data"][k]["text"]
        assert len(text) == len(rows) and all(
            f"<b>{f}</b>" in t for f, t in zip(res["feature"].iloc[rows], text, strict=True)
        )
        assert "customdata" not in state["_widget_data"][k]  # 2-D arrays would bloat the JS→Python echo
    # colours: significant 'chosen' features in the chosen trace
    chosen_trace = next(n for n, (key, _, _) in enumerate(CATEGORIES) if key == "chosen")
    chosen = set(res["feature"].iloc[view._rows[chosen_trace]])
    assert "concept:url" in chosen and "concept:flattery" in chosen
    assert all(res.set_index("feature").loc[f, "q"] < 0.05 for f in chosen)


def test_volcano_click_selects_and_focuses_and_rings_the_point(session):
    view = VolcanoView(session)
    click(view, *point_of(view, "concept:url"))
    assert session.selection == ["concept:url"] and session.focus == "concept:url"
    click(view, *point_of(view, "concept:apology"))
    assert session.selection == ["concept:url", "concept:apology"] and session.focus == "concept:apology"
    ring = view.figure.data[SELECTED_TRACE]
    x_apology = session.results.set_index("feature").loc["concept:apology", "d_z"]
    assert len(ring.x) == 2 and np.isclose(ring.x[1], x_apology)
    assert ring.marker.color[1] != ring.marker.color[0]  # the focus ring differs


def test_volcano_lasso_adds_features_smallest_q_first_up_to_the_cap(session):
    session.select_feature("concept:length")
    view = VolcanoView(session, max_lasso=2)
    picked = ["concept:apology", "concept:flattery", "concept:url"]
    lasso(view, [point_of(view, f) for f in picked])
    q = session.results.set_index("feature")["q"]
    best_two = sorted(picked, key=lambda f: q[f])[:2]
    assert session.selection == ["concept:length", *best_two]
    assert view.last_error is None
    assert all(
        view.figure.data[k].unselected.marker.opacity == view.figure.data[k].marker.opacity for k in range(3)
    )


def test_volcano_effect_dropdown_changes_x(session):
    view = VolcanoView(session)
    view.effect.value = "rank_biserial"
    for k, rows in enumerate(view._rows):
        np.testing.assert_allclose(view.figure.data[k].x, session.results["rank_biserial"].to_numpy()[rows])
    assert "rank-biserial" in view.figure.layout.xaxis.title.text
    with pytest.raises(ValueError, match="effect"):
        VolcanoView(session, effect="p")


def test_volcano_search_by_id_and_label(session):
    session.set_label("concept:url", "links to websites")
    view = VolcanoView(session)
    view.search.value = "WEBSITES"  # one label match: selected
    assert session.selection == ["concept:url"]
    view.search.value = "sae:1"  # no SAE in this session: nothing
    assert "No feature matches" in view.info.value
    view.search.value = "concept:"  # many matches: offered, highlighted, not selected
    assert session.selection == ["concept:url"]
    assert len(view.matches.options) == len(session.results) and view.matches.layout.display == "flex"
    assert view.matches.options[0][1] == session.results.sort_values("q").iloc[0]["feature"]
    assert len(view.figure.data[3].x) == len(np.concatenate(view._rows))
    view.matches.value = "concept:refusal"
    assert session.selection[-1] == "concept:refusal" and session.focus == "concept:refusal"
    view.search.value = "apology"
    assert session.focus == "concept:apology"


def test_volcano_redraws_when_results_change(session):
    view = VolcanoView(session)
    n_before = sum(len(d.x) for d in view.figure.data[: len(CATEGORIES)])
    session.set_label("concept:url", "a new label")
    assert any("a new label" in t for d in view.figure.data[: len(CATEGORIES)] for t in d.text)
    session.add_concept("great", r"great question")
    assert "No results yet" in view.info.value
    assert sum(len(d.x) for d in view.figure.data[: len(CATEGORIES)]) == 0
    session.test(n_boot=50)
    assert sum(len(d.x) for d in view.figure.data[: len(CATEGORIES)]) == n_before + 1
    click(view, *point_of(view, "concept:great"))
    assert session.focus == "concept:great"


def test_volcano_before_test_builds_and_fills_later():
    s = pa.AuditSession(pa.load_pairs(tiny.planted_pairs(20)), sae=False, cache_dir=False)
    view = VolcanoView(s)
    assert "session.test()" in view.info.value
    s.test(n_boot=20)
    assert sum(len(d.x) for d in view.figure.data[: len(CATEGORIES)]) > 0


def test_volcano_hover_text_is_escaped(hostile):
    view = VolcanoView(hostile)
    texts = [t for d in view.figure.data[: len(CATEGORIES)] for t in d.text]
    joined = "".join(texts)
    assert "<script" not in joined and "<img" not in joined
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in joined and "&lt;img src=x" in joined


def synthetic_results(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    d = rng.normal(0, 0.3, n)
    q = np.clip(np.exp(-np.abs(d) * rng.uniform(5, 40, n)), 1e-30, 1)
    return pd.DataFrame(
        {
            "feature": [f"sae:{i}" for i in range(n)],
            "source": "sae",
            "label": [f"tok{i % 97}" for i in range(n)],
            "n_active": rng.integers(1, 500, n),
            "delta_mean": d * 0.5,
            "d_z": d,
            "rank_biserial": np.tanh(d),
            "delta_len_ctrl": d * 0.4,
            "q": q,
            "direction": np.where(d > 0, "chosen", "rejected"),
        }
    )


def test_volcano_65536_features_as_binary_buffers():
    from prefaudit.features.encoded import EncodedFeatures, SidePooled

    n, d = 30, 65_536
    rng = np.random.default_rng(1)

    def side():
        import scipy.sparse as sp

        v = sp.random(n, d, density=0.001, format="csr", random_state=rng, dtype=np.float32)
        z = np.zeros(v.nnz, np.int32)
        return SidePooled(v, z, z, np.zeros((n, 4), np.float32), np.full(n, 10, np.int32), np.zeros(n, bool))

    s = pa.AuditSession(
        pa.load_pairs(tiny.planted_pairs(n)), sae="synthetic", concepts=False, cache_dir=False
    )
    s.encoded = EncodedFeatures(side(), side(), "max")
    s.results = synthetic_results(d)
    s.results_version += 1
    view = VolcanoView(s)
    assert sum(len(r) for r in view._rows) == d
    state = view.figure.get_state()
    for k in range(len(CATEGORIES)):
        for axis in ("x", "y"):
            assert isinstance(state["_widget_data"][k][axis]["buffer"], memoryview)
        assert len(state["_widget_data"][k]["text"]) == len(view._rows[k])
    last = max(range(len(CATEGORIES)), key=lambda k: len(view._rows[k]))
    click(view, last, len(view._rows[last]) - 1)
    assert s.focus == s.results["feature"].iloc[view._rows[last][-1]]
    pts = volcano_points(s.results)
    assert np.isfinite(pts["y"]).all()


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
    top = session.top_pairs("concept:length", by="abs_delta", n=4)
    assert [p["pair_id"] for p in wdg.pairs] == [str(x) for x in top["pair_id"]]
    wdg.set_state({"page": 2})
    nxt = session.top_pairs("concept:length", by="abs_delta", n=4, offset=8)
    assert [p["pair_id"] for p in wdg.pairs] == [str(x) for x in nxt["pair_id"]]
    wdg.set_state({"sort": "rejected"})
    assert wdg.page == 0
    by_rej = session.top_pairs("concept:length", by="rejected", n=4)
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
    real = session.top_pairs
    monkeypatch.setattr(session, "top_pairs", lambda *a, **k: calls.append(k) or real(*a, **k))
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
    tokens, acts = s.token_activations(p["position"], fid)["chosen"]
    segs = p["chosen"]["segments"]
    assert [t for t, _ in segs[: len(tokens)]] == list(tokens)
    np.testing.assert_allclose([a for _, a in segs[: len(tokens)]], acts, atol=1e-4)
    assert "".join(t for t, _ in segs) == s.data.df["chosen"].iloc[p["position"]]
    assert max(a for t, a in segs if a is not None) <= wdg.legend["max"] + 1e-9


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


# ---------------------------------------------------------------------- shaper
def test_shaper_rows_follow_selection_and_weights(session):
    view = ShaperView(session)
    assert view.rows == {} and view.empty.layout.display == "flex"
    session.select_feature("url")
    session.select_feature("length")
    assert list(view.rows) == ["concept:url", "concept:length"]
    assert [r.feature for r in view.row_box.children] == ["concept:url", "concept:length"]
    assert all(
        "pa-weight-row" in r._dom_classes and r.tag.feature == r.feature for r in view.row_box.children
    )
    session.set_weight("apology", -0.5)  # weighted but not selected: still has a row
    assert list(view.rows) == ["concept:url", "concept:length", "concept:apology"]
    session.set_selection([])
    assert list(view.rows) == ["concept:apology"]


def test_shaper_controls_send_intents_and_follow_state(session):
    session.select_feature("url")
    view = ShaperView(session)
    row = view.rows["concept:url"]
    row.slider.set_state({"value": -1.25})  # what a slider release sends
    assert session.weights == {"concept:url": -1.25}
    session.set_weight("url", 0.75)  # state down
    assert row.slider.value == 0.75
    row.verdict.set_state({"index": 1})  # "suppress"
    assert session.verdicts == {"concept:url": "suppress"} and session.weights["concept:url"] == -1.0
    assert row.slider.value == -1.0
    row.note.set_state({"value": "explains the length bias"})
    assert session.notes == {"concept:url": "explains the length bias"}
    session.set_verdict("url", "allow")
    assert row.verdict.value == "allow" and row.slider.value == 0.0
    row.remove.click()
    assert session.selection == [] and "concept:url" not in session.weights and view.rows == {}
    assert view.last_error is None


def test_shaper_widens_rather_than_clamps_a_large_weight(session):
    session.set_weight("url", 5.0)
    view = ShaperView(session)
    row = view.rows["concept:url"]
    assert row.slider.value == 5.0 and row.slider.max >= 5.0
    assert session.weights == {"concept:url": 5.0}


def test_shaper_add_box(session):
    view = ShaperView(session)
    view.add_box.set_state({"value": "flattery"})
    assert session.selection == ["concept:flattery"] and session.focus is None
    assert view.add_box.value == "" and "concept:flattery" in view.rows


def test_shaper_preview_shows_predict(session):
    session.select_feature("url")
    session.select_feature("flattery")
    view = ShaperView(session)
    p = view.preview
    version = p.version
    view.rows["concept:flattery"].slider.set_state({"value": -2.0})
    assert p.version == version + 1
    pred = session.predict(features=["concept:url", "concept:flattery"])
    assert [f["id"] for f in p.features] == ["concept:url", "concept:flattery"]
    np.testing.assert_allclose([f["after"] for f in p.features], pred["signal_after_z"])
    np.testing.assert_allclose([f["before"] for f in p.features], pred["signal_before_z"])
    margins = np.frombuffer(p.get_state()["margins"], dtype="<f4")
    np.testing.assert_allclose(margins, pred.attrs["margins"], rtol=1e-6)
    assert p.n_dominated == pred.attrs["n_dominated"] > 0 and p.n_pairs == 40
    assert p.features[1]["after"] < p.features[1]["before"]  # suppressing lowers the signal


def test_two_shapers_and_a_view_shown_twice_agree(session):
    a, b = ShaperView(session), ShaperView(session)
    session.select_feature("url")
    a.rows["concept:url"].slider.set_state({"value": 1.5})
    assert b.rows["concept:url"].slider.value == 1.5
    b.rows["concept:url"].verdict.set_state({"index": 2})  # "amplify"
    assert a.rows["concept:url"].verdict.value == "amplify"
    assert a.preview.features == b.preview.features
    # Displaying one view twice renders one model: the state is the widget's, shared.
    assert a.rows["concept:url"].slider.model_id == a.rows["concept:url"].slider.model_id


# ---------------------------------------------------------------------- dashboard
def test_dashboard_links_volcano_drilldown_and_shaper(session):
    dash = Dashboard(session)
    other = Dashboard(session)
    assert "prefaudit-dashboard" in dash._dom_classes
    assert {"prefaudit-volcano", "prefaudit-pairs", "prefaudit-shaper"} <= {
        c for v in (dash.volcano, dash.pairs, dash.shaper) for c in v._dom_classes
    }
    click(dash.volcano, *point_of(dash.volcano, "concept:url"))
    assert dash.pairs.widget.feature == "concept:url" and other.pairs.widget.feature == "concept:url"
    assert list(dash.shaper.rows) == ["concept:url"] == list(other.shaper.rows)
    dash.shaper.rows["concept:url"].slider.set_state({"value": -0.5})
    assert other.shaper.rows["concept:url"].slider.value == -0.5
    assert other.shaper.preview.features == dash.shaper.preview.features
    assert len(other.volcano.figure.data[SELECTED_TRACE].x) == 1


# ---------------------------------------------------------------------- hostile text everywhere
def test_no_view_puts_dataset_text_into_html_unescaped(hostile):
    dash = Dashboard(hostile)
    hostile.set_focus("concept:url")
    for value in html_values(dash):
        assert "<script" not in value and "<img" not in value and "javascript:" not in value
    rows = dash.shaper.rows
    assert rows["concept:url"].label.value == f"url {SCRIPT}"  # a Label: rendered as text
    assert rows["concept:url"].note.value == HOSTILE  # a Text input's value: never markup
    assert rows["concept:apology"].label.value == IMG
    assert {f["label"] for f in dash.shaper.preview.features} == {f"url {SCRIPT}", IMG}
    # Search: labels in dropdown options are option text, not HTML.
    dash.volcano.search.value = "onerror"
    assert hostile.focus == "concept:apology"
