"""prefaudit's views in real JupyterLab and Notebook 7: clicks, drags and typing reach the session.

One dashboard per front end (``dash_nb``) on a concepts-only session of the tiny planted pairs,
with hostile text planted in pair 0 and in a label. Each test first puts the session into the
state it needs through the kernel probe, so the tests do not depend on each other's order.
``test_sae_feature_drilldown_shades_tokens`` uses a tiny real model + SAE instead (JupyterLab
only: it imports torch and encodes, ~1 minute on 2 busy cores).

DOM hooks: ``prefaudit/views/__init__.py``.
"""

from __future__ import annotations

import json
import math

import pytest

from tests.browser import harness as h
from tests.browser.harness import expect

pytestmark = pytest.mark.browser

HOSTILE_SCRIPT = "<script>window.__pwned=1</script>"
HOSTILE_IMG = '<img src=x onerror="window.__pwned=1">'
HOSTILE_LABEL = '<img src=y onerror="window.__pwned=2"><b>apology</b>'
SEARCH_LABEL = "links to websites"

SESSION_CELL = f"""
import prefaudit as pa
from tests import tiny

HOSTILE_SCRIPT = {HOSTILE_SCRIPT!r}
HOSTILE_IMG = {HOSTILE_IMG!r}
rows = tiny.planted_pairs(40)
rows[0]["prompt"] = f"hostile prompt {{HOSTILE_SCRIPT}} and {{HOSTILE_IMG}} end"
rows[0]["chosen"] = f"What a great question! {{HOSTILE_IMG}} See http://www.example.com for more. {{HOSTILE_SCRIPT}}"
rows[0]["rejected"] = f"Sorry, I cannot help. {{HOSTILE_SCRIPT}}"
session = pa.AuditSession(pa.load_pairs(rows), sae=False, cache_dir=False)
session.test()
session.set_label("concept:url", {SEARCH_LABEL!r})
session.set_label("concept:apology", {HOSTILE_LABEL!r})
HOSTILE_PAIR = str(session.data.df["pair_id"].iloc[0])
"""

DASHBOARD_CELL = "dash = session.dashboard()\ndash"


def isolated_points(plot) -> list[tuple[int, int]]:
    """(trace, point) of the volcano's feature points, the most isolated first (safe to click)."""
    pts = h.volcano_points(plot)
    assert len(pts) >= 3, f"the volcano shows only {len(pts)} points"

    def gap(p):
        return min(math.dist((p.x, p.y), (q.x, q.y)) for q in pts if q is not p)

    return [(p.trace, p.index) for p in sorted(pts, key=gap, reverse=True)]


@pytest.fixture(scope="module", params=["lab", "notebook"])
def dash_nb(request, shared_notebook):
    server = request.getfixturevalue(f"{request.param}_server")
    with shared_notebook(server, [SESSION_CELL, DASHBOARD_CELL], f"views-{request.param}") as nb:
        page = nb.page
        expect(page.locator(".prefaudit-dashboard")).to_be_visible(timeout=60_000)
        plot = page.locator(".prefaudit-volcano .js-plotly-plot").first
        expect(plot).to_be_visible(timeout=90_000)  # the FigureWidget module is ~5 MB
        plot.evaluate(
            "gd => new Promise((ok) => { const f = () => gd._fullData && gd._fullData.length >= 3 ? ok() : setTimeout(f, 50); f(); })"
        )
        expect(page.locator(".prefaudit-pairs .pa-pairs")).to_be_attached()
        expect(page.locator(".prefaudit-shaper .pa-preview")).to_be_attached()
        yield nb


def focus_via_probe(nb, fid: str) -> None:
    """Put the session's focus on ``fid`` and wait until the drill-down shows it."""
    nb.probe.exec(f"session.set_focus({fid!r})")
    expect(nb.page.locator(".prefaudit-pairs .pa-feature")).to_have_text(fid)


