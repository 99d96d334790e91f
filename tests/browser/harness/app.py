"""``prefaudit app`` (the Voila web app) as a throwaway server for tests.

``AppServer(args, base_dir)``
    Runs ``prefaudit app <args> --port <free> --no-browser`` with every Jupyter/IPython
    directory and ``TMPDIR`` isolated under ``base_dir`` and its token chosen here
    (``JUPYTER_TOKEN``; ``url`` carries it); ``start()`` waits until Voila listens,
    ``stop()`` sends SIGTERM (the app stops Voila, Voila its kernels), notes in ``orphans`` the
    kernels still running after that, then kills what is left.
    Voila keeps its kernels' connection files under ``TMPDIR``, so leftover kernels are found
    by that path, as :class:`~.server.JupyterServer` finds its own.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .server import JUPYTER_DIR_VARS, IsolatedProcess, free_port, pids_with_argument_under


def prefaudit_command() -> list[str]:
    """The installed ``prefaudit`` console script beside this Python, else ``python -m prefaudit.cli``."""
    script = Path(sys.executable).with_name("prefaudit")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "prefaudit.cli"]


class AppServer(IsolatedProcess):
    """``prefaudit app`` on a free port of 127.0.0.1, isolated under ``base_dir``.

    Example
    -------
    >>> app = AppServer(["demo", "--limit", "200"], Path("/tmp/x")).start()   # doctest: +SKIP
    >>> page.goto(app.url, wait_until="commit")                               # doctest: +SKIP
    >>> app.stop()                                                            # doctest: +SKIP
    """

    def __init__(self, args: Sequence[str], base_dir: Path) -> None:
        self.args = [str(a) for a in args]
        self.base_dir = Path(base_dir)
        self.dirs = {var: self.base_dir / var.lower() for var in JUPYTER_DIR_VARS}
        self.tmp_dir = self.base_dir / "tmp"
        self.log_path = self.base_dir / "app.log"
        self.port = 0
        self.token = secrets.token_hex(16)
        self.proc = None
        self.orphans: list[int] = []
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def start(self, timeout: float = 600.0) -> AppServer:
        """Start the app and wait until Voila accepts connections (after the audit is prepared)."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cmd = [*prefaudit_command(), "app", *self.args, "--port", str(self.port), "--no-browser", "--quiet"]
        self._spawn(cmd, self.base_dir, {"TMPDIR": str(self.tmp_dir), "JUPYTER_TOKEN": self.token})
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise RuntimeError(f"prefaudit app exited with {code}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prefaudit app did not listen within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.3)
        return self

    def _listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None:
            self._end_process(timeout)
            # What a clean stop left behind (the app must shut Voila's kernels down itself).
            self.orphans = self.kernel_pids()
        self._finish()

    def kernel_pids(self) -> list[int]:
        """Processes whose command line names a file under this app's ``TMPDIR`` (Voila's kernels)."""
        marker = str(self.tmp_dir) + os.sep
        return pids_with_argument_under(marker)
