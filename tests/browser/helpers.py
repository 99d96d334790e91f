"""Drive real JupyterLab / Notebook 7 pages in headless Chromium, offline.

Used by the browser test fixtures (``tests/browser/conftest.py``) and by the latency benchmark
(``benchmarks/bench_slider_latency.py``), so nothing here depends on pytest.

Pieces
------
``chromium_problem()``
    ``None`` when Debian's Chromium and the playwright package are usable, else the reason.
``launch_chromium(playwright)``
    Chromium with the launch arguments verified on these machines (see BROWSER_TESTING.md).
``JupyterServer("lab" | "notebook", base_dir)``
    A server on a free port with a token, every Jupyter/IPython directory isolated under
    ``base_dir``; ``start()`` waits for ``/api/status``, ``stop()`` terminates, then kills the
    process group (kernels included).
``NetworkGuard``
    Aborts and records every request (and WebSocket) that is not 127.0.0.1/localhost or a
    file:/data:/blob: URL; ``verify()`` raises if anything unexpected was recorded.
``write_notebook`` / ``open_notebook`` / ``run_all_cells`` / ``wait_for_kernel_idle``
    Put a notebook in the server's root, open it, run every cell through
    ``window.jupyterapp.commands``, wait until every code cell has run and the kernel is idle
    (a cell that raises fails at once with its traceback).
``KernelProbe``
    A ``BlockingKernelClient`` on the notebook's kernel: ``eval`` / ``exec`` / ``wait_for``.
``click_plotly_point`` / ``drag_slider``
    The reliable interaction recipes: hover the point's centre, wait for the hover label, click;
    drag an ipywidgets noUi handle and poll Python until it equals the final readout.
``save_screenshot``
    PNG into ``artifacts/screens/`` (git-ignored).
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

REPO = Path(__file__).resolve().parents[2]
SCREENS_DIR = Path(os.environ.get("PREFAUDIT_SCREENS_DIR", REPO / "artifacts" / "screens"))
CHROMIUM = os.environ.get("PREFAUDIT_CHROMIUM", "/usr/lib/chromium/chromium")
# Verified here. No --disable-features (it would replace Playwright's own list) and no
# --user-data-dir (every launch already gets a fresh profile).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
JUPYTER_DIR_VARS = (
    "JUPYTER_CONFIG_DIR",
    "JUPYTER_DATA_DIR",
    "JUPYTER_RUNTIME_DIR",
    "JUPYTERLAB_SETTINGS_DIR",
    "JUPYTERLAB_WORKSPACES_DIR",
    "IPYTHONDIR",
)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
LOCAL_SCHEMES = ("data", "blob", "file", "about")


# --------------------------------------------------------------------------- Chromium
def chromium_problem() -> str | None:
    """Why the browser tests cannot run here, or ``None`` if they can."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return (
            f"Chromium not found at {CHROMIUM} (install it: apt-get install -y --no-install-recommends "
            "chromium fonts-liberation; or point PREFAUDIT_CHROMIUM at a Chromium binary)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        return f"the playwright package is not importable ({err}); pip install playwright"
    return None


#: Playwright's ``expect`` waits 5 s by default; on 2 shared cores a widget round trip through a
#: busy kernel (an SAE page read, a 5 MB plotly module) can take longer.
EXPECT_TIMEOUT_MS = int(os.environ.get("PREFAUDIT_EXPECT_TIMEOUT_MS", "30000"))


def expect(actual: Any, message: str | None = None) -> Any:
    """``playwright.sync_api.expect`` with a 30 s default timeout, imported on use.

    Test modules must import without playwright: the suite then skips (or fails under
    ``PREFAUDIT_REQUIRE_BROWSER=1``) instead of erroring at collection.
    """
    from playwright.sync_api import expect as _expect

    _expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    return _expect(actual, message)


