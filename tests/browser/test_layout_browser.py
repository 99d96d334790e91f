"""plotly figures in JupyterLab on a page where plotly's module is slow: points drawn, full width.

plotly's ``FigureWidget`` is an anywidget with a ~5 MB ES module, which took 2.6 s to import on
a quiet 2-core machine. anywidget gives a model 2 s to load; past that it logs "[anywidget]
Failed to initialize model" and drops the model's messages, which (as plotly sends the figure
after the comm opened) left volcanos with axes and no points. ``harness.SLOW_PLOTLY`` makes that
deterministic: any module over 1 MB finishes importing 2.5 s late (top-level await in a
wrapper module), the small ones are untouched.

One notebook, a concepts-only session of 40 planted pairs in two topics: a volcano inside an
ipywidgets ``VBox`` with the drill-down, then a dashboard with the topic heatmap. Each figure
must be drawn from its data (its points or cells are on screen, in their colours) and be as
wide as its container; a selection made in Python after the load must still reach the figure.
"""

from __future__ import annotations

import base64

import pytest

from tests.browser.harness import expect

pytestmark = pytest.mark.browser


CELLS = [
    """
import ipywidgets as widgets
import prefaudit as pa
from tests.test_pair_edits import topic_rows

session = pa.AuditSession(pa.load_pairs(topic_rows(40)), sae=False, cache_dir=False)
session.test(n_boot=50)
session.test(by="topic", n_boot=50)
volcano = session.volcano()
drawn = [len(volcano.figure.data[k].x) for k in range(3)]
session.select_feature(volcano.feature_at(2, 0))  # a restyle sent while plotly's module loads
""",
    "widgets.VBox([volcano, session.drilldown()])",
    "dash = session.dashboard()\ndash",
]

# Reddish and bluish pixels of a PNG, decoded by the page (the venv has no imaging library). The
# markers are #d62728 / #1f77b4 at opacity 0.8, darker where two overlap; the focus ring (orange)
# and the selection ring (#222) are neither.
_JS_RED_BLUE = """async (png) => {
  const img = await createImageBitmap(await (await fetch('data:image/png;base64,' + png)).blob());
  const c = new OffscreenCanvas(img.width, img.height), g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, img.width, img.height).data;
  let red = 0, blue = 0;
  for (let i = 0; i < d.length; i += 4) {
    const [r, gr, b] = [d[i], d[i + 1], d[i + 2]];
    if (r > 180 && gr < 110 && b < 110) red++;
    if (b > 150 && r < 130 && gr > 90 && gr < 170) blue++;
  }
  return [red, blue];
}"""
_JS_PLOT_AREA = """(gd) => { const fl = gd._fullLayout, r = gd.getBoundingClientRect();
  return {x: r.left + fl.xaxis._offset, y: r.top + fl.yaxis._offset, width: fl.xaxis._length, height: fl.yaxis._length}; }"""

_JS_FIGURE = """(gd) => ({
  traces: gd.data.length,
  points: gd.data.map((t) => (t.x ? t.x.length : 0)),
  height: gd._fullLayout.height,
  width: gd._fullLayout.width,
  container: gd.parentElement.getBoundingClientRect().width,
})"""


def red_blue_pixels(page, plot) -> tuple[int, int]:
    """Reddish and bluish pixels inside the plot area (not the legend), as the page shows it."""
    plot.scroll_into_view_if_needed()
    page.mouse.move(1, 1)  # no hover label
    png = base64.b64encode(page.screenshot(clip=plot.evaluate(_JS_PLOT_AREA))).decode()
    red, blue = page.evaluate(_JS_RED_BLUE, png)
    return red, blue


def wait_for(plot, condition: str, what: str, timeout_ms: int = 60_000) -> dict:
    """Wait until ``condition`` (JS, on the plot's graph div ``gd``) holds; the figure's state."""
    try:
        plot.page.wait_for_function(
            f"(gd) => !!(gd && gd._fullLayout && ({condition}))",
            arg=plot.element_handle(),
            timeout=timeout_ms,
        )
    except Exception as err:  # playwright's TimeoutError: say what the front end has instead
        state = plot.evaluate(_JS_FIGURE) if plot.count() else None
        raise AssertionError(
            f"{what}: not within {timeout_ms / 1000:.0f} s; the front end has {state}"
        ) from err
    return plot.evaluate(_JS_FIGURE)