def test_volcano_click_changes_drilldown(dash_nb, screens):
    nb, page = dash_nb, dash_nb.page
    plot = page.locator(".prefaudit-volcano .js-plotly-plot").first
    header = page.locator(".prefaudit-pairs .pa-feature")
    for trace, point in isolated_points(plot)[:2]:
        fid = nb.probe.eval(f"dash.volcano.feature_at({trace}, {point})")
        other = next(f for f in ("concept:length", "concept:url") if f != fid)
        focus_via_probe(nb, other)
        version = page.locator(".prefaudit-pairs .pa-pairs").get_attribute("data-version")

        label = h.click_plotly_point(page, plot, trace, point, expect_text=fid)
        assert fid in label

        nb.probe.wait_for("session.focus", equals=fid)
        # the drill-down is answered first (focus), the selection follows (VolcanoView.pick)
        nb.probe.wait_for("session.selection", lambda sel: fid in sel)
        expect(header).to_have_text(fid)
        expect(page.locator(".prefaudit-pairs .pa-pairs")).not_to_have_attribute(
            "data-version", version or ""
        )
        expect(page.locator(".prefaudit-pairs .pa-pair").first).to_be_visible()
        # the click also gave the feature a row in the shaper
        expect(page.locator(f'.prefaudit-shaper .pa-weight-row[data-feature="{fid}"]')).to_be_visible()
        screens(f"clicked-{fid.replace(':', '-')}")


def test_every_volcano_point_is_clickable(dash_nb):
    """No drawn point is covered by another element (a neighbouring panel, a toolbar)."""
    page = dash_nb.page
    plot = page.locator(".prefaudit-volcano .js-plotly-plot").first
    plot.scroll_into_view_if_needed()
    page.mouse.move(1, 1)  # no hover label
    covered = plot.evaluate(
        "(gd, pts) => pts.filter(([t, i, x, y]) => { const e = document.elementFromPoint(x, y);"
        " return !(e && gd.contains(e)); }).map(([t, i, x, y]) => [t, i, Math.round(x), Math.round(y)])",
        [[p.trace, p.index, p.x, p.y] for p in h.volcano_points(plot)],
    )
    box = plot.bounding_box()
    assert not covered, f"points [trace, index, x, y] covered or off-screen: {covered}; plot box {box}"


def test_slider_drag_updates_weight_and_preview(dash_nb, screens):
    nb, page = dash_nb, dash_nb.page
    fid = "concept:length"
    nb.probe.exec(f"session.set_weight({fid!r}, 0.0); session.select_feature({fid!r}, focus=False)")
    row = page.locator(f'.prefaudit-shaper .pa-weight-row[data-feature="{fid}"]')
    expect(row).to_be_visible()
    preview = page.locator(".prefaudit-shaper .pa-preview")
    signal = preview.locator(f'.pa-signal-row[data-feature="{fid}"] .pa-value')
    expect(signal).to_be_visible()
    # the page shows Python's latest preview (weight 0) before the drag
    expect(preview).to_have_attribute("data-model-version", str(nb.probe.eval("dash.shaper.preview.version")))
    version_before = int(preview.get_attribute("data-version"))
    signal_before = signal.text_content()

    readout = h.drag_slider(
        page, row.locator(".pa-weight"), -1.5, probe=nb.probe, expr=f"session.weights.get({fid!r}, 0.0)"
    )
    assert -1.75 <= readout <= -1.25, f"dropped at -1.5, readout says {readout}"
    assert nb.probe.eval(f"session.weights[{fid!r}]") == pytest.approx(readout, abs=0.006)

    page.wait_for_function(
        "([el, v]) => Number(el.dataset.version) > v", arg=[preview.element_handle(), version_before]
    )
    expect(preview).to_have_attribute("data-model-version", str(nb.probe.eval("dash.shaper.preview.version")))
    assert signal.text_content() != signal_before, "the predicted signal did not change with the weight"
    screens("after-drag", target=page.locator(".prefaudit-shaper"))


def test_search_label_selects_feature(dash_nb, screens):
    nb, page = dash_nb, dash_nb.page
    target = "concept:url"
    nb.probe.exec(f"session.decisions.deselect({target!r})")
    focus_via_probe(nb, "concept:length")
    assert target not in nb.probe.eval("session.selection")

    box = page.locator(".prefaudit-volcano .pa-search input")
    box.fill(SEARCH_LABEL)
    box.press("Enter")

    nb.probe.wait_for("session.focus", equals=target)
    assert target in nb.probe.eval("session.selection")
    expect(page.locator(".prefaudit-pairs .pa-feature")).to_have_text(target)
    expect(page.locator(".prefaudit-pairs .pa-label")).to_have_text(SEARCH_LABEL)
    screens("searched")