def launch_chromium(playwright: Any, **kwargs: Any) -> Any:
    """Headless Debian Chromium with the verified arguments (Playwright sync API)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, **kwargs)


# --------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """A JupyterLab (``app="lab"``) or Notebook 7 (``app="notebook"``) server for tests.

    Every Jupyter and IPython directory lives under ``base_dir``; notebooks go in
    ``root_dir``. The repository is on the kernel's ``PYTHONPATH`` (``from tests import tiny``).

    Example
    -------
    >>> server = JupyterServer("lab", Path("/tmp/x")).start()     # doctest: +SKIP
    >>> page.goto(server.notebook_url("a.ipynb"))                 # doctest: +SKIP
    >>> server.stop()                                             # doctest: +SKIP
    """

    def __init__(self, app: str, base_dir: Path) -> None:
        if app not in ("lab", "notebook"):
            raise ValueError(f"app must be 'lab' or 'notebook', not {app!r}")
        self.app = app
        self.base_dir = Path(base_dir)
        self.root_dir = self.base_dir / "root"
        self.dirs = {var: self.base_dir / var.lower() for var in JUPYTER_DIR_VARS}
        self.runtime_dir = self.dirs["JUPYTER_RUNTIME_DIR"]
        self.log_path = self.base_dir / "server.log"
        self.token = uuid.uuid4().hex
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        common = [
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
        ]
        if self.app == "lab":
            return [
                sys.executable, "-m", "jupyterlab", *common,
                "--LabApp.expose_app_in_browser=True",
                "--LabApp.news_url=None",
                "--LabApp.extension_manager=readonly",
                "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
            ]  # fmt: skip
        return [sys.executable, "-m", "notebook", *common, "--JupyterNotebookApp.expose_app_in_browser=True"]

    def _write_settings(self) -> None:
        # Render every cell (no virtual scrolling): pixel-level interactions need the DOM there.
        settings = self.dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "notebook-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
        notif = self.dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension"
        notif.mkdir(parents=True, exist_ok=True)
        (notif / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )

    def start(self, timeout: float = 120.0) -> JupyterServer:
        self.root_dir.mkdir(parents=True, exist_ok=True)
        for path in self.dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        self._write_settings()
        env = dict(os.environ)
        env.update({var: str(path) for var, path in self.dirs.items()})
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.pop("JUPYTER_PATH", None)
        self.port = free_port()
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self._command(),
            env=env,
            cwd=self.root_dir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"{self.app} server exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.app} server did not answer /api/status within {timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the server (it shuts its kernels down), then kill whatever of it remains.

        The server has its own process group (``start_new_session=True``), but jupyter_client
        starts every kernel in a session of its own too; so leftovers are found by their
        connection file, which lies in this server's private runtime directory.
        """
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            self.proc = None
        self._kill_kernels()
        if self._log is not None:
            self._log.close()
            self._log = None

    def kernel_pids(self) -> list[int]:
        """Processes whose command line names this server's runtime directory (its kernels)."""
        marker = str(self.runtime_dir) + os.sep
        pids = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.decode(errors="replace").startswith(marker) for a in args):
                pids.append(int(entry.name))
        return pids

    def _kill_kernels(self, grace: float = 5.0) -> None:
        pids = self.kernel_pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
                time.sleep(0.05)
            if not pids:
                return

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # ------------------------------------------------------------------ REST
    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def sessions(self) -> list[dict[str, Any]]:
        return self.api("GET", "/api/sessions")

    def kernel_id(self, path: str) -> str | None:
        for s in self.sessions():
            if s.get("path") == path and s.get("kernel"):
                return s["kernel"]["id"]
        return None

    def shutdown_notebook(self, path: str) -> None:
        """Delete the sessions of ``path`` (shuts their kernels down)."""
        for s in self.sessions():
            if s.get("path") == path:
                with suppress(urllib.error.HTTPError):
                    self.api("DELETE", f"/api/sessions/{s['id']}")

    # ------------------------------------------------------------------ pages
    def notebook_url(self, path: str, *, workspace: str | None = None) -> str:
        """Page URL of a notebook. Lab pages get a fresh workspace so that no earlier tab is restored."""
        p = quote(path)
        if self.app == "lab":
            ws = workspace or f"t{uuid.uuid4().hex[:12]}"
            return f"{self.url}/lab/workspaces/{ws}/tree/{p}?token={self.token}"
        return f"{self.url}/notebooks/{p}?token={self.token}"


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


