"""The topic heatmap in real JupyterLab: clicking a cell filters the drill-down to that topic.

A concepts-only session of 40 planted pairs whose prompts fall in two clear topics (baking,
coding; ``tests/test_pair_edits.topic_rows``), with ``test(by="topic")`` run, so the dashboard
shows the heatmap at once. The click is a person's: hover the cell's centre until plotly's
hover label names the feature, then click; Python must see the topic filter and the focus,
and every pair card the drill-down then shows must belong to the clicked topic.
"""

from __future__ import annotations

import time

import pytest

from tests.browser.harness import expect

pytestmark = pytest.mark.browser

CELLS = [
    """
import prefaudit as pa
from tests.test_pair_edits import topic_rows

session = pa.AuditSession(pa.load_pairs(topic_rows(40)), sae=False, cache_dir=False)
session.test(n_boot=50)
session.test(by="topic", n_boot=50)
assignment = session.topics()["topic"].to_numpy()
topic_pairs = {t: sorted(str(p) for p in session.data.df["pair_id"][assignment == t]) for t in (0, 1)}
""",
    "dash = session.dashboard(page_size=8)\ndash",
]

# Page coordinates of the centre of cell (row, col) of the heatmap (trace 0).
_JS_CELL = """(gd, [row, col]) => {
  const fl = gd._fullLayout, r = gd.getBoundingClientRect();
  return [r.left + fl.xaxis._offset + fl.xaxis.l2p(col), r.top + fl.yaxis._offset + fl.yaxis.l2p(row)];
}"""


def click_cell(page, plot, row: int, col: int, expect_text: str, timeout: float = 20.0) -> str:
    """Hover the cell until its hover label shows ``expect_text``, then click it."""
    plot.scroll_into_view_if_needed()
    hover = plot.locator(".hoverlayer .hovertext").first
    deadline = time.monotonic() + timeout
    text = ""
    for k in range(1_000_000):
        x, y = plot.evaluate(_JS_CELL, [row, col])
        page.mouse.move(x + 3 + (k % 3), y + 3)
        page.mouse.move(x, y, steps=2)
        try:
            hover.wait_for(state="visible", timeout=1500)
            text = hover.text_content() or ""
            if expect_text in text:
                break
        except Exception:  # playwright TimeoutError: try again until the deadline
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no hover label with {expect_text!r} on cell ({row}, {col}); last {text!r}")
    page.mouse.click(x, y)
    return text


@pytest.mark.parametrize("jupyter", ["lab"], indirect=True)
def test_heatmap_cell_click_filters_drilldown(run_notebook, page, screens):
    nb = run_notebook(CELLS, timeout=240)
    heat = page.locator(".prefaudit-dashboard .prefaudit-heatmap")
    plot = heat.locator(".js-plotly-plot").first
    expect(plot).to_be_visible(timeout=90_000)  # plotly's FigureWidget module is large
    page.wait_for_function(
        "gd => gd._fullData && gd._fullData.length >= 1", arg=plot.element_handle(), timeout=90_000
    )
    expect(heat.locator(".pa-heatmap-filter")).to_contain_text("all pairs")
    row = nb.probe.eval("dash.heatmap.grid.features.index('concept:url')")
    topic_pairs = nb.probe.eval("topic_pairs")
    pairs_root = page.locator(".prefaudit-pairs")
    for col in (0, 1):
        topic = nb.probe.eval(f"dash.heatmap.grid.topics[{col}]")
        label = click_cell(page, plot, row, col, expect_text="concept:url")
        assert f"topic {topic}" in label
        nb.probe.wait_for("session.topic_filter", equals=topic)
        assert nb.probe.eval("session.focus") == "concept:url"
        expect(pairs_root.locator(".pa-feature")).to_have_text("concept:url")
        expect(heat.locator(".pa-heatmap-count")).to_have_attribute("data-count", "20")
        # every card the drill-down shows is a pair of the clicked topic
        wanted = set(topic_pairs[str(topic)])
        deadline = time.monotonic() + 30
        while True:
            shown = pairs_root.locator(".pa-pair").evaluate_all("els => els.map((e) => e.dataset.pairId)")
            if shown and set(shown) <= wanted:
                break
            assert time.monotonic() < deadline, f"drill-down shows {shown}, not pairs of topic {topic}"
            time.sleep(0.2)
        assert len(shown) == 8
        screens(f"topic-{topic}")
    heat.locator("button.pa-heatmap-clear").click()
    nb.probe.wait_for("session.topic_filter", equals=None)
    expect(heat.locator(".pa-heatmap-filter")).to_contain_text("all pairs")