def test_hostile_text_renders_literally(dash_nb, screens):
    nb, page = dash_nb, dash_nb.page
    pair_id = nb.probe.eval("HOSTILE_PAIR")
    focus_via_probe(nb, "concept:url")
    card = page.locator(f'.prefaudit-pairs .pa-pair[data-pair-id="{pair_id}"]')
    expect(card).to_be_visible()
    # The literal markup is the visible text; no element was made from it.
    expect(card.locator(".pa-prompt")).to_contain_text(
        f"hostile prompt {HOSTILE_SCRIPT} and {HOSTILE_IMG} end"
    )
    expect(card.locator(".pa-chosen")).to_contain_text(HOSTILE_IMG)
    expect(card.locator(".pa-chosen")).to_contain_text(HOSTILE_SCRIPT)
    expect(card.locator(".pa-rejected")).to_contain_text(HOSTILE_SCRIPT)
    assert card.locator("img, script").count() == 0
    screens("hostile-pair", target=card)

    # A label is dataset-adjacent text too: the shaper row and the drill-down header show it as text.
    nb.probe.exec("session.select_feature('concept:apology')")
    expect(page.locator(".prefaudit-pairs .pa-label")).to_have_text(HOSTILE_LABEL)
    expect(page.locator('.pa-weight-row[data-feature="concept:apology"] .pa-flabel')).to_have_text(
        HOSTILE_LABEL
    )
    assert page.locator(".prefaudit-dashboard img[src='x'], .prefaudit-dashboard img[src='y']").count() == 0

    # Positive control: an <img src=x onerror> that *is* parsed as HTML fires here, quickly. Once
    # it has fired, one made from the dataset text would have fired too.
    page.evaluate(
        """() => { const d = document.createElement('div'); d.id = 'pa-canary';
        d.innerHTML = '<img src=x onerror="window.__canary=1">'; document.body.appendChild(d); }"""
    )
    page.wait_for_function("() => window.__canary === 1")
    page.evaluate("() => document.getElementById('pa-canary').remove()")
    assert page.evaluate("() => typeof window.__pwned") == "undefined"


# --------------------------------------------------------------------------- SAE features (tiny model)
SAE_CELL = """
import prefaudit as pa
from tests import tiny

session = pa.AuditSession(
    pa.load_pairs(tiny.planted_pairs(40)), model={model!r}, sae={sae!r}, cache_dir={cache!r}, batch_size=8, shard_size=64
)
session.encode(progress=False)
session.test(n_boot=200)
top = session.results[session.results["source"] == "sae"].sort_values("q").iloc[0]["feature"]
session.select_feature(top)
session.drilldown()
"""


@pytest.mark.parametrize("jupyter", ["lab"], indirect=True)
def test_sae_feature_drilldown_shades_tokens(
    run_notebook, page, tiny_model_dir, tiny_sae_dir, tmp_path, screens
):
    nb = run_notebook(
        [SAE_CELL.format(model=str(tiny_model_dir), sae=str(tiny_sae_dir), cache=str(tmp_path / "cache"))],
        timeout=300,
    )
    fid = nb.probe.eval("top")
    assert fid.startswith("sae:")
    root = page.locator(".prefaudit-pairs")
    expect(root.locator(".pa-feature")).to_have_text(fid)
    expect(root.locator(".pa-legend")).to_have_attribute("data-kind", "sae")
    expect(root.locator(".pa-pair").first).to_be_visible()
    acts = root.locator(".pa-tok").evaluate_all("els => els.map((e) => Number(e.dataset.act))")
    assert acts and all(a >= 0 for a in acts)
    assert max(acts) > 0, "no token of the top pairs activates the feature"
    # shading follows the activation: the most active token has a background, a zero one none
    styles = root.locator(".pa-tok").evaluate_all(
        "els => els.map((e) => [Number(e.dataset.act), e.style.backgroundColor])"
    )
    assert all(bool(bg) == (a > 0) for a, bg in styles), json.dumps(styles[:20])

    screens("page-1", target=root)

    root.locator("button.pa-next").click()
    expect(root.locator(".pa-page")).to_contain_text("page 2")
    expect(root.locator(".pa-feature")).to_have_text(fid)
    assert nb.probe.eval("session.focus") == fid  # paging does not move the focus
