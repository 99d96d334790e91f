"""Volcano group mode and the drill-down's regex naming, in real JupyterLab with headless Chromium.

A tiny real model + SAE (``tests/tiny.py``) on 40 planted pairs, encoded and grouped in the
notebook (~1 minute on 2 busy cores); then a person's gestures: click the largest group's point
→ its member features are the points drawn; click a member → the drill-down shows it; "◀ all
groups" → one point per group again. A regex concept added without a description is named in
the drill-down header by a description, with its regular expression behind a ``<details>``.
"""

from __future__ import annotations

import pytest

from tests.browser import harness as h
from tests.browser.harness import expect

pytestmark = pytest.mark.browser

CELL = """
import prefaudit as pa
from tests import tiny

session = pa.AuditSession(
    pa.load_pairs(tiny.planted_pairs(40)), model={model!r}, sae={sae!r}, cache_dir={cache!r}, batch_size=8, shard_size=64
)
session.encode(progress=False)
tiny.plant_blocks(session)  # the tiny random SAE forms no co-firing cluster of its own
THE = session.add_concept("word_the", r"\\bthe\\b")
session.test(n_boot=100)
table = session.groups()
biggest = table.sort_values("n_members", ascending=False, kind="stable").iloc[0]
volcano = session.volcano(groups=True)
volcano
"""
# Its own cell: a FigureWidget displayed in one output with another widget (a VBox, or two
# display() calls) was drawn without its traces here (plotly 7.1, JupyterLab 4.6).
PAIRS_CELL = "pairs = session.drilldown()\npairs"


@pytest.mark.parametrize("jupyter", ["lab"], indirect=True)
def test_group_points_expand_into_features_and_regex_concepts_read_by_description(
    run_notebook, page, tiny_model_dir, tiny_sae_dir, tmp_path, screens
):
    nb = run_notebook(
        [
            CELL.format(model=str(tiny_model_dir), sae=str(tiny_sae_dir), cache=str(tmp_path / "cache")),
            PAIRS_CELL,
        ],
        timeout=300,
    )
    plot = page.locator(".prefaudit-volcano .js-plotly-plot").first
    expect(plot).to_be_visible(timeout=90_000)  # the FigureWidget module is ~5 MB
    n_groups = nb.probe.eval("sum(len(r) for r in volcano._rows)")
    page.wait_for_function(
        "([gd, n]) => gd._fullData && gd._fullData.slice(0, 3).reduce((s, t) => s + (t.x ? t.x.length : 0), 0) === n",
        arg=[plot.element_handle(), n_groups],
    )
    assert len(h.volcano_points(plot)) == n_groups == nb.probe.eval("len(table)")
    screens("groups", target=page.locator(".prefaudit-volcano"))

    # Click the largest group's point: its member features become the points drawn.
    gid = nb.probe.eval("biggest['group']")
    trace, point = nb.probe.eval(
        f"next((k, i) for k in range(3) for i in range(len(volcano._rows[k])) if volcano.feature_at(k, i) == {gid!r})"
    )
    label = h.click_plotly_point(page, plot, trace, point, expect_text=gid)
    assert "members" in label
    nb.probe.wait_for("volcano.expanded", equals=gid)
    # `expanded` is assigned before the redraw that reads it: wait for the redraw's message too
    # (the probe's requests can be served while the click's handler is still running).
    nb.probe.wait_for(f"volcano._drawn.message.startswith({gid!r})", equals=True)
    members = nb.probe.eval(
        "sorted(volcano.feature_at(k, i) for k in range(3) for i in range(len(volcano._rows[k])))"
    )
    assert members and set(members) <= set(nb.probe.eval("list(biggest['members'])"))
    page.wait_for_function(
        "([gd, n]) => gd._fullData.slice(0, 3).reduce((s, t) => s + (t.x ? t.x.length : 0), 0) === n",
        arg=[plot.element_handle(), len(members)],
    )
    back = page.locator(".prefaudit-volcano .pa-group-back")
    expect(back).to_be_visible()
    assert nb.probe.eval("session.selection") == []  # expanding selects nothing
    screens("expanded", target=page.locator(".prefaudit-volcano"))

    # A member is a feature: clicking it focuses it and the drill-down follows.
    t, i = h.most_isolated(h.volcano_points(plot))[:2]
    fid = nb.probe.eval(f"volcano.feature_at({t}, {i})")
    assert fid in members
    h.click_plotly_point(page, plot, t, i, expect_text=fid)
    nb.probe.wait_for("session.focus", equals=fid)
    expect(page.locator(".prefaudit-pairs .pa-feature")).to_have_text(fid)

    back.click()
    nb.probe.wait_for("volcano.expanded", equals=None)
    page.wait_for_function(
        "([gd, n]) => gd._fullData.slice(0, 3).reduce((s, t) => s + (t.x ? t.x.length : 0), 0) === n",
        arg=[plot.element_handle(), n_groups],
    )
    expect(back).to_be_hidden()

    # A regex concept added without a description: named by a description, the regex on demand.
    nb.probe.exec("session.set_focus(THE)")
    header = page.locator(".prefaudit-pairs .pa-header")
    expect(header.locator(".pa-feature")).to_have_text("concept:word_the")
    expect(header.locator(".pa-label")).to_have_text("matches of the 'word_the' pattern")
    pattern = header.locator("details.pa-pattern")
    expect(pattern.locator(".pa-pattern-text")).to_be_hidden()  # closed until asked for
    assert r"\bthe\b" not in (header.locator(".pa-label").text_content() or "")
    assert r"\bthe\b" not in (page.locator(".prefaudit-pairs .pa-legend-text").text_content() or "")
    pattern.locator("summary").click()
    expect(pattern.locator(".pa-pattern-text")).to_be_visible()
    expect(pattern.locator(".pa-pattern-text")).to_have_text(r"\bthe\b")
    screens("regex-header", target=page.locator(".prefaudit-pairs"))

    # A built-in regex concept: its description, and the legend's tooltip holds the pattern.
    nb.probe.exec("session.set_focus('concept:flattery')")
    expect(header.locator(".pa-label")).to_have_text("flattering opener praising the question or the user")
    legend = page.locator(".prefaudit-pairs .pa-legend-text")
    expect(legend).to_have_text("highlighted: flattering opener praising the question or the user")
    assert (legend.get_attribute("title") or "").startswith("regular expression: ^")
