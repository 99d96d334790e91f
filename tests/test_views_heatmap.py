"""Topic heatmap: its grid is the per-topic table, a click filters the drill-down to the topic.

Clicks are simulated through the FigureWidget's JS→Python trait (``_js2py_pointsCallback``),
the path a browser click takes (``tests/views_fixtures.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

import prefaudit as pa
from prefaudit.views import Dashboard, TopicHeatmapView
from prefaudit.views.heatmap import CURRENT_TRACE
from prefaudit.views.topic_figures import SIGNIFICANT_MARK, topic_grid
from tests.test_pair_edits import topic_rows
from tests.views_fixtures import IMG, SCRIPT, html_values


@pytest.fixture(scope="module")
def topical() -> pa.AuditSession:
    s = pa.AuditSession(pa.load_pairs(topic_rows(40)), sae=False, cache_dir=False)
    s.test(n_boot=50)
    s.test(by="topic", n_boot=50)
    return s


@pytest.fixture()
def session(topical):
    yield topical
    topical.topics.set_filter(None)
    topical.set_focus(None)
    topical.set_label("concept:url", "")


def click_cell(view: TopicHeatmapView, row: int, col: int) -> None:
    # A heatmap point is addressed by [row, col]; x / y are the cell's coordinates.
    view.figure._js2py_pointsCallback = {
        "event_type": "plotly_click",
        "points": {"trace_indexes": [0], "point_indexes": [[row, col]], "xs": [col], "ys": [row]},
    }


# ---------------------------------------------------------------------- the grid
def test_grid_is_the_per_topic_table(session):
    long = session.topics.results("topic")
    grid = topic_grid(long, n_features=5)
    assert len(grid.features) == 5 and grid.topics == [0, 1]
    by = long.set_index(["feature", "topic"])
    for i, f in enumerate(grid.features):
        for j, t in enumerate(grid.topics):
            row = by.loc[(f, t)]
            tested = row["n_nonzero"] > 0
            assert np.isnan(grid.d_z[i, j]) == (not tested)
            if tested:
                assert grid.d_z[i, j] == row["d_z"]
            assert grid.significant[i, j] == (tested and row["q"] < 0.05)
    # rows with a significant cell come first, then by the largest |d_z| in a topic
    has_sig = grid.significant.any(axis=1)
    assert list(has_sig) == sorted(has_sig, reverse=True)
    # the URL effect lives in the baking topic only (the prompts planted it there)
    url = topic_grid(long, features=["concept:url"])
    baking = int(np.flatnonzero(["bake" in lab for lab in url.topic_labels])[0])
    assert url.significant[0].tolist() == [j == baking for j in range(2)]
    with pytest.raises(ValueError, match="not in the topic table"):
        topic_grid(long, features=["concept:nope"])
    with pytest.raises(ValueError, match="lacks column"):
        topic_grid(long.drop(columns=["q"]))


# ---------------------------------------------------------------------- the view
def test_heatmap_draws_the_grid_with_escaped_labels(session):
    session.set_label("concept:url", f"url {SCRIPT} {IMG}")
    view = TopicHeatmapView(session, n_features=6)
    trace = view.figure.data[0]
    assert np.allclose(np.asarray(trace.z, dtype=float), view.grid.d_z, equal_nan=True)
    marks = np.asarray(trace.text) == SIGNIFICANT_MARK
    assert (marks == view.grid.significant).all() and marks.any()
    ticks = list(view.figure.layout.yaxis.ticktext) + list(view.figure.layout.xaxis.ticktext)
    assert any("&lt;script&gt;" in t for t in ticks)
    assert not any("<script" in t or "<img" in t for t in ticks)
    assert any("bake" in t for t in view.figure.layout.xaxis.ticktext)  # topics labelled by their words


def test_clicking_a_cell_filters_the_drilldown_to_the_topic(session):
    dash = Dashboard(session, page_size=40)
    assert dash.heatmap is not None  # the per-topic table exists: shown at once
    heat, assignment = dash.heatmap, session.topics()["topic"].to_numpy()
    row = heat.grid.features.index("concept:url")
    for col in (0, 1):
        click_cell(heat, row, col)
        topic = heat.grid.topics[col]
        assert session.topic_filter == topic and session.focus == "concept:url"
        shown = [p["position"] for p in dash.pairs.widget.pairs]
        assert len(shown) == 20 and set(assignment[shown]) == {topic}
        ring = heat.figure.data[CURRENT_TRACE]
        assert list(ring.x) == [col] and list(ring.y) == [row]
        assert f"data-count='{(assignment == topic).sum()}'" in heat.filter_line.value
    heat.clear_button.click()
    assert session.topic_filter is None and len(dash.pairs.widget.pairs) == 40
    assert list(heat.figure.data[CURRENT_TRACE].x) == [] and "all pairs" in heat.filter_line.value


def test_without_a_topic_table_a_button_runs_the_tests():
    s = pa.AuditSession(pa.load_pairs(topic_rows(40)), sae=False, cache_dir=False)
    s.test(n_boot=20)
    dash = Dashboard(s)
    assert dash.heatmap is None and s.topics.results("topic") is None  # nothing computed unasked
    view = TopicHeatmapView(s, compute=False)
    assert view.figure is None and view.compute_button in view.children[1].children
    view.compute_button.click()
    assert s.topics.results("topic") is not None and view.figure is not None
    dash.topics_button.click()
    assert dash.heatmap is not None and dash.heatmap.figure is not None
    for value in html_values(view):
        assert "<script" not in value
