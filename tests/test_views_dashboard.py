"""Dashboard: the views linked through the session, the lens-fit header, the drivers view, and no
dataset text rendered as HTML."""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser

import pandas as pd

from prefaudit.views import Dashboard, DriversView
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
class _Markup(HTMLParser):
    """Collects what a browser would treat as markup: tags, event handlers, script URLs."""

    ALLOWED = frozenset(
        {
            "b",
            "i",
            "span",
            "div",
            "code",
            "details",
            "summary",
            "pre",
            "br",
            "table",
            "thead",
            "tbody",
            "tr",
            "th",
            "td",
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.ALLOWED:
            self.problems.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or "javascript:" in (value or "").lower() or name in ("href", "src"):
                self.problems.append(f"{tag} {name}={value!r}")

    def handle_data(self, data):
        self.text.append(data)


def markup_of(value: str) -> _Markup:
    parser = _Markup()
    parser.feed(value)
    parser.close()
    return parser


def test_no_view_puts_dataset_text_into_html_unescaped(hostile):
    dash = Dashboard(hostile)
    hostile.set_focus("concept:url")
    values = html_values(dash)
    for value in values:
        assert "<script" not in value and "<img" not in value
        assert not markup_of(value).problems, value  # "javascript:" may appear only as text
    # the drivers table shows the hostile responses, as text
    table = markup_of(dash.drivers.table.value)
    assert any(SCRIPT in t for t in table.text) and any(IMG in t for t in table.text)
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


# ---------------------------------------------------------------------- drivers view
def test_drivers_buttons_act_on_the_listed_pairs(session, tmp_path):
    view = DriversView(session, top_k=4, export_path=tmp_path / "drivers.csv")
    assert view.exclude_button.disabled and "Select a feature" in view.head.value
    session.set_focus("concept:url")
    top = session.drivers("concept:url")["pair_id"].head(4).tolist()
    assert view.driver_ids() == top and view.table.value.count("class='pa-driver'") == 4
    what = session.edits.preview("concept:url", top)
    assert f"data-excluded='{what['signal_excluded']!r}'" in view.preview.value
    assert f"data-flipped='{what['signal_flipped']!r}'" in view.preview.value
    view.exclude_button.click()
    assert session.pair_edits == dict.fromkeys(top, "exclude")
    assert view.driver_ids() == top  # the edited drivers stay listed, so restore can find them
    assert view.table.value.count("data-edit='exclude'") == 4 and "excluded 4 pairs" in view.message.value
    assert f"data-signal='{what['signal_excluded']!r}'" in view.preview.value
    view.flip_button.click()
    assert session.pair_edits == dict.fromkeys(top, "flip")
    view.export_button.click()
    back = pd.read_csv(tmp_path / "drivers.csv", keep_default_na=False)
    assert back["pair_id"].tolist() == top and (back["edit"] == "flip").all()
    view.restore_button.click()
    assert session.pair_edits == {}
    view.top_k.value = 2
    assert view.table.value.count("class='pa-driver'") == 2 and view.driver_ids() == top[:2]
    pinned = DriversView(session, feature="concept:flattery")
    session.set_focus("concept:length")
    assert pinned.feature == "concept:flattery" and view.feature == "concept:length"


# ---------------------------------------------------------------------- lens fit header
def test_lens_header_concepts_only(session):
    dash = Dashboard(session)
    assert "pa-lens-none" in dash.lens.value and dash.lens_button.layout.display == "none"


def test_lens_header_measures_once_and_warns_below_07(tiny_session):
    tiny_session.test(n_boot=20)
    lazy = Dashboard(tiny_session, lens_fit=False)
    assert "not measured" in lazy.lens.value and not tiny_session.lens_fit.all()  # nothing read yet
    dash = Dashboard(tiny_session)
    fit = tiny_session.sae_fit()
    assert f"data-ev='{fit.explained_variance:.4f}'" in dash.lens.value
    assert "first dashboard build" in dash.lens.value
    assert ("pa-lens-warning" in dash.lens.value) == (fit.explained_variance < 0.7)
    # both sides of the threshold: a good fit has no warning, a poor one does
    good = dataclasses.replace(fit, explained_variance=0.91, warning=None)
    tiny_session.lens_fit.restore({(128, 0): good})
    again = Dashboard(tiny_session)
    assert "pa-lens-warning" not in again.lens.value and "first dashboard build" not in again.lens.value
    poor = dataclasses.replace(fit, explained_variance=0.42, warning="explained variance 0.42 (below 0.7)")
    tiny_session.lens_fit.restore({(128, 0): poor})
    lazy.lens_button.click()
    assert "pa-lens-warning" in lazy.lens.value and "0.42" in lazy.lens.value
