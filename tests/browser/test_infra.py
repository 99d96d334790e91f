"""The browser infrastructure itself, proven on plain widgets in JupyterLab and Notebook 7.

If these fail, the view tests cannot be trusted: a click, a drag or a plotly point click must
reach Python, the kernel probe must talk to the page's kernel, and the network guard must catch
a request that leaves the machine.

The widget checks share one notebook per front end (``widgets_nb``): each cell holds its own
widgets and state, so the tests do not depend on each other's order.
"""

from __future__ import annotations

import pytest

from tests.browser import harness as h
from tests.browser.harness import expect

pytestmark = pytest.mark.browser

BUTTON_CELL = """
import ipywidgets as widgets
from IPython.display import display

presses = []
echo = widgets.Label("no press yet")
echo.add_class("t-echo")
button = widgets.Button(description="Press me")
button.add_class("t-button")

def on_press(_b):
    presses.append(1)
    echo.value = f"pressed {len(presses)}"

button.on_click(on_press)
display(widgets.HBox([button, echo]))
"""

SLIDER_CELL = """
import ipywidgets as widgets
from IPython.display import display

seen = []
slider = widgets.IntSlider(value=10, min=0, max=100, description="n", layout=widgets.Layout(width="500px"))
slider.add_class("t-slider")
slider.observe(lambda c: seen.append(c["new"]), names="value")
display(slider)
"""

PLOTLY_CELL = """
import plotly.graph_objects as go

clicks = []
fig = go.FigureWidget(
    data=[go.Scatter(x=[1, 2, 3], y=[1, 3, 2], text=["alpha", "beta", "gamma"], mode="markers",
                     marker={"size": 16}, hovertemplate="%{text}<extra></extra>")],
    layout={"width": 520, "height": 360, "margin": {"l": 40, "r": 20, "t": 20, "b": 40}},
)
fig.data[0].on_click(lambda trace, points, state: clicks.append([points.trace_index, list(points.point_inds)]))
fig
"""

PROBE_CELL = """
import ipywidgets as widgets
from IPython.display import display

marker = "notebook-" + "kernel"
shown = widgets.Label("initial")
shown.add_class("t-probe-label")
display(shown)
"""

GUARD_MARKDOWN = """# Guard check

An image from outside the machine: <img class="t-external" src="https://example.com/prefaudit-guard.png" alt="external">
"""


@pytest.fixture(scope="module", params=["lab", "notebook"])
def widgets_nb(request, shared_notebook):
    server = request.getfixturevalue(f"{request.param}_server")
    with shared_notebook(
        server, [BUTTON_CELL, SLIDER_CELL, PLOTLY_CELL, PROBE_CELL], f"infra-{request.param}"
    ) as nb:
        yield nb


def test_button_click_reaches_python(widgets_nb):
    nb, page = widgets_nb, widgets_nb.page
    button = page.locator("button.t-button")
    expect(button).to_be_visible()
    assert nb.probe.eval("len(presses)") == 0

    button.click()
    nb.probe.wait_for("len(presses)", equals=1)
    expect(page.locator(".t-echo")).to_have_text("pressed 1")  # and Python's answer reached the page

    button.click()
    nb.probe.wait_for("len(presses)", equals=2)
    expect(page.locator(".t-echo")).to_have_text("pressed 2")


def test_int_slider_drag_reaches_python(widgets_nb):
    nb, page = widgets_nb, widgets_nb.page
    slider = page.locator(".t-slider")
    expect(slider.locator(".noUi-handle")).to_be_visible()

    up = h.drag_slider(page, slider, 70, probe=nb.probe, expr="slider.value")
    assert abs(up - 70) <= 3, f"dropped at 70, readout says {up}"
    assert nb.probe.eval("slider.value") == up
    assert nb.probe.eval("seen[-1]") == up

    down = h.drag_slider(page, slider, 25, probe=nb.probe, expr="slider.value")
    assert abs(down - 25) <= 3, f"dropped at 25, readout says {down}"
    assert nb.probe.eval("slider.value") == down
    assert nb.probe.eval("seen[-1]") == down


def test_plotly_point_click_fires_on_click(widgets_nb):
    nb, page = widgets_nb, widgets_nb.page
    plot = page.locator(".js-plotly-plot").first
    expect(plot).to_be_visible(timeout=60_000)  # the FigureWidget module is ~5 MB
    assert nb.probe.eval("clicks") == []

    label = h.click_plotly_point(page, plot, trace=0, point=1, expect_text="beta")
    assert "beta" in label
    nb.probe.wait_for("clicks", equals=[[0, [1]]])

    h.click_plotly_point(page, plot, trace=0, point=2, expect_text="gamma")
    nb.probe.wait_for("clicks", equals=[[0, [1]], [0, [2]]])


def test_network_guard_blocks_external_requests(run_notebook, page, network_guard):
    run_notebook([("markdown", GUARD_MARKDOWN), "1 + 1"])
    img = page.locator("img.t-external")
    expect(img).to_be_attached()
    # The markdown image was requested, aborted, and recorded.
    page.wait_for_function(
        "() => { const i = document.querySelector('img.t-external'); return i && i.complete; }"
    )
    assert img.evaluate("i => i.naturalWidth") == 0
    assert any("example.com/prefaudit-guard.png" in u for u in network_guard.blocked), network_guard.blocked

    # A script's fetch fails too (a CDN import would fail the same way).
    outcome = page.evaluate(
        "() => fetch('https://cdn.example.org/lib.js').then(() => 'loaded', () => 'blocked')"
    )
    assert outcome == "blocked"
    assert any(u.startswith("https://cdn.example.org/") for u in network_guard.blocked)

    # Local traffic is never recorded.
    assert all(not h.is_local(u) for u in network_guard.blocked)

    # Unexpected requests fail the test at teardown (verify raises) ...
    with pytest.raises(AssertionError, match=r"example\.com"):
        network_guard.verify()
    # ... so mark these deliberate ones as expected: the teardown check then passes.
    assert network_guard.expect(r"example\.(com|org)")
    network_guard.verify()


def test_kernel_probe_round_trip(widgets_nb):
    nb, page = widgets_nb, widgets_nb.page
    probe = nb.probe
    # It is the notebook's own kernel: it sees what the cells defined.
    assert probe.eval("marker") == "notebook-kernel"
    probe.exec("probe_value = 41")
    assert probe.eval("probe_value + 1") == 42
    assert probe.eval("{'a': [1, 2.5, None], 'b': 'text'}") == {"a": [1, 2.5, None], "b": "text"}
    with pytest.raises(h.ProbeError, match="ZeroDivisionError"):
        probe.eval("1 / 0")
    with pytest.raises(AssertionError, match="probe_value"):
        probe.wait_for("probe_value", equals=0, timeout=0.5)

    # Python -> page: a trait set through the probe reaches the widget in the browser.
    expect(page.locator(".t-probe-label")).to_have_text("initial")
    probe.exec("shown.value = 'set by the probe'")
    expect(page.locator(".t-probe-label")).to_have_text("set by the probe")
