"""Weight sliders: rows follow selection and weights, intents up, state down, the live preview."""

from __future__ import annotations

import numpy as np
import pytest

from prefaudit.views import ShaperView
from prefaudit.views.shaper import BIN_WIDTH, margin_bins
from tests import views_fixtures

session = views_fixtures.session  # shared fixtures


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
    session.decisions.set_selection([])
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
    pv = session.shaping.preview(features=["concept:url", "concept:flattery"])
    pred = pv.table
    assert [f["id"] for f in p.features] == ["concept:url", "concept:flattery"]
    np.testing.assert_allclose([f["after"] for f in p.features], pred["signal_after_z"])
    np.testing.assert_allclose([f["before"] for f in p.features], pred["signal_before_z"])
    # The histogram travels as its counts, not as the margins: exact, every pair counted.
    state = p.get_state()
    assert "margins" not in state and sum(state["bins"]) == 40 == p.n_pairs
    counts, _ = np.histogram(pv.margins, bins=len(p.bins), range=(-pv.cap, pv.cap))
    assert p.bins == counts.tolist() and len(p.bins) == 2 * round(pv.cap / BIN_WIDTH)
    assert p.n_dominated == pv.n_dominated > 0
    assert p.features[1]["after"] < p.features[1]["before"]  # suppressing lowers the signal


def test_margin_bins_are_exact_at_fixed_edges():
    cap = 4.0
    m = np.array([-4.0, -3.95, -1.0, -0.1, 0.0, 1e-12, 0.15, 3.99, 4.0])
    bins = margin_bins(m, cap)
    edges = np.linspace(-cap, cap, len(bins) + 1)
    assert bins.tolist() == np.histogram(m, bins=edges)[0].tolist() and bins.sum() == m.size
    assert bins[0] == 2 and bins[-1] == 2 and bins[len(bins) // 2] == 2  # [0, 0.1) holds 0 and 1e-12
    # The edges are fixed: the same margins give the same counts whatever else is in the set.
    assert margin_bins(m[2:5], cap)[len(bins) // 2 - 10] == margin_bins(m, cap)[len(bins) // 2 - 10]
    with pytest.raises(ValueError, match="1 of 2 margins are outside"):
        margin_bins(np.array([0.0, np.nan]), cap)


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


def test_preview_after_many_slider_moves_equals_a_full_recompute(session):
    from prefaudit import shaping

    for f in ("url", "flattery", "length"):
        session.select_feature(f, focus=False)
    view = ShaperView(session)
    rows = view.rows
    for fid, value in [
        ("concept:url", -2.0),
        ("concept:flattery", -1.0),
        ("concept:length", 2.5),
        ("concept:flattery", -0.35),
        ("concept:url", 3.0),
        ("concept:flattery", -1.0),
    ]:
        rows[fid].slider.set_state({"value": value})  # each drop moves one column of the kept sum
    m = session.matrix
    w = np.zeros(m.shape[1])
    for f, v in session.weights.items():
        w[session.space.column(f)] = v
    fresh = shaping.preview(m.delta.copy(), w, sd=m.sd, scale=m.margin_scale, incremental=False)
    p = view.preview
    assert p.bins == margin_bins(fresh.margins, fresh.cap).tolist()
    assert (p.n_dominated, p.n_capped) == (fresh.n_dominated, fresh.n_capped)
    assert p.n_capped > 0  # the sum went past the cap somewhere: the uncapped sum was needed
