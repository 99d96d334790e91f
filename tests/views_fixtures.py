"""Shared parts of the view tests (``tests/test_views_*.py``): sessions, hostile text, clicks.

``widget.get_state()`` / ``set_state({...})`` is exactly what a comm update does, and a plotly
click or lasso is simulated through the FigureWidget's JS→Python trait
(``_js2py_pointsCallback``), so the tests exercise the same paths as a browser.
"""

from __future__ import annotations

import ipywidgets as w
import numpy as np
import pytest

import prefaudit as pa
from prefaudit.views import VolcanoView
from tests import tiny

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
MARKDOWN = "**bold** [link](javascript:alert(3)) # header"
ENTITY = "&lt;b&gt; &amp; &#60;i&#62;"
HOSTILE = f"{SCRIPT} {IMG} {MARKDOWN} {ENTITY}"


def make_session(rows: list[dict] | None = None) -> pa.AuditSession:
    s = pa.AuditSession(pa.load_pairs(rows or tiny.planted_pairs(40)), sae=False, cache_dir=False)
    s.test(n_boot=50)
    return s


@pytest.fixture()
def session() -> pa.AuditSession:
    return make_session()


@pytest.fixture()
def hostile() -> pa.AuditSession:
    rows = tiny.planted_pairs(40)
    for r in rows[:3]:
        r["prompt"] = f"prompt {HOSTILE}"
        r["chosen"] = f"What a great question! {HOSTILE} See http://www.example.com/{SCRIPT}"
        r["rejected"] = f"Sorry, I cannot help. {HOSTILE}"
    s = make_session(rows)
    s.set_label("concept:url", f"url {SCRIPT}")
    s.set_label("concept:apology", IMG)
    s.set_note("concept:url", HOSTILE)
    s.select_feature("concept:url")
    s.select_feature("concept:apology", focus=False)
    s.set_weight("concept:url", -1.0)
    return s


def click(view: VolcanoView, trace: int, point: int) -> None:
    view.figure._js2py_pointsCallback = {
        "event_type": "plotly_click",
        "points": {"trace_indexes": [trace], "point_indexes": [point], "xs": [0.0], "ys": [0.0]},
    }


def lasso(view: VolcanoView, points: list[tuple[int, int]]) -> None:
    view.figure._js2py_pointsCallback = {
        "event_type": "plotly_selected",
        "points": {
            "trace_indexes": [t for t, _ in points],
            "point_indexes": [p for _, p in points],
            "xs": [0.0] * len(points),
            "ys": [0.0] * len(points),
        },
        "selector": {"type": "lasso", "selector_state": {"xs": [0, 1, 1], "ys": [0, 0, 1]}},
    }


def point_of(view: VolcanoView, fid: str) -> tuple[int, int]:
    row = int(np.flatnonzero(view.session.results["feature"].to_numpy() == fid)[0])
    for k, rows in enumerate(view._rows):
        hits = np.flatnonzero(rows == row)
        if hits.size:
            return k, int(hits[0])
    raise AssertionError(f"{fid} is not drawn")


def html_values(widget: w.Widget) -> list[str]:
    """Every HTML string an ipywidgets HTML/HTMLMath in the tree would render as markup."""
    out = []
    if isinstance(widget, (w.HTML, w.HTMLMath)):
        out.append(widget.value)
    for child in getattr(widget, "children", ()):
        out.extend(html_values(child))
    return out