# --------------------------------------------------------------------------- network guard
# Matched inside the Playwright driver, so local requests never make a round trip to Python.
_NON_LOCAL = re.compile(
    r"^(?!(?:https?|wss?)://(?:127\.0\.0\.1|localhost|\[::1\])(?::\d+)?(?:[/?#]|$))(?!(?:data|blob|file|about):).*"
)


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return True
    return parts.scheme in ("http", "https", "ws", "wss") and (parts.hostname or "") in LOCAL_HOSTS


@dataclass
class NetworkGuard:
    """Abort every request that leaves the machine, and remember it.

    A stray CDN request fails fast here (no internet) but would pass silently on a machine with
    one; the guard makes it a test failure everywhere. ``expect(pattern)`` marks recorded URLs as
    deliberate (for the test that proves the guard works).
    """

    blocked: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def attach(self, context: Any) -> NetworkGuard:
        context.route(_NON_LOCAL, self._route)
        if hasattr(context, "route_web_socket"):  # playwright >= 1.48
            context.route_web_socket(_NON_LOCAL, self._route_ws)
        return self

    def _route(self, route: Any) -> None:
        url = route.request.url
        if is_local(url):
            route.fallback()
            return
        self.blocked.append(url)
        route.abort("blockedbyclient")

    def _route_ws(self, ws: Any) -> None:
        if is_local(ws.url):
            ws.connect_to_server()
            return
        self.blocked.append(ws.url)
        ws.close()

    def expect(self, pattern: str) -> list[str]:
        """Mark recorded URLs matching ``pattern`` (regex) as deliberate; returns them."""
        rx = re.compile(pattern)
        hits = [u for u in self.blocked if rx.search(u) and u not in self.expected]
        self.expected.extend(hits)
        return hits

    @property
    def unexpected(self) -> list[str]:
        return [u for u in self.blocked if u not in self.expected]

    def verify(self) -> None:
        if self.unexpected:
            urls = "\n  ".join(dict.fromkeys(self.unexpected))
            raise AssertionError(f"the page tried to reach the network (blocked):\n  {urls}")


# --------------------------------------------------------------------------- notebooks
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

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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


# --------------------------------------------------------------------------- kernel probe
class ProbeError(AssertionError):
    """Code sent by the probe raised in the kernel."""


_MISSING = object()