@pytest.fixture(scope="module")
def slow_nb(lab_server, browser):
    """The notebook run in JupyterLab with plotly's module slowed down; ``nb.page_errors`` collects errors."""
    from tests.browser import harness as h

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    guard = h.NetworkGuard()
    guard.attach(context)
    context.add_init_script(h.SLOW_PLOTLY)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "console", lambda m: errors.append(m.text) if m.type == "error" and "anywidget" in m.text else None
    )
    nb = h.new_notebook(page, lab_server, CELLS, "layout")
    nb.guard = guard
    try:
        nb.open(run=True, timeout=240)
        nb.page_errors = errors  # a NotebookRun, so that conftest screenshots its page after each test
        yield nb
    finally:
        nb.close()
        context.close()
    guard.verify()


def test_volcano_in_a_vbox_draws_its_points_full_width(slow_nb, screens):
    nb, errors = slow_nb, slow_nb.page_errors
    page = nb.page
    vbox = page.locator(
        ".jp-OutputArea-output", has=page.locator(".prefaudit-pairs")
    ).first  # not the dashboard
    plot = vbox.locator(".prefaudit-volcano .js-plotly-plot").first
    expect(plot).to_be_visible(timeout=90_000)
    fig = wait_for(plot, "gd.data.length >= 5", "the volcano's 5 traces")
    screens("vbox", target=vbox)
    assert page.evaluate("window.__slowImports || 0") >= 1, "the slow-module simulation did not apply"

    drawn = nb.probe.eval("drawn")
    assert fig["traces"] == 5 and fig["points"][:3] == drawn, f"front end {fig}, Python {drawn}"
    assert fig["height"] == 460, f"drawn from the empty first state (height {fig['height']})"
    red, blue = red_blue_pixels(page, plot)
    assert drawn[1] and drawn[2], f"the session should have points of both colours: {drawn}"
    assert blue >= 20 and red >= 20, f"points not on screen: {blue} blue and {red} red pixels for {drawn}"
    assert abs(fig["width"] - fig["container"]) <= 4, (
        f"plot {fig['width']} px in a {fig['container']} px container"
    )
    assert not [e for e in errors if "Failed to initialize" in e], errors

    # The ring sent while plotly's module loaded was replayed, and later messages arrive too.
    assert fig["points"][4] == 1, f"selection rings: front end {fig['points'][4]}, Python 1"
    fid = nb.probe.eval("volcano.feature_at(1, 0)")
    nb.probe.exec(f"session.select_feature({fid!r})")
    wait_for(plot, "gd.data[4] && gd.data[4].x.length === 2", f"the selection ring on {fid}")
    screens("ringed", target=plot)


def test_dashboard_volcano_and_heatmap_draw_full_width(slow_nb, screens):
    nb, errors = slow_nb, slow_nb.page_errors
    page = nb.page
    out = page.locator(".prefaudit-dashboard").first
    volcano = out.locator(".prefaudit-volcano .js-plotly-plot").first
    heatmap = out.locator(".prefaudit-heatmap .js-plotly-plot").first
    expect(volcano).to_be_visible(timeout=90_000)
    expect(heatmap).to_be_visible(timeout=90_000)
    v = wait_for(volcano, "gd.data.length >= 5", "the dashboard volcano's 5 traces")
    hm = wait_for(heatmap, "gd.data.length >= 2", "the heatmap's 2 traces")
    screens("dashboard-volcano", target=volcano)
    screens("dashboard-heatmap", target=heatmap)

    drawn = nb.probe.eval("[len(dash.volcano.figure.data[k].x) for k in range(3)]")
    assert v["points"][:3] == drawn, f"front end {v}, Python {drawn}"
    red, blue = red_blue_pixels(page, volcano)
    assert blue >= 20 and red >= 20, f"points not on screen: {blue} blue and {red} red pixels for {drawn}"
    rows = nb.probe.eval("len(dash.heatmap.figure.data[0].z)")
    cells = heatmap.evaluate("gd => gd.data[0].z.length")
    assert rows > 0 and cells == rows, f"heatmap rows: front end {cells}, Python {rows}"
    for name, fig in (("volcano", v), ("heatmap", hm)):
        assert abs(fig["width"] - fig["container"]) <= 4, (
            f"{name}: {fig['width']} px in {fig['container']} px"
        )
    assert not [e for e in errors if "Failed to initialize" in e], errors
