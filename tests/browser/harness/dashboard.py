"""prefaudit's dashboard on a page: wait until it is drawn, read its volcano's points.

``wait_for_dashboard(page, timeout_ms)``
    The dashboard, its plotly volcano with its traces drawn and the drill-down attached;
    returns the volcano's ``.js-plotly-plot`` locator.
``volcano_points(plot)``
    The feature points (traces 0-2) as ``VolcanoPoint`` (trace, index, feature id, effect x,
    page x / y), the feature id read from the point's hover text.
``most_isolated(points, prefix, exclude)``
    The point farthest from any other: the one a click reaches without a neighbour's hover.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .assertions import expect

_JS_POINTS = """(gd) => {
  const fl = gd._fullLayout, r = gd.getBoundingClientRect(), out = [];
  for (let t = 0; t < 3; t++) {
    const tr = gd._fullData[t];
    if (!tr || tr.visible !== true || !tr.x) continue;
    for (let i = 0; i < tr.x.length; i++) {
      const m = /<b>([^<]+)<\\/b>/.exec(String(tr.text[i]));
      out.push([t, i, m ? m[1] : null, tr.x[i], r.left + fl.xaxis._offset + fl.xaxis.l2p(tr.x[i]),
                r.top + fl.yaxis._offset + fl.yaxis.l2p(tr.y[i])]);
    }
  }
  return out;
}"""


class VolcanoPoint(NamedTuple):
    trace: int
    index: int
    feature: str | None
    effect: float
    x: float
    y: float


def wait_for_dashboard(page: Any, timeout_ms: int = 180_000) -> Any:
    """Wait for the dashboard and its volcano's traces; the volcano's ``.js-plotly-plot``."""
    expect(page.locator(".prefaudit-dashboard")).to_be_visible(timeout=timeout_ms)
    plot = page.locator(".prefaudit-volcano .js-plotly-plot").first
    expect(plot).to_be_visible(timeout=timeout_ms)  # the FigureWidget module is ~5 MB
    plot.evaluate(
        "gd => new Promise((ok) => { const f = () => gd._fullData && gd._fullData.length >= 3 ? ok() : setTimeout(f, 50); f(); })"
    )
    expect(page.locator(".prefaudit-pairs .pa-pairs")).to_be_attached(timeout=timeout_ms)
    return plot


def volcano_points(plot: Any) -> list[VolcanoPoint]:
    plot.scroll_into_view_if_needed()
    return [VolcanoPoint(*p) for p in plot.evaluate(_JS_POINTS)]


def most_isolated(points: list[VolcanoPoint], prefix: str = "", exclude: str | None = None) -> VolcanoPoint:
    """The ``prefix`` point (not ``exclude``) with the largest distance to its nearest neighbour."""
    candidates = [p for p in points if p.feature and p.feature.startswith(prefix) and p.feature != exclude]
    if not candidates:
        raise AssertionError(f"no {prefix!r} point in the volcano ({len(points)} points)")

    def gap(p: VolcanoPoint) -> float:
        return min((math.dist((p.x, p.y), (q.x, q.y)) for q in points if q is not p), default=math.inf)

    return max(candidates, key=gap)
