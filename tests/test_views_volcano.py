"""Volcano view: typed arrays, click / lasso / search, redraws, escaping, 65k features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import prefaudit as pa
from prefaudit.views import VolcanoView
from prefaudit.views.figures import CATEGORIES, volcano_points
from prefaudit.views.volcano import SEARCH_TRACE, SELECTED_TRACE
from tests import tiny, views_fixtures
from tests.tiny import plant_blocks
from tests.views_fixtures import click, lasso, point_of

session, hostile = views_fixtures.session, views_fixtures.hostile  # shared fixtures


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


# ---------------------------------------------------------------------- group mode
@pytest.fixture(scope="module")
def grouped(tiny_model_dir, tiny_sae_dir, tiny_cache_dir):
    s = pa.AuditSession(
        pa.load_pairs(tiny.planted_pairs(40)),
        model=tiny_model_dir,
        sae=tiny_sae_dir,
        cache_dir=tiny_cache_dir,
        batch_size=4,
        shard_size=16,
    )
    s.encode(progress=False)
    plant_blocks(s)  # the tiny random SAE forms no co-firing cluster of its own
    s.test(n_boot=50)
    s.groups()
    return s


@pytest.fixture()
def fresh(grouped):
    grouped.decisions.set_selection([])
    grouped.set_focus(None)
    return grouped


def messages(view) -> list[list[int]]:
    """Record the trace indexes of every restyle / update message the figure sends."""
    sent: list[list[int]] = []
    fig = view.figure
    restyle, update = fig._send_restyle_msg, fig._send_update_msg

    def spy(send):
        def wrapper(*args, **kwargs):
            sent.append(sorted(np.atleast_1d(kwargs.get("trace_indexes", [])).tolist()))
            return send(*args, **kwargs)

        return wrapper

    fig._send_restyle_msg, fig._send_update_msg = spy(restyle), spy(update)
    return sent


def test_group_mode_draws_one_point_per_group_sized_by_members(fresh):
    from prefaudit.views.figures import group_marker_size

    table = fresh.groups()
    view = VolcanoView(fresh, groups=True)
    drawn = [view.feature_at(k, i) for k in range(len(CATEGORIES)) for i in range(len(view._rows[k]))]
    plottable = table.loc[np.isfinite(table["d_z"]) & np.isfinite(table["q"]), "group"]
    assert sorted(drawn) == sorted(plottable) and len(drawn) == len(set(drawn))
    n_members = table.set_index("group")["n_members"]
    for k in range(len(CATEGORIES)):
        gids = [view.feature_at(k, i) for i in range(len(view._rows[k]))]
        size = np.atleast_1d(view.figure.data[k].marker.size)
        if gids:
            np.testing.assert_allclose(size, group_marker_size(n_members[gids].to_numpy()))
            np.testing.assert_allclose(view.figure.data[k].x, table.set_index("group").loc[gids, "d_z"])
    sizes = group_marker_size(np.array([1, 4, 20, 10_000]))
    assert sizes[0] < sizes[1] < sizes[2] < sizes[3] == 40  # bigger groups, bigger points, capped
    info = view.info.value
    assert (
        f"{table.attrs['n_unclustered']:,} unclustered SAE features" in info
        and f"{len(fresh.concepts)} concepts" in info
    )
    assert "group score" in view.figure.layout.xaxis.title.text
    assert view.group_mode.value and not view.group_mode.disabled


def test_clicking_a_group_expands_it_into_its_features_and_back(fresh):
    table = fresh.groups()
    view = VolcanoView(fresh, groups=True)
    big = table.sort_values("n_members", ascending=False).iloc[0]
    k = next(k for k in range(len(CATEGORIES)) if big["group"] in list(view._drawn.point_ids[k]))
    click(view, k, list(view._drawn.point_ids[k]).index(big["group"]))
    assert view.expanded == big["group"] and view.back.layout.display == "flex"
    assert fresh.selection == [] and fresh.focus is None  # expanding is view state, not an intent
    shown = [view.feature_at(t, i) for t in range(len(CATEGORIES)) for i in range(len(view._rows[t]))]
    res = fresh.results.set_index("feature")
    expected = [f for f in big["members"] if np.isfinite(res.loc[f, "d_z"]) and np.isfinite(res.loc[f, "q"])]
    assert sorted(shown) == sorted(expected) and len(shown) >= 2
    assert big["group"] in view.info.value and "other features are hidden" in view.info.value
    assert view.figure.layout.xaxis.title.text == "Cohen's d_z (paired, chosen − rejected)"
    member = shown[0]
    click(view, *point_of(view, member))  # a member is a feature: the click selects it
    assert fresh.selection == [member] and fresh.focus == member
    ring = view.figure.data[SELECTED_TRACE]
    assert len(ring.x) == 1 and np.isclose(ring.x[0], res.loc[member, "d_z"])

    view.back.click()
    assert view.expanded is None and view.back.layout.display == "none"
    assert len(view._rows[0]) + len(view._rows[1]) + len(view._rows[2]) == len(
        table.loc[np.isfinite(table["d_z"]) & np.isfinite(table["q"])]
    )
    # the selected member is ringed on its group's point, in the focus colour
    assert len(ring.x) == 1 and np.isclose(ring.x[0], big["d_z"])
    with pytest.raises(ValueError, match="Unknown group"):
        view.expand("group:9999")


def test_group_toggle_and_lasso_over_groups(fresh):
    view = VolcanoView(fresh, max_lasso=3)
    n_features = sum(len(r) for r in view._rows)
    view.group_mode.value = True
    table = fresh.groups()
    assert sum(len(r) for r in view._rows) <= len(table) < n_features
    points = [(k, i) for k in range(len(CATEGORIES)) for i in range(len(view._rows[k]))][:2]
    lasso(view, points)
    members = [f for k, i in points for f in table.set_index("group").loc[view.feature_at(k, i), "members"]]
    q = fresh.results.set_index("feature")["q"]
    assert fresh.selection == sorted(members, key=lambda f: q[f])[:3]
    view.expand(view.feature_at(*points[0]))
    view.group_mode.value = False  # off: every feature again, nothing expanded
    assert view.expanded is None and sum(len(r) for r in view._rows) == n_features
    assert not view.last_error


def test_group_mode_needs_an_sae(session):
    view = VolcanoView(session)
    assert view.group_mode.disabled and "concepts only" in view.group_mode.tooltip
    view.group_mode.value = True  # set from code anyway: the error is shown, the toggle goes back
    assert not view.group_mode.value and "concepts only" in str(view.last_error)
    with pytest.raises(ValueError, match="concepts only"):
        VolcanoView(session, groups=True)


def test_a_click_sends_only_the_ring_trace_and_a_label_only_its_trace(session):
    view = VolcanoView(session)
    sent = messages(view)
    click(view, *point_of(view, "concept:url"))
    assert sent and all(m == [SELECTED_TRACE] for m in sent)
    sent.clear()
    session.set_label("concept:apology", "said sorry")  # results_version: one trace's hover text changed
    trace, _ = point_of(view, "concept:apology")
    assert sent == [[trace]]
    assert any("said sorry" in t for t in view.figure.data[trace].text)
    sent.clear()
    session.set_focus("concept:url")  # focus already there: nothing to send
    assert sent == []


def test_a_click_answers_with_the_drilldown_first_and_rings_once(session):
    """The browser handles messages in order: the drill-down's page goes before the shaper's
    preview and the (slow to redraw) rings, and the rings go once per click."""
    from prefaudit.views import PairsView, ShaperView

    view = VolcanoView(session)
    shaper = ShaperView(session)  # observes the selection, built before the drill-down
    pairs = PairsView(session)
    order: list[str] = []
    fig = view.figure
    restyle, update = fig._send_restyle_msg, fig._send_update_msg
    names = {SELECTED_TRACE: "rings", SEARCH_TRACE: "search"}

    def spy(send):
        def wrapper(*args, **kwargs):
            order.extend(names.get(k, "points") for k in np.atleast_1d(kwargs.get("trace_indexes", [])))
            return send(*args, **kwargs)

        return wrapper

    fig._send_restyle_msg, fig._send_update_msg = spy(restyle), spy(update)
    pairs.widget.observe(lambda _c: order.append("pairs"), names="version")
    shaper.preview.observe(lambda _c: order.append("preview"), names="version")
    click(view, *point_of(view, "concept:url"))
    assert order == ["pairs", "preview", "rings"]
    assert session.focus == "concept:url" and session.selection == ["concept:url"]
    assert pairs.widget.feature == "concept:url" and "concept:url" in shaper.rows
    assert list(view.figure.data[SELECTED_TRACE].x) == [view._drawn.x[view._row("concept:url")]]
    order.clear()
    view.search.value = "flattery"  # one match: picked like a click
    assert order == ["pairs", "preview", "rings", "search"] and session.focus == "concept:flattery"
    order.clear()
    session.select_feature("concept:apology", focus=False)  # not a click: rings at once, as before
    assert sorted(order) == ["preview", "rings"] and not view.last_error
