"""Fixtures for the browser layer: JupyterLab and Notebook 7 servers, headless Chromium, pages.

Everything is offline and isolated: each server gets a free port, a token and its own Jupyter /
IPython directories under pytest's tmp; every page runs behind a :class:`NetworkGuard` that
aborts requests leaving the machine and fails the test that made them.

Fixtures
--------
``lab_server`` / ``notebook_server`` (session)
    :class:`~tests.browser.harness.JupyterServer`, started once, stopped at the end.
``jupyter`` (function, parametrised ``lab`` / ``notebook``)
    One of the two servers: a test that takes it runs in both front ends.
``browser`` (session)
    Debian Chromium via Playwright's sync API.
``network_guard``, ``page`` (function)
    A fresh browser context and page with the guard attached. After the test the page is
    screenshotted to ``artifacts/screens/<test>.png`` (``<test>--FAILED.png`` on failure) and the
    guard is checked: any unexpected external request fails the test at teardown.
``run_notebook`` (function)
    ``run_notebook(cells, name=None) -> NotebookRun``: write, open, run all cells, wait until
    every cell ran and the kernel is idle. ``nb.probe`` is a :class:`KernelProbe` on its
    kernel. At teardown the probes close and the kernels are shut down.
``shared_notebook`` (session)
    ``with shared_notebook(server, cells, name) as nb:`` in a module-scoped fixture: one page + kernel reused by several tests (a Lab page load and a plotly module cost ~10 s
    each on 2 cores); its own guard is checked when the module's fixture ends. A test that takes
    such a ``NotebookRun`` gets its end-of-test screenshot from ``nb.page``.
``screens``
    ``screens(name, target=None)`` saves an extra screenshot named after the test.

Without Chromium the tests skip with the reason; with ``PREFAUDIT_REQUIRE_BROWSER=1`` (CI) they
fail instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.browser import harness as h

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Everything under tests/browser is a browser test, marked or not (so -m "not browser" works).
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call":
        return
    page = _page_of(getattr(item, "funcargs", {}))
    if page is not None:
        # Taken here, before fixtures tear down (kernels shut down, context closed).
        failed = report.failed and not hasattr(report, "wasxfail")
        h.save_screenshot(page, _test_name(item) + ("--FAILED" if failed else ""))


def _page_of(funcargs: dict[str, Any]) -> Any:
    """The test's page: the ``page`` fixture, or the page of a shared ``NotebookRun`` it uses."""
    if funcargs.get("page") is not None:
        return funcargs["page"]
    for value in funcargs.values():
        if isinstance(value, h.NotebookRun):
            return value.page
    return None


def _test_name(item: pytest.Item) -> str:
    return re.sub(r"[^A-Za-z0-9_.\[\]-]+", "_", item.nodeid.split("::", 1)[-1])


# --------------------------------------------------------------------------- availability
@pytest.fixture(scope="session", autouse=True)
def _chromium_available() -> None:
    problem = h.chromium_problem()
    if problem:
        if os.environ.get("PREFAUDIT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required (PREFAUDIT_REQUIRE_BROWSER=1) but {problem}", pytrace=False)
        pytest.skip(f"browser tests skipped: {problem}")


# --------------------------------------------------------------------------- servers
def _server(app: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[h.JupyterServer]:
    server = h.JupyterServer(app, tmp_path_factory.mktemp(f"jupyter-{app}"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[h.JupyterServer]:
    yield from _server("lab", tmp_path_factory)


@pytest.fixture(scope="session")
def notebook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[h.JupyterServer]:
    yield from _server("notebook", tmp_path_factory)


@pytest.fixture(params=["lab", "notebook"])
def jupyter(request: pytest.FixtureRequest) -> h.JupyterServer:
    """JupyterLab, then Notebook 7: a test taking this fixture runs in both."""
    return request.getfixturevalue(f"{request.param}_server")


# --------------------------------------------------------------------------- browser
# ``playwright_sync`` (one Playwright per test session) lives in tests/conftest.py: a second
# sync Playwright in the same thread fails, and tests/test_widgets_js.py drives Chromium too.
@pytest.fixture(scope="session")
def browser(playwright_sync: Any) -> Iterator[Any]:
    b = h.launch_chromium(playwright_sync)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture()
def network_guard() -> h.NetworkGuard:
    return h.NetworkGuard()


@dataclass
class PageLog:
    """Console errors and uncaught page errors, printed when a test fails."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


@pytest.fixture()
def page_log() -> PageLog:
    return PageLog()


@pytest.fixture()
def page(browser: Any, network_guard: h.NetworkGuard, page_log: PageLog) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    network_guard.attach(context)
    pg = context.new_page()
    pg.on("console", lambda m: page_log.console_errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: page_log.page_errors.append(str(e)))
    try:
        yield pg
    finally:
        if page_log.page_errors or page_log.console_errors:
            print("page errors:", *page_log.page_errors[:20], sep="\n  ")
            print("console errors:", *page_log.console_errors[:20], sep="\n  ")
        context.close()
    try:
        network_guard.verify()
    except AssertionError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture()
def screens(request: pytest.FixtureRequest) -> Callable[..., Path | None]:
    """``screens("step", target=None)``: an extra screenshot ``<test>--step.png`` of the test's page."""
    base = _test_name(request.node)

    def _save(name: str, target: Any = None) -> Path | None:
        page = _page_of(request.node.funcargs)
        if page is None:
            raise RuntimeError("screens: this test has no page (take `page` or a shared NotebookRun)")
        return h.save_screenshot(page, f"{base}--{name}", target=target)

    return _save


# --------------------------------------------------------------------------- notebooks
@pytest.fixture()
def run_notebook(
    page: Any, jupyter: h.JupyterServer, network_guard: h.NetworkGuard, request: pytest.FixtureRequest
) -> Iterator[Callable[..., h.NotebookRun]]:
    """``run_notebook(cells, name=None, run=True, timeout=180) -> NotebookRun`` in ``jupyter``."""
    runs: list[h.NotebookRun] = []

    def _run(
        cells: Sequence[h.Cell], name: str | None = None, *, run: bool = True, timeout: float = 180.0
    ) -> h.NotebookRun:
        nb = h.new_notebook(page, jupyter, cells, name or request.node.name)
        nb.guard = network_guard
        runs.append(nb)
        return nb.open(run=run, timeout=timeout)

    yield _run
    for nb in runs:
        nb.close()


@pytest.fixture(scope="session")
def shared_notebook(browser: Any) -> Callable[..., Any]:
    """``with shared_notebook(server, cells, name) as nb:`` — for module-scoped fixtures.

    The page has its own :class:`NetworkGuard`, checked when the block ends (a failure there is
    reported on the module's last test).
    """

    @contextmanager
    def _open(
        server: h.JupyterServer, cells: Sequence[h.Cell], name: str, **kwargs: Any
    ) -> Iterator[h.NotebookRun]:
        with h.notebook_page(browser, server, cells, name, **kwargs) as nb:
            yield nb
        try:
            nb.guard.verify()
        except AssertionError as err:
            pytest.fail(str(err), pytrace=False)

    return _open
