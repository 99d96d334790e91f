"""Front-end ES modules in ``widgets/``: syntax, no HTML sinks, and a headless-Chromium harness.

The harness loads each anywidget module from a Blob URL into a blank page and calls
``render({model, el})`` with a fake model that records ``set`` / ``save_changes`` / ``send``,
then clicks and inspects the DOM. No Jupyter, no network. Chromium is found and launched by
the browser harness (``tests/browser/harness/chromium.py``: ``PREFAUDIT_CHROMIUM``, same
arguments as the JupyterLab tests).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import playwright
import pytest

from prefaudit.views._assets import widgets_dir
from tests.browser import harness

WIDGETS = widgets_dir()
MODULES = sorted(WIDGETS.glob("*.js"))
NODE = Path(playwright.__file__).parent / "driver" / "node"

SCRIPT = "<script>window.__pwned = 1</script>"
IMG = '<img src=x onerror="window.__pwned = 2">'
HOSTILE = f"{SCRIPT} {IMG} **bold** &amp; &lt;b&gt;"


def test_there_are_modules_and_their_css():
    names = {p.name for p in MODULES}
    assert {"drilldown.js", "shaper_preview.js", "rowtag.js"} <= names
    assert (WIDGETS / "drilldown.css").is_file() and (WIDGETS / "shaper_preview.css").is_file()


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_node_check(module, tmp_path):
    if not NODE.is_file():
        if os.environ.get("PREFAUDIT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"node not found at {NODE}")
        pytest.skip(f"node not found at {NODE}")
    copy = tmp_path / (module.stem + ".mjs")  # .mjs: parse as an ES module, whatever node's default
    shutil.copy(module, copy)
    proc = subprocess.run([str(NODE), "--check", str(copy)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_modules_have_no_html_sinks_and_export_render(module):
    src = re.sub(r"/\*.*?\*/|//[^\n]*", "", module.read_text(), flags=re.S)  # code, not comments
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in src, f"{module.name} uses {sink}"
    # `{ render }`, or a factory returning `{ initialize, render }` (anywidget's other form; plotly_figure.js)
    assert re.search(r"export default (\{\s*render\s*\}|\(\) => \{)", src), (
        f"{module.name}: no default export"
    )
    assert re.search(r"\brender\b", src)
    assert "return () =>" in src  # render returns a cleanup


# ---------------------------------------------------------------------- browser harness
FAKE_MODEL = """
window.fakeModel = (state) => {
  const calls = [];
  const handlers = {};
  return {
    calls, handlers,
    get: (k) => state[k],
    set: (k, v) => { calls.push(["set", k, v]); state[k] = v; },
    save_changes: () => calls.push(["save_changes"]),
    send: (msg) => calls.push(["send", msg]),
    on: (ev, cb) => { (handlers[ev] = handlers[ev] || []).push(cb); },
    off: (ev, cb) => { handlers[ev] = (handlers[ev] || []).filter((f) => f !== cb); },
    trigger: (ev) => (handlers[ev] || []).forEach((f) => f()),
    state,
  };
};
window.loadModule = async (src) => import(URL.createObjectURL(new Blob([src], { type: "text/javascript" })));
"""


@pytest.fixture(scope="module")
def browser(playwright_sync):
    problem = harness.chromium_problem()
    if problem:
        if os.environ.get("PREFAUDIT_REQUIRE_BROWSER") == "1":  # CI must not skip these
            pytest.fail(f"browser tests required (PREFAUDIT_REQUIRE_BROWSER=1) but {problem}")
        pytest.skip(f"browser tests skipped: {problem}")
    b = harness.launch_chromium(playwright_sync)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture()
def page(browser):
    ctx = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = ctx.new_page()
    requests: list[str] = []
    pg.on(
        "request",
        lambda r: requests.append(r.url) if not r.url.startswith(("blob:", "data:", "about:")) else None,
    )
    pg.set_content("<!DOCTYPE html><html><head></head><body><div id='host'></div></body></html>")
    pg.add_script_tag(content=FAKE_MODEL)
    pg.requests = requests  # type: ignore[attr-defined]
    yield pg
    assert requests == [], f"the page tried to load {requests}"
    assert pg.evaluate("window.__pwned") is None, "hostile text was executed"
    ctx.close()


def load(page, name: str) -> None:
    """Import ``widgets/<name>`` into the page as ``window.mod`` (with its stylesheet, if any)."""
    css = WIDGETS / name.replace(".js", ".css")
    if css.is_file():
        page.add_style_tag(content=css.read_text())
    page.evaluate(
        "async (src) => { window.mod = (await window.loadModule(src)).default; }",
        (WIDGETS / name).read_text(),
    )


def pair(pid: str, *, long: bool = False) -> dict:
    chosen_text = HOSTILE + (" filler" * 200 if long else "")
    return {
        "pair_id": pid,
        "position": int(pid),
        "prompt": [{"role": "user", "content": f"prompt {HOSTILE}"}, {"role": "assistant", "content": "ok"}],
        "chosen": {
            "segments": [["Great ", 0.0], ["question", 2.0], ["! ", 0.5], [chosen_text, 0.0], [" cut", None]],
            "pooled": 2.0,
        },
        "rejected": {"segments": [[f"Sorry {IMG}", 1.0]], "pooled": 1.0},
        "delta": 1.0,
        "higher": "chosen",
    }


def pairs_state(**over) -> dict:
    state = {
        "feature": "sae:17",
        "header": {
            "label": f"label {SCRIPT}",
            "d_z": 0.8,
            "delta_mean": 0.5,
            "q": 0.001,
            "direction": "chosen",
        },
        "legend": {"kind": "sae", "text": "token shade = activation of sae:17", "max": 2.0},
        "pairs": [pair("0"), pair("7", long=True)],
        "sort": "abs_delta",
        "page": 0,
        "page_size": 2,
        "n_pairs": 5,
        "pinned": False,
        "status": "",
        "version": 1,
    }
    state.update(over)
    return state


RENDER = """async (state) => {
  window.model = window.fakeModel(state);
  const host = document.getElementById("host");
  window.cleanup = await window.mod.render({ model: window.model, el: host });
  return typeof window.cleanup;
}"""


@pytest.mark.browser
def test_drilldown_renders_pairs_tokens_and_hooks(page):
    load(page, "drilldown.js")
    assert page.evaluate(RENDER, pairs_state()) == "function"
    dom = page.evaluate(
        """() => {
      const root = document.querySelector(".pa-pairs");
      return {
        feature: root.querySelector(".pa-feature").textContent,
        label: root.querySelector(".pa-label").textContent,
        ids: [...root.querySelectorAll(".pa-pair[data-pair-id]")].map((e) => e.dataset.pairId),
        acts: [...root.querySelectorAll(".pa-pair[data-pair-id='0'] .pa-chosen .pa-tok")].map((e) => e.dataset.act),
        shaded: [...root.querySelectorAll(".pa-pair[data-pair-id='0'] .pa-chosen .pa-tok")].map((e) => e.style.backgroundColor !== ""),
        untok: root.querySelectorAll(".pa-untok").length,
        higher: root.querySelector(".pa-pair[data-pair-id='0'] .pa-chosen .pa-higher") !== null,
        sort: root.querySelector("select.pa-sort").value,
        sortValues: [...root.querySelectorAll("select.pa-sort option")].map((o) => o.value),
        prevDisabled: root.querySelector("button.pa-prev").disabled,
        nextDisabled: root.querySelector("button.pa-next").disabled,
        page: root.querySelector(".pa-page").textContent,
        legend: root.querySelector(".pa-legend").dataset.kind,
        more: root.querySelectorAll(".pa-pair[data-pair-id='7'] button.pa-more").length,
      };
    }"""
    )
    assert dom["feature"] == "sae:17" and dom["label"] == f"label {SCRIPT}"
    assert dom["ids"] == ["0", "7"]
    assert dom["acts"] == ["0", "2", "0.5", "0"] and dom["shaded"] == [False, True, True, False]
    assert dom["untok"] == 2 and dom["higher"] and dom["legend"] == "sae"
    assert dom["sort"] == "abs_delta" and set(dom["sortValues"]) == {
        "abs_delta",
        "delta",
        "chosen",
        "rejected",
    }
    assert dom["prevDisabled"] and not dom["nextDisabled"] and dom["page"] == "page 1 of 3"
    assert dom["more"] == 1


@pytest.mark.browser
def test_drilldown_hostile_text_becomes_text_nodes(page):
    load(page, "drilldown.js")
    page.evaluate(RENDER, pairs_state())
    out = page.evaluate(
        """() => {
      const root = document.querySelector(".pa-pairs");
      return {
        elements: [...root.querySelectorAll("script, img, b, strong, a, h1")].length,
        prompt: root.querySelector(".pa-pair[data-pair-id='0'] .pa-msg .pa-content").textContent,
        rejected: root.querySelector(".pa-pair[data-pair-id='0'] .pa-rejected .pa-text").textContent,
        textNodesOnly: [...root.querySelectorAll(".pa-tok, .pa-content, .pa-label")].every(
          (e) => [...e.childNodes].every((n) => n.nodeType === Node.TEXT_NODE)),
      };
    }"""
    )
    assert out["elements"] == 0
    assert out["prompt"] == f"prompt {HOSTILE}"
    assert out["rejected"] == f"Sorry {IMG}"
    assert out["textNodesOnly"]


@pytest.mark.browser
def test_drilldown_controls_send_intents_and_redraw_on_version(page):
    load(page, "drilldown.js")
    page.evaluate(RENDER, pairs_state())
    calls = page.evaluate(
        """() => {
      const root = document.querySelector(".pa-pairs");
      const sort = root.querySelector("select.pa-sort");
      sort.value = "rejected";
      sort.dispatchEvent(new Event("change"));
      root.querySelector("button.pa-next").click();
      root.querySelector("button.pa-pin").click();
      return window.model.calls;
    }"""
    )
    assert calls == [
        ["set", "sort", "rejected"],
        ["set", "page", 0],
        ["save_changes"],
        ["set", "page", 1],
        ["save_changes"],
        ["set", "pinned", True],
        ["save_changes"],
    ]
    after = page.evaluate(
        """(p) => {
      window.model.state.pairs = [p];
      window.model.state.page = 2;
      window.model.state.version = 2;
      window.model.trigger("change:version");
      const root = document.querySelector(".pa-pairs");
      const more = document.querySelector(".pa-more");
      return {
        ids: [...root.querySelectorAll(".pa-pair")].map((e) => e.dataset.pairId),
        nextDisabled: root.querySelector("button.pa-next").disabled,
        version: root.dataset.version,
        more: more === null,
      };
    }""",
        pair("4"),
    )
    assert after == {"ids": ["4"], "nextDisabled": True, "version": "2", "more": True}


@pytest.mark.browser
def test_drilldown_show_more_and_cleanup(page):
    load(page, "drilldown.js")
    page.evaluate(RENDER, pairs_state())
    out = page.evaluate(
        """() => {
      const box = document.querySelector(".pa-pair[data-pair-id='7'] .pa-chosen .pa-collapsible");
      const before = box.classList.contains("pa-collapsed");
      box.querySelector(".pa-more").click();
      const after = box.classList.contains("pa-collapsed");
      const label = box.querySelector(".pa-more").textContent;
      window.cleanup();
      return { before, after, label, left: document.querySelectorAll(".pa-pairs").length,
               handlers: Object.values(window.model.handlers).reduce((n, h) => n + h.length, 0) };
    }"""
    )
    assert out == {"before": True, "after": False, "label": "show less", "left": 0, "handlers": 0}


@pytest.mark.browser
def test_drilldown_without_feature_shows_status_and_no_controls(page):
    load(page, "drilldown.js")
    page.evaluate(
        RENDER, pairs_state(feature=None, pairs=[], header={}, legend={}, status="Select a feature")
    )
    out = page.evaluate(
        """() => ({ controls: document.querySelectorAll(".pa-sort, .pa-next").length,
                    status: document.querySelector(".pa-status").textContent,
                    feature: document.querySelector(".pa-feature").textContent })"""
    )
    assert out == {"controls": 0, "status": "Select a feature", "feature": "no feature"}


@pytest.mark.browser
def test_rowtag_marks_its_row_now_or_once_attached(page):
    load(page, "rowtag.js")
    out = page.evaluate(
        """async () => {
      const host = document.getElementById("host");
      const row1 = document.createElement("div");
      row1.className = "pa-weight-row";
      const el1 = document.createElement("div");
      row1.appendChild(el1);
      host.appendChild(row1);
      const m1 = window.fakeModel({ feature: "concept:url" });
      window.mod.render({ model: m1, el: el1 });
      // Second case: ipywidgets attaches the view after render().
      const el2 = document.createElement("div");
      const m2 = window.fakeModel({ feature: "sae:9" });
      const cleanup2 = window.mod.render({ model: m2, el: el2 });
      const row2 = document.createElement("div");
      row2.className = "pa-weight-row";
      row2.appendChild(el2);
      host.appendChild(row2);
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      m2.state.feature = "sae:10";
      m2.trigger("change:feature");
      const after = row2.dataset.feature;
      cleanup2();
      return { first: row1.dataset.feature, second: after, hidden: el1.style.display,
               handlers: (m2.handlers["change:feature"] || []).length };
    }"""
    )
    assert out == {"first": "concept:url", "second": "sae:10", "hidden": "none", "handlers": 0}


@pytest.mark.browser
def test_drilldown_state_from_python_renders(page):
    """The JSON a real PairsView sends renders in the front end (Python and JS agree on shapes)."""
    import prefaudit as pa
    from prefaudit.views import PairsView
    from tests import tiny

    rows = tiny.planted_pairs(12)
    rows[0]["chosen"] = f"What a great question! {HOSTILE} http://www.example.com/x"
    s = pa.AuditSession(pa.load_pairs(rows), sae=False, cache_dir=False)
    s.test(n_boot=20)
    view = PairsView(s, feature="url", sort="chosen", page_size=3)
    state = json.loads(
        json.dumps({k: v for k, v in view.widget.get_state().items() if not k.startswith("_")})
    )
    load(page, "drilldown.js")
    page.evaluate(RENDER, state)
    out = page.evaluate(
        """() => ({ pairs: document.querySelectorAll(".pa-pair").length,
                    matches: [...document.querySelectorAll(".pa-tok[data-act='1']")].map((e) => e.textContent),
                    legend: document.querySelector(".pa-legend").dataset.kind,
                    injected: document.querySelectorAll(".pa-pairs script, .pa-pairs img").length })"""
    )
    assert out["pairs"] == 3 and out["legend"] == "regex" and out["injected"] == 0
    assert out["matches"][0] == "http://www.example.com/x" and len(out["matches"]) == 3


@pytest.mark.browser
def test_drilldown_pending_page_shows_plain_text_then_the_shading(page):
    """An SAE page's rows come before its shading (legend "pending"): plain text, not "not read"."""
    load(page, "drilldown.js")
    plain = {"segments": [[f"Sure {SCRIPT}", None]], "pooled": 1.0}
    pending = pairs_state(
        legend={"kind": "pending", "text": "token shade of sae:17: reading the page through the model…"},
        pairs=[{**pair("0"), "chosen": plain, "rejected": plain}],
        status="shading tokens…",
    )
    page.evaluate(RENDER, pending)
    out = page.evaluate(
        """() => ({ plain: document.querySelectorAll(".pa-pair .pa-plain").length,
                    untok: document.querySelectorAll(".pa-untok, .pa-tok").length,
                    text: document.querySelector(".pa-pair .pa-plain").textContent,
                    status: document.querySelector(".pa-status").textContent,
                    kind: document.querySelector(".pa-legend").dataset.kind,
                    swatch: document.querySelectorAll(".pa-legend .pa-swatch").length })"""
    )
    expected = {"plain": 2, "untok": 0, "text": f"Sure {SCRIPT}", "status": "shading tokens…"}
    assert out == {**expected, "kind": "pending", "swatch": 0}
    page.evaluate(
        """(state) => { Object.assign(window.model.state, state); window.model.trigger("change:version"); }""",
        pairs_state(version=2),
    )
    assert page.evaluate("() => document.querySelector('.pa-legend').dataset.kind") == "sae"
    assert page.evaluate("() => document.querySelectorAll('.pa-pair .pa-tok').length") > 0