class KernelProbe:
    """Evaluate Python in a notebook's kernel (the one the page talks to) from the test.

    Example
    -------
    >>> with KernelProbe(server, "infra.ipynb") as probe:          # doctest: +SKIP
    ...     probe.exec("x = 41")
    ...     assert probe.eval("x + 1") == 42
    ...     probe.wait_for("len(clicks)", equals=1, timeout=20)
    """

    def __init__(self, server: JupyterServer, path: str, timeout: float = 30.0) -> None:
        from jupyter_client import BlockingKernelClient

        deadline = time.monotonic() + timeout
        kid = server.kernel_id(path)
        while kid is None and time.monotonic() < deadline:
            time.sleep(0.2)
            kid = server.kernel_id(path)
        if kid is None:
            raise AssertionError(f"no kernel session for {path!r}; sessions: {server.sessions()}")
        self.kernel_id = kid
        self.connection_file = server.runtime_dir / f"kernel-{kid}.json"
        self.client = BlockingKernelClient()
        self.client.load_connection_file(str(self.connection_file))
        self.client.start_channels()
        self.client.wait_for_ready(timeout=max(1.0, deadline - time.monotonic()))

    def __enter__(self) -> KernelProbe:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.client is not None:
            self.client.stop_channels()
            self.client = None

    def _drain_iopub(self) -> None:
        # Everything the kernel broadcasts also reaches this client; nobody reads it here.
        ch = self.client.iopub_channel
        while ch.msg_ready():
            ch.get_msg(timeout=0.1)

    def _execute(
        self, code: str, user_expressions: dict[str, str] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        self._drain_iopub()
        msg_id = self.client.execute(
            code, silent=True, store_history=False, user_expressions=user_expressions or {}, allow_stdin=False
        )
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"kernel did not answer within {timeout:.0f} s: {code[:200]!r}")
            reply = self.client.get_shell_msg(timeout=remaining)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        content = reply["content"]
        if content["status"] != "ok":
            tb = _ANSI.sub("", "\n".join(content.get("traceback", [])))
            raise ProbeError(f"{content.get('ename')}: {content.get('evalue')} in {code[:200]!r}\n{tb}")
        return content

    def exec(self, code: str, timeout: float = 30.0) -> None:
        """Run statements in the kernel (silently: no execution count, no output in the page)."""
        self._execute(code, timeout=timeout)

    def eval(self, expr: str, timeout: float = 30.0) -> Any:
        """The value of ``expr`` in the kernel, through JSON (non-JSON values come back as ``repr``)."""
        wrapped = f"__import__('json').dumps(({expr}), default=repr)"
        content = self._execute("", {"r": wrapped}, timeout=timeout)
        res = content["user_expressions"]["r"]
        if res.get("status") != "ok":
            raise ProbeError(f"{res.get('ename')}: {res.get('evalue')} evaluating {expr!r}")
        return json.loads(ast.literal_eval(res["data"]["text/plain"]))

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[Any], bool] | None = None,
        *,
        equals: Any = _MISSING,
        timeout: float = 30.0,
        interval: float = 0.1,
    ) -> Any:
        """Poll ``expr`` until ``predicate(value)`` (or ``value == equals``); returns the value."""
        if predicate is None:
            if equals is _MISSING:
                raise TypeError("wait_for needs a predicate or equals=")
            predicate = lambda v: v == equals  # noqa: E731
        deadline = time.monotonic() + timeout
        value: Any = _MISSING
        while True:
            value = self.eval(expr)
            if predicate(value):
                return value
            if time.monotonic() > deadline:
                want = f" == {equals!r}" if equals is not _MISSING else " to satisfy the predicate"
                raise AssertionError(f"kernel: {expr} = {value!r} after {timeout:.0f} s; waited for it{want}")
            time.sleep(interval)


# --------------------------------------------------------------------------- a notebook in a page
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
    browser: Any, server: JupyterServer, cells: Sequence[Cell], name: str, *, run: bool = True, timeout: float = 180.0,
    viewport: dict[str, int] | None = None,
) -> Iterator[NotebookRun]:  # fmt: skip
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


# --------------------------------------------------------------------------- interactions
_JS_POINT_XY = """(gd, [trace, point]) => {
  const fl = gd._fullLayout;
  const tr = gd._fullData[trace];
  if (!fl || !tr) return null;
  const axis = (id, letter) => fl[letter + 'axis' + (id && id.length > 1 ? id.slice(1) : '')];
  const xa = axis(tr.xaxis, 'x');
  const ya = axis(tr.yaxis, 'y');
  const x = tr.x[point];
  const y = tr.y[point];
  if (x === undefined || y === undefined) return null;
  const r = gd.getBoundingClientRect();
  return [r.left + xa._offset + xa.l2p(xa.d2l(x)), r.top + ya._offset + ya.l2p(ya.d2l(y))];
}"""


def plotly_point_position(plot: Any, trace: int, point: int) -> tuple[float, float]:
    """Page coordinates of point ``point`` of trace ``trace`` in the plotly figure under ``plot``."""
    gd = plot.locator(".js-plotly-plot").first if not _is_plot(plot) else plot
    gd.scroll_into_view_if_needed()
    xy = gd.evaluate(_JS_POINT_XY, [trace, point])
    if xy is None:
        raise AssertionError(f"plotly figure has no point {point} in trace {trace}")
    return float(xy[0]), float(xy[1])


def _is_plot(locator: Any) -> bool:
    return bool(locator.evaluate("el => el.classList.contains('js-plotly-plot')"))


