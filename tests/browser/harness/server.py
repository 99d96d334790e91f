"""A throwaway JupyterLab / Notebook 7 server for tests and benchmarks.

``JupyterServer("lab" | "notebook", base_dir)``
    A server on a free port with a token, every Jupyter/IPython directory isolated under
    ``base_dir``; ``start()`` waits for ``/api/status``, ``stop()`` terminates, then kills the
    process group (kernels included). It also speaks the REST API (sessions, kernel ids) and
    builds the page URL of a notebook.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

#: The repository root: on the kernels' ``PYTHONPATH`` (``from tests import tiny``).
REPO = Path(__file__).resolve().parents[3]
JUPYTER_DIR_VARS = (
    "JUPYTER_CONFIG_DIR",
    "JUPYTER_DATA_DIR",
    "JUPYTER_RUNTIME_DIR",
    "JUPYTERLAB_SETTINGS_DIR",
    "JUPYTERLAB_WORKSPACES_DIR",
    "IPYTHONDIR",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class IsolatedProcess:
    """What the Jupyter server and the Voila app share: a child in its own session whose every
    Jupyter/IPython directory lies under ``base_dir``, its output in ``log_path``, and its
    kernels found (and killed) by a path only they name (:meth:`kernel_pids`)."""

    base_dir: Path
    dirs: dict[str, Path]
    log_path: Path
    proc: subprocess.Popen | None = None
    _log: Any = None

    def kernel_pids(self) -> list[int]:  # pragma: no cover - each subclass names its marker
        raise NotImplementedError

    def _spawn(self, cmd: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> None:
        for path in self.dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update({var: str(path) for var, path in self.dirs.items()})
        env.update(extra_env or {})
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.pop("JUPYTER_PATH", None)
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in _finish()
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _end_process(self, timeout: float) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL the process group."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        self.proc = None

    def _finish(self, grace: float = 5.0) -> None:
        """Kill the kernels still running and close the log."""
        terminate(self.kernel_pids(), grace)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


class JupyterServer(IsolatedProcess):
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
        self.proc = None
        self._log = None

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
                sys.executable,
                "-m",
                "jupyterlab",
                *common,
                "--LabApp.expose_app_in_browser=True",
                "--LabApp.news_url=None",
                "--LabApp.extension_manager=readonly",
                "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
            ]
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
        self._write_settings()
        self.port = free_port()
        self._spawn(self._command(), self.root_dir)
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode  # stop() forgets the process
                self.stop()
                raise RuntimeError(f"{self.app} server exited with {code}:\n{self.log_tail()}")
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
        self._end_process(timeout)
        self._finish()

    def kernel_pids(self) -> list[int]:
        """Processes whose command line names this server's runtime directory (its kernels)."""
        return pids_with_argument_under(str(self.runtime_dir) + os.sep)

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


def pids_with_argument_under(marker: str) -> list[int]:
    """Processes with a command-line argument starting with ``marker`` (a directory + ``os.sep``)."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.decode(errors="replace").startswith(marker) for a in args):
            pids.append(int(entry.name))
    return pids


def terminate(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM ``pids``, then SIGKILL those still alive after ``grace`` seconds."""
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


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
