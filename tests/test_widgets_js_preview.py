"""The shaper's preview module (``widgets/shaper_preview.js``) in headless Chromium: the histogram of the
bins it is sent, the signal rows, capped margins; the harness is that of ``tests/test_widgets_js.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_widgets_js import IMG, SCRIPT, WIDGETS, browser, load, page

__all__ = ["browser", "page"]  # fixtures used by name below


def preview_state(margins: list[float], **over) -> dict:
    """What a ShaperPreview sends for ``margins``: their bin counts (views.shaper.margin_bins)."""
    from prefaudit.views.shaper import margin_bins

    state = {
        "features": [
            {"id": "concept:url", "label": f"links {SCRIPT}", "weight": -1.5, "before": 1.2, "after": 0.3},
            {"id": "sae:3", "label": IMG, "weight": 0.0, "before": -0.4, "after": -0.5},
        ],
        "bins": margin_bins(np.asarray(margins), 4.0).tolist(),
        "cap": 4.0,
        "n_pairs": len(margins),
        "n_dominated": sum(m <= -1 for m in margins),  # dominated: m <= -τ (prefaudit.shaping)
        "threshold": 1.0,
        "version": 1,
    }
    state.update(over)
    return state


RENDER_PREVIEW = """async (state) => {
  window.model = window.fakeModel(state);
  window.cleanup = await window.mod.render({ model: window.model, el: document.getElementById("host") });
}"""

# The bars drawn: their count attributes, in order, and the axis' end labels.
BARS = """() => ({
  bars: [...document.querySelectorAll(".pa-preview .pa-bin")].map((b) => +b.dataset.count),
  ticks: [...document.querySelectorAll(".pa-preview .pa-margins .pa-tick")].map((t) => t.textContent),
})"""


@pytest.mark.browser
def test_preview_draws_signal_histogram_and_counts_redraws(page):
    load(page, "shaper_preview.js")
    margins = [-2.5, -1.2, -0.3, 0.0, 0.2, 0.9, 1.1, 3.0]
    page.evaluate(RENDER_PREVIEW, preview_state(margins))
    out = page.evaluate(
        """() => {
      const root = document.querySelector(".pa-preview");
      return {
        version: root.dataset.version,
        rows: [...root.querySelectorAll(".pa-signal-row")].map((g) => g.dataset.feature),
        names: [...root.querySelectorAll(".pa-signal-row .pa-name")].map((t) => t.textContent),
        bins: [...root.querySelectorAll(".pa-bin")].length,
        dominated: root.querySelector(".pa-dominated").dataset.count,
        sentence: root.querySelector(".pa-dominated").textContent,
        zones: [...root.querySelectorAll(".pa-dominated-zone")].map((r) => +r.getAttribute("x")),
        lines: root.querySelectorAll(".pa-threshold").length,
        capped: root.querySelectorAll(".pa-capped").length,
        injected: root.querySelectorAll("script, img, foreignObject").length,
      };
    }"""
    )
    assert out["version"] == "1" and out["rows"] == ["concept:url", "sae:3"]
    assert out["names"][1].startswith("sae:3 <img") and out["injected"] == 0
    assert out["bins"] >= 5 and out["dominated"] == "2"
    # Only the dominated side (m <= -τ, left of the axis) is shaded, and the sentence says what
    # filter and flip would do with those pairs.
    assert out["zones"] == [0] and out["lines"] == 1 and out["capped"] == 0
    assert out["sentence"].startswith("2 of 8 pairs (25.0%) have margin ≤ −1")
    assert "filter would drop them, flip would swap them" in out["sentence"]
    again = page.evaluate(
        """() => {
      window.model.state.n_dominated = 0;
      window.model.trigger("change:version");
      window.model.trigger("change:version");
      const root = document.querySelector(".pa-preview");
      return [root.dataset.version, root.querySelector(".pa-dominated").dataset.count];
    }"""
    )
    assert again == ["3", "0"]


@pytest.mark.browser
def test_preview_reports_capped_margins(page):
    load(page, "shaper_preview.js")
    page.evaluate(RENDER_PREVIEW, preview_state([-4.0, -4.0, 0.5], n_capped=2, cap=4.0))
    out = page.evaluate(
        """() => { const c = document.querySelector(".pa-preview .pa-capped");
                   return [c.dataset.count, c.textContent]; }"""
    )
    assert out == ["2", "2 pair margins reached the cap of ±4 logits."]


@pytest.mark.browser
def test_preview_histogram_draws_the_bins_it_is_sent(page):
    """Bars are the sent counts (merged in pairs past 40 bars): every margin counted, axis fitted."""
    load(page, "shaper_preview.js")
    narrow = [-1.95, -1.2, -0.3, 0.0, 0.0, 0.2, 0.9, 1.95]  # within ±2τ: 40 bars of 0.1
    page.evaluate(RENDER_PREVIEW, preview_state(narrow))
    out = page.evaluate(BARS)
    assert sum(out["bars"]) == len(narrow) and max(out["bars"]) == 2
    assert out["ticks"][0] == "-2.00" and out["ticks"][-1] == "+2.00"
    wide = [-4.0, -4.0, -3.05, 0.0, 0.05, 2.5, 4.0]  # out to the cap: 80 bins shown as 40 bars
    page.evaluate("() => window.cleanup()")
    page.evaluate(RENDER_PREVIEW, preview_state(wide, n_capped=3))
    out = page.evaluate(BARS)
    assert sum(out["bars"]) == len(wide) and out["bars"][0] == 2  # [-4, -3.8): both capped pairs
    assert out["ticks"][0] == "-4.00" and out["ticks"][-1] == "+4.00"
    assert len(page.query_selector_all(".pa-preview .pa-bin")) <= 40


@pytest.mark.browser
def test_preview_shown_bins_merge_exactly(page):
    src = (WIDGETS / "shaper_preview.js").read_text()
    result = page.evaluate(
        """async (src) => {
      const m = await window.loadModule(src);
      const bins = Array.from({ length: 80 }, (_, k) => k);   // 0 … 79 in bins of 0.1 over ±4
      const all = m.shownBins(bins, 4, 1);
      const near = new Array(80).fill(0); near[35] = 3; near[44] = 4; // within ±2: no merging
      const some = m.shownBins(near, 4, 1);
      const mid = new Array(80).fill(0); mid[11] = 5;                // reaches -2.9: ±3.0 in pairs
      const three = m.shownBins(mid, 4, 1);
      return { all: [all.extent, all.counts.length, all.counts[0], all.counts.reduce((a, b) => a + b, 0)],
               some: [some.extent, some.counts.length, some.counts[15], some.counts[24]],
               three: [three.extent, three.counts.length, three.counts.reduce((a, b) => a + b, 0)] };
    }""",
        src,
    )
    assert result["all"] == [4, 40, 1, sum(range(80))]
    assert result["some"] == [2, 40, 3, 4]
    assert result["three"] == [3, 30, 5]


@pytest.mark.browser
def test_preview_with_no_features_says_so(page):
    load(page, "shaper_preview.js")
    page.evaluate(RENDER_PREVIEW, preview_state([0.0] * 5, features=[]))
    text = page.evaluate("() => document.querySelector('.pa-preview .pa-empty').textContent")
    assert "Select features" in text
