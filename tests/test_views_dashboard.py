"""Dashboard: the three views linked through the session, and no dataset text rendered as HTML."""

from __future__ import annotations

from prefaudit.views import Dashboard
from prefaudit.views.volcano import SELECTED_TRACE
from tests import views_fixtures
from tests.views_fixtures import HOSTILE, IMG, SCRIPT, click, html_values, point_of

session, hostile = views_fixtures.session, views_fixtures.hostile  # shared fixtures


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


def test_dashboard_plans_a_run_on_demand(tiny_session):
    tiny_session.test(n_boot=50)
    dash = Dashboard(tiny_session)
    assert dash.plan.value == ""  # nothing is tokenised until asked
    dash.plan_button.click()
    plan = tiny_session.plan_training()
    assert "pa-plan-summary" in dash.plan.value and plan.summary().split(" · ")[0] in dash.plan.value
