"""The kernel probe: run and evaluate Python in the kernel a notebook page talks to.

``KernelProbe``
    A ``BlockingKernelClient`` on the notebook's kernel: ``eval`` / ``exec`` / ``wait_for``.
    Code that raises in the kernel raises :class:`ProbeError` here, with the traceback.
"""

from __future__ import annotations

import ast
import json
import re
import time
from collections.abc import Callable
from typing import Any

from .server import JupyterServer

#: ANSI colour codes, stripped from kernel tracebacks (also by :mod:`.notebook`).
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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
