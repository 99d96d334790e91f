"""Gestures that work reliably on these pages: clicking a plotly point, dragging a slider.

``click_plotly_point`` / ``drag_slider``
    The reliable interaction recipes: hover the point's centre, wait for the hover label, click;
    drag an ipywidgets noUi handle and poll Python until it equals the final readout.
"""

from __future__ import annotations

import re
import time
from typing import Any

from .kernel import KernelProbe

_JS_POINT_XY = """(gd, [trace, point]) => {
  const fl = gd._fullLayout;
  const tr = gd._fullData[trace];
  if (!fl || !tr) return null;
  const axis = (id, letter) => fl[letter + 'axis' + (id && id.length > 1 ? id.slice(1) : '')];
  const xa = axis(tr.xaxis, 'x');
  const ya = axis(tr.yaxis, 'y');
  const x = tr.x[point];
  const y = tr.y[point];
  if (x === undefined || y === undefined) return null;
  const r = gd.getBoundingClientRect();
  return [r.left + xa._offset + xa.l2p(xa.d2l(x)), r.top + ya._offset + ya.l2p(ya.d2l(y))];
}"""


def plotly_point_position(plot: Any, trace: int, point: int) -> tuple[float, float]:
    """Page coordinates of point ``point`` of trace ``trace`` in the plotly figure under ``plot``."""
    gd = plot.locator(".js-plotly-plot").first if not _is_plot(plot) else plot
    gd.scroll_into_view_if_needed()
    xy = gd.evaluate(_JS_POINT_XY, [trace, point])
    if xy is None:
        raise AssertionError(f"plotly figure has no point {point} in trace {trace}")
    return float(xy[0]), float(xy[1])


def _is_plot(locator: Any) -> bool:
    return bool(locator.evaluate("el => el.classList.contains('js-plotly-plot')"))


def click_plotly_point(
    page: Any, plot: Any, trace: int, point: int, *, expect_text: str | None = None, timeout: float = 15.0
) -> str:
    """Click a plotly point the way a person does: hover its centre, wait for the label, click.

    Plotly points sit under a drag layer (and scattergl points are pixels of a canvas), so the
    click must land on the point's coordinates once plotly has registered the hover. Returns the
    hover label's text; ``expect_text`` must be in it (guards against clicking a neighbour).
    """
    x, y = plotly_point_position(plot, trace, point)
    hover = plot.locator(".hoverlayer .hovertext").first
    deadline = time.monotonic() + timeout
    text = ""
    for k in range(1_000_000):
        # hover is driven by mousemove: come from a slightly different spot each try
        page.mouse.move(x + 4 + (k % 3), y + 4)
        page.mouse.move(x, y, steps=2)
        try:
            hover.wait_for(state="visible", timeout=1500)
            text = hover.text_content() or ""
            if expect_text is None or expect_text in text:
                break
        except Exception:  # playwright TimeoutError: try again until the deadline
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no hover label{f' with {expect_text!r}' if expect_text else ''} at point {point} of trace {trace} (last: {text!r})"
            )
        x, y = plotly_point_position(plot, trace, point)  # the layout may still have been settling
    page.mouse.click(x, y)
    return text


def _parse_number(text: str) -> float:
    m = re.search(r"[-+−]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?", text.replace("−", "-"))
    if not m:
        raise AssertionError(f"slider readout {text!r} is not a number")
    return float(m.group(0))


def drag_slider(
    page: Any,
    slider: Any,
    value: float,
    *,
    probe: KernelProbe | None = None,
    expr: str | None = None,
    steps: int = 12,
    timeout: float = 30.0,
) -> float:
    """Drag an ipywidgets slider's noUi handle to ``value``; returns the final readout.

    ``slider`` is a locator of (or inside which is) one ipywidgets slider. The handle is dropped
    where ``value`` lies on the track (the slider's own range, read from its noUiSlider). With
    ``probe`` and ``expr``, wait until Python's ``expr`` equals the final readout — with
    ``continuous_update`` Python sees intermediate values, so "changed" is not enough.
    """
    target = slider.locator(".noUi-target").first
    handle = slider.locator(".noUi-handle").first
    target.scroll_into_view_if_needed()
    rng = target.evaluate(
        "el => { const r = el.noUiSlider.options.range; const v = (x) => Array.isArray(x) ? x[0] : x; return [v(r.min), v(r.max)]; }"
    )
    lo, hi = float(rng[0]), float(rng[1])
    if not lo <= value <= hi:
        raise ValueError(f"{value} is outside the slider's range [{lo}, {hi}]")
    track = target.bounding_box()
    hb = handle.bounding_box()
    if track is None or hb is None:
        raise AssertionError("slider is not visible")
    hx, hy = hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2
    tx = track["x"] + (value - lo) / (hi - lo) * track["width"]
    page.mouse.move(hx, hy)
    page.mouse.down()
    page.mouse.move(tx, hy, steps=steps)
    page.mouse.up()
    readout_el = slider.locator(".widget-readout").first
    readout = _parse_number(readout_el.text_content() or "")
    if probe is not None and expr is not None:
        decimals = len((readout_el.text_content() or "").strip().partition(".")[2])
        tol = 0.5 * 10 ** (-decimals) + 1e-9
        probe.wait_for(expr, lambda v: v is not None and abs(float(v) - readout) <= tol, timeout=timeout)
    return readout
