"""Notebooks in a page: write one, open it, run every cell, wait until it has all run.

``write_notebook`` / ``open_notebook`` / ``run_all_cells`` / ``wait_for_kernel_idle``
    Put a notebook in the server's root, open it, run every cell through
    ``window.jupyterapp.commands``, wait until every code cell has run and the kernel is idle
    (a cell that raises fails at once with its traceback).
``NotebookRun`` / ``new_notebook`` / ``notebook_page``
    A notebook open in a page, with its network guard and a lazy :class:`KernelProbe`;
    ``notebook_page`` gives one in a fresh, guarded browser context (shared pages, benchmark).
"""

from __future__ import annotations

import re
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .kernel import _ANSI, KernelProbe
from .network import NetworkGuard
from .server import JupyterServer

Cell = str | tuple[str, str]


def write_notebook(root_dir: Path, name: str, cells: Sequence[Cell]) -> str:
    """Write a notebook into ``root_dir``; returns its server path (relative to the root).

    ``cells`` are code sources, or ``("markdown", source)`` / ``("code", source)`` tuples.
    """
    import nbformat

    nb = nbformat.v4.new_notebook()
    for cell in cells:
        kind, source = cell if isinstance(cell, tuple) else ("code", cell)
        nb.cells.append(
            nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        )
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    path = Path(root_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return Path(name).as_posix()


_JS_PANEL = """(path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return null;
  const w = app.shell.currentWidget;
  return w && w.context && w.context.path === path && w.content ? w : null;
}"""

_JS_READY = (
    "(path) => { const w = ("
    + _JS_PANEL
    + """)(path);
  if (!w || !w.context.isReady) return false;
  const sc = w.sessionContext;
  const k = sc && sc.session && sc.session.kernel;
  return !!(sc.isReady && k && k.connectionStatus === 'connected' && k.status === 'idle');
}"""
)

_JS_RUN_STATE = (
    "(path) => { const w = ("
    + _JS_PANEL
    + """)(path);
  if (!w) return {missing: true};
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  const cells = w.content.widgets.filter((c) => c.model.type === 'code');
  const errors = [];
  for (const c of cells) {
    for (const o of c.model.outputs.toJSON()) {
      if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue + '\\n' + (o.traceback || []).join('\\n'));
    }
  }
  const done = cells.every((c) => c.model.executionCount !== null);
  return {idle: !!k && k.status === 'idle', done, errors, n: cells.length};
}"""
)


def open_notebook(page: Any, server: JupyterServer, path: str, timeout: float = 120.0) -> None:
    """Open ``path`` in the server's front end and wait until its kernel is connected and idle."""
    page.goto(server.notebook_url(path))
    page.wait_for_function(_JS_READY, arg=path, timeout=timeout * 1000, polling=100)


def run_all_cells(page: Any) -> None:
    """Queue every cell (the app's own command; the Run menu does the same)."""
    page.evaluate("() => { void window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def wait_for_kernel_idle(page: Any, path: str, timeout: float = 180.0) -> None:
    """Wait until every code cell of ``path`` has run and its kernel is idle.

    A cell that raises ends the wait at once with the traceback in the message.
    """
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    idle_since = None
    while time.monotonic() < deadline:
        state = page.evaluate(_JS_RUN_STATE, path)
        if state.get("errors"):
            raise AssertionError("a notebook cell raised:\n" + _ANSI.sub("", "\n\n".join(state["errors"])))
        if state.get("done") and state.get("idle"):
            # idle must hold for a moment: the kernel flips busy/idle between queued cells
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 0.3:
                return
        else:
            idle_since = None
        time.sleep(0.1)
    raise AssertionError(f"{path}: cells still running after {timeout:.0f} s (state {state})")


@dataclass
class NotebookRun:
    """A notebook open in a page: ``page``, ``server``, ``path``, its ``guard`` and a lazy ``probe``."""

    page: Any
    server: JupyterServer
    path: str
    guard: NetworkGuard | None = None
    _probe: KernelProbe | None = None

    @property
    def probe(self) -> KernelProbe:
        """A kernel client on this notebook's kernel (created on first use)."""
        if self._probe is None:
            self._probe = KernelProbe(self.server, self.path)
        return self._probe

    def open(self, *, run: bool = True, timeout: float = 180.0) -> NotebookRun:
        """Open the notebook in the page, wait for its kernel, and (by default) run every cell."""
        open_notebook(self.page, self.server, self.path, timeout=timeout)
        return self.run(timeout) if run else self

    def run(self, timeout: float = 180.0) -> NotebookRun:
        """Run all cells and wait until they ran and the kernel is idle."""
        run_all_cells(self.page)
        wait_for_kernel_idle(self.page, self.path, timeout=timeout)
        return self

    def close(self) -> None:
        """Close the probe and shut the kernel down (the page stays open)."""
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        try:
            self.server.shutdown_notebook(self.path)
        except Exception as err:  # the server may be gone already; its stop() kills the group
            print(f"could not shut down the kernel of {self.path}: {err}", file=sys.stderr)


def new_notebook(page: Any, server: JupyterServer, cells: Sequence[Cell], name: str) -> NotebookRun:
    """Write ``cells`` as ``<name>-<random>.ipynb`` into the server's root; ``.open()`` shows it in ``page``."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:60] or "nb"
    path = write_notebook(server.root_dir, f"{stem}-{uuid.uuid4().hex[:6]}.ipynb", cells)
    return NotebookRun(page, server, path)


@contextmanager
def notebook_page(
    browser: Any,
    server: JupyterServer,
    cells: Sequence[Cell],
    name: str,
    *,
    run: bool = True,
    timeout: float = 180.0,
    viewport: dict[str, int] | None = None,
) -> Iterator[NotebookRun]:
    """A fresh browser context behind a :class:`NetworkGuard`, with ``cells`` open (and run) in it.

    For tests that share one page across several checks, and for the benchmark. On exit the
    kernel is shut down and the context closed; checking ``nb.guard`` is the caller's job.
    """
    guard = NetworkGuard()
    context = browser.new_context(viewport=viewport or {"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    guard.attach(context)
    try:
        nb = new_notebook(context.new_page(), server, cells, name)
        nb.guard = guard
        try:
            yield nb.open(run=run, timeout=timeout)
        finally:
            nb.close()
    finally:
        context.close()
