"""Drive real JupyterLab / Notebook 7 pages in headless Chromium, offline.

Used by the browser test fixtures (``tests/browser/conftest.py``), by the widget-module tests
(``tests/test_widgets_js.py``, Chromium only) and by the latency benchmark
(``benchmarks/bench_slider_latency.py``), so nothing here depends on pytest. Import the package
and use the names it re-exports::

    from tests.browser import harness as h

    server = h.JupyterServer("lab", tmp).start()
    browser = h.launch_chromium(playwright)

Modules, one concern each
-------------------------
:mod:`.chromium`
    ``chromium_problem()``, ``launch_chromium(playwright)``: the one place that knows the
    Chromium binary (``PREFAUDIT_CHROMIUM``) and its verified launch arguments.
:mod:`.server`
    ``JupyterServer("lab" | "notebook", base_dir)``: an isolated server on a free port with a
    token; ``start()`` waits for ``/api/status``, ``stop()`` kills it and its kernels.
:mod:`.network`
    ``NetworkGuard``: aborts and records every request that leaves the machine.
:mod:`.notebook`
    ``write_notebook`` / ``open_notebook`` / ``run_all_cells`` / ``wait_for_kernel_idle``,
    ``NotebookRun``, ``new_notebook``, ``notebook_page``: a notebook open and run in a page.
:mod:`.kernel`
    ``KernelProbe``: ``eval`` / ``exec`` / ``wait_for`` in the page's kernel.
:mod:`.gestures`
    ``click_plotly_point`` / ``drag_slider``: the reliable interaction recipes.
:mod:`.assertions`
    ``expect``: Playwright's ``expect`` with a 30 s default timeout, imported on use.
:mod:`.screens`
    ``save_screenshot``: PNG into ``artifacts/screens/`` (git-ignored).
:mod:`.app`
    ``AppServer``: ``prefaudit app`` (Voila) on a free port, isolated like the Jupyter servers.
:mod:`.dashboard`
    ``wait_for_dashboard`` / ``volcano_points`` / ``most_isolated``: prefaudit's dashboard on a page.
"""

from __future__ import annotations

from .app import AppServer, prefaudit_command
from .assertions import EXPECT_TIMEOUT_MS, expect
from .chromium import CHROMIUM, CHROMIUM_ARGS, SLOW_PLOTLY, chromium_problem, launch_chromium
from .dashboard import VolcanoPoint, most_isolated, volcano_points, wait_for_dashboard
from .gestures import _parse_number as _parse_number  # the benchmark reads slider readouts with it
from .gestures import click_plotly_point, drag_slider, plotly_point_position
from .kernel import KernelProbe, ProbeError
from .network import LOCAL_HOSTS, LOCAL_SCHEMES, NetworkGuard, is_local
from .notebook import (
    Cell,
    NotebookRun,
    new_notebook,
    notebook_page,
    open_notebook,
    run_all_cells,
    wait_for_kernel_idle,
    write_notebook,
)
from .screens import SCREENS_DIR, save_screenshot
from .server import JUPYTER_DIR_VARS, REPO, JupyterServer, free_port

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "EXPECT_TIMEOUT_MS",
    "JUPYTER_DIR_VARS",
    "LOCAL_HOSTS",
    "LOCAL_SCHEMES",
    "REPO",
    "SCREENS_DIR",
    "SLOW_PLOTLY",
    "AppServer",
    "Cell",
    "JupyterServer",
    "KernelProbe",
    "NetworkGuard",
    "NotebookRun",
    "ProbeError",
    "VolcanoPoint",
    "chromium_problem",
    "click_plotly_point",
    "drag_slider",
    "expect",
    "free_port",
    "is_local",
    "launch_chromium",
    "most_isolated",
    "new_notebook",
    "notebook_page",
    "open_notebook",
    "plotly_point_position",
    "prefaudit_command",
    "run_all_cells",
    "save_screenshot",
    "volcano_points",
    "wait_for_dashboard",
    "wait_for_kernel_idle",
    "write_notebook",
]
