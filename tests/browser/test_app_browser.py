"""``prefaudit app``: the dashboard served by Voila works in a browser, offline.

The app runs as a person starts it (the ``prefaudit`` console script, a free port, no browser)
on the tiny planted pairs with the tiny real model and SAE (``tests/tiny.py``). The page must
load without any request leaving the machine (Voila's own template links FontAwesome from a
CDN; prefaudit's template does not), and a click on a volcano point must reach the kernel and
come back as the linked drill-down, the shaper row and the focus ring on the point.

The page loads plotly's 5 MB module 2.5 s late (``SLOW_PLOTLY``, as a busy machine does): no
page error may appear (anywidget's "Failed to initialize model" was plotly's figure missing
anywidget's 2 s), and the volcano must be as wide as its container (it was drawn at 700 px).
"""

from __future__ import annotations

import json
import re
import time
from contextlib import suppress

import pytest

from tests import tiny
from tests.browser import harness as h
from tests.browser.harness import expect

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def tiny_app(tiny_model_dir, tiny_sae_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("app")
    data = base / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in tiny.planted_pairs(40)) + "\n")
    args = [data, "--model", tiny_model_dir, "--sae", tiny_sae_dir, "--cache-dir", base / "cache"]
    app = h.AppServer(args, base)
    t0 = time.perf_counter()
    app.start(timeout=600)
    print(f"prefaudit app listening after {time.perf_counter() - t0:.1f} s (encode + test + save + Voila)")
    try:
        yield app
    finally:
        app.stop()
    assert app.orphans == [], f"kernels still running after the app was stopped: {app.orphans}"


def test_app_volcano_click_updates_drilldown_offline(tiny_app, page, page_log, network_guard, screens):
    page.add_init_script(h.SLOW_PLOTLY)
    t0 = time.perf_counter()
    page.goto(tiny_app.url, wait_until="commit", timeout=120_000)
    plot = h.wait_for_dashboard(page, 180_000)
    print(f"dashboard drawn {time.perf_counter() - t0:.1f} s after the page was opened")
    expect(page.get_by_text(re.compile(r"pairs\.jsonl: 40 pairs, \d+ features"))).to_be_visible()
    assert page.get_by_text("Traceback").count() == 0, tiny_app.log_tail()
    assert page.evaluate("window.__slowImports || 0") >= 1, "the slow-module simulation did not apply"
    widths = "gd => [gd._fullLayout.width, gd.closest('.prefaudit-volcano').getBoundingClientRect().width]"
    with suppress(Exception):  # the plot follows its container once in the page; else fail below
        page.wait_for_function(
            f"(gd) => {{ const [w, c] = ({widths})(gd); return Math.abs(w - c) <= 0.02 * c; }}",
            arg=plot.element_handle(),
            timeout=15_000,
        )
    width, container = plot.evaluate(widths)
    assert abs(width - container) <= 0.02 * container, f"volcano {width} px wide in a {container} px view"

    header = page.locator(".prefaudit-pairs .pa-feature")
    before = header.text_content() if header.count() else None
    target = h.most_isolated(h.volcano_points(plot), "sae:", exclude=before)
    trace, point, fid = target.trace, target.index, target.feature
    t0 = time.perf_counter()
    label = h.click_plotly_point(page, plot, trace, point, expect_text=fid)
    assert fid in label

    # Python got the click (intents up) and the linked views followed (state down).
    expect(header).to_have_text(fid)
    expect(page.locator(f'.prefaudit-shaper .pa-weight-row[data-feature="{fid}"]')).to_be_visible()
    root = page.locator(".prefaudit-pairs")
    expect(root.locator(".pa-legend")).to_have_attribute("data-kind", "sae")
    expect(root.locator(".pa-pair").first).to_be_visible()
    acts = root.locator(".pa-tok").evaluate_all("els => els.map((e) => Number(e.dataset.act))")
    assert acts and max(acts) > 0, "no token of the drill-down's pairs activates the clicked feature"
    print(f"drill-down showed {fid} {time.perf_counter() - t0:.1f} s after the hover")
    # ... and the figure still takes Python's messages: the focus ring sits on the clicked point
    page.wait_for_function(
        "([gd, x]) => gd.data[4] && gd.data[4].x.length >= 1 && Array.from(gd.data[4].x).includes(x)",
        arg=[plot.element_handle(), target.effect],
    )
    screens("clicked")
    assert page_log.page_errors == [], f"page errors: {page_log.page_errors}"

    assert network_guard.blocked == [], f"requests left the machine: {network_guard.blocked}"
