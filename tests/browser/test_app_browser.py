"""``prefaudit app``: the dashboard served by Voila works in a browser, offline.

The app runs as a person starts it (the ``prefaudit`` console script, a free port, no browser)
on the tiny planted pairs with the tiny real model and SAE (``tests/tiny.py``). The page must
load without any request leaving the machine (Voila's own template links FontAwesome from a
CDN; prefaudit's template does not), and a click on a volcano point must reach the kernel and
come back as the linked drill-down and shaper row.
"""

from __future__ import annotations

import json
import re
import time

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


def test_app_volcano_click_updates_drilldown_offline(tiny_app, page, network_guard, screens):
    t0 = time.perf_counter()
    page.goto(tiny_app.url, wait_until="commit", timeout=120_000)
    plot = h.wait_for_dashboard(page, 180_000)
    print(f"dashboard drawn {time.perf_counter() - t0:.1f} s after the page was opened")
    expect(page.get_by_text(re.compile(r"pairs\.jsonl: 40 pairs, \d+ features"))).to_be_visible()
    assert page.get_by_text("Traceback").count() == 0, tiny_app.log_tail()

    header = page.locator(".prefaudit-pairs .pa-feature")
    before = header.text_content() if header.count() else None
    trace, point, fid, *_ = h.most_isolated(h.volcano_points(plot), "sae:", exclude=before)
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
    screens("clicked")

    assert network_guard.blocked == [], f"requests left the machine: {network_guard.blocked}"