def click_plotly_point(
    page: Any, plot: Any, trace: int, point: int, *, expect_text: str | None = None, timeout: float = 15.0
) -> str:
    """Click a plotly point the way a person does: hover its centre, wait for the label, click.

    Plotly points sit under a drag layer (and scattergl points are pixels of a canvas), so the
    click must land on the point's coordinates once plotly has registered the hover. Returns the
    hover label's text; ``expect_text`` must be in it (guards against clicking a neighbour).
    """
    x, y = plotly_point_position(plot, trace, point)
    hover = plot.locator(".hoverlayer .hovertext").first
    deadline = time.monotonic() + timeout
    text = ""
    for k in range(1_000_000):
        # hover is driven by mousemove: come from a slightly different spot each try
        page.mouse.move(x + 4 + (k % 3), y + 4)
        page.mouse.move(x, y, steps=2)
        try:
            hover.wait_for(state="visible", timeout=1500)
            text = hover.text_content() or ""
            if expect_text is None or expect_text in text:
                break
        except Exception:  # playwright TimeoutError: try again until the deadline
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no hover label{f' with {expect_text!r}' if expect_text else ''} at point {point} of trace {trace} (last: {text!r})"
            )
        x, y = plotly_point_position(plot, trace, point)  # the layout may still have been settling
    page.mouse.click(x, y)
    return text


def _parse_number(text: str) -> float:
    m = re.search(r"[-+−]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?", text.replace("−", "-"))
    if not m:
        raise AssertionError(f"slider readout {text!r} is not a number")
    return float(m.group(0))


def drag_slider(
    page: Any,
    slider: Any,
    value: float,
    *,
    probe: KernelProbe | None = None,
    expr: str | None = None,
    steps: int = 12,
    timeout: float = 30.0,
) -> float:
    """Drag an ipywidgets slider's noUi handle to ``value``; returns the final readout.

    ``slider`` is a locator of (or inside which is) one ipywidgets slider. The handle is dropped
    where ``value`` lies on the track (the slider's own range, read from its noUiSlider). With
    ``probe`` and ``expr``, wait until Python's ``expr`` equals the final readout — with
    ``continuous_update`` Python sees intermediate values, so "changed" is not enough.
    """
    target = slider.locator(".noUi-target").first
    handle = slider.locator(".noUi-handle").first
    target.scroll_into_view_if_needed()
    rng = target.evaluate(
        "el => { const r = el.noUiSlider.options.range; const v = (x) => Array.isArray(x) ? x[0] : x; return [v(r.min), v(r.max)]; }"
    )
    lo, hi = float(rng[0]), float(rng[1])
    if not lo <= value <= hi:
        raise ValueError(f"{value} is outside the slider's range [{lo}, {hi}]")
    track = target.bounding_box()
    hb = handle.bounding_box()
    if track is None or hb is None:
        raise AssertionError("slider is not visible")
    hx, hy = hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2
    tx = track["x"] + (value - lo) / (hi - lo) * track["width"]
    page.mouse.move(hx, hy)
    page.mouse.down()
    page.mouse.move(tx, hy, steps=steps)
    page.mouse.up()
    readout_el = slider.locator(".widget-readout").first
    readout = _parse_number(readout_el.text_content() or "")
    if probe is not None and expr is not None:
        decimals = len((readout_el.text_content() or "").strip().partition(".")[2])
        tol = 0.5 * 10 ** (-decimals) + 1e-9
        probe.wait_for(expr, lambda v: v is not None and abs(float(v) - readout) <= tol, timeout=timeout)
    return readout


# --------------------------------------------------------------------------- screenshots
def save_screenshot(
    page: Any, name: str, *, target: Any = None, directory: Path | None = None
) -> Path | None:
    """Save a PNG of the page (or of ``target``, a locator) as ``artifacts/screens/<name>.png``."""
    out = Path(directory or SCREENS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:150] or "screen"
    path = out / f"{safe}.png"
    try:
        (target or page).screenshot(path=str(path), timeout=15000)
    except Exception as err:  # a screenshot must never hide the test's own result
        print(f"screenshot {path.name} failed: {err}", file=sys.stderr)
        return None
    return path
