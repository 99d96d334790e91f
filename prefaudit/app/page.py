"""The app page's content: a status line at once, the dashboard once the audit is ready.

``prefaudit app`` serves its page while the audit is still being prepared (:mod:`.prepare`).
:func:`app_page` returns at once with a box that says what the preparation is doing, and fills
it with the audit's line and dashboard when the status file says ``ready`` — polled on the
kernel's event loop, so the page is drawn and connected meanwhile. Without a running loop (plain
Python) it waits for the audit and returns the filled box.

Example
-------
>>> from prefaudit.app import app_page   # doctest: +SKIP
>>> app_page()                           # the app's notebook cell   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import ipywidgets as w

from .config import read_app_config
from .prepare import describe, open_app_session
from .status import read_status

log = logging.getLogger("prefaudit.app")
#: Seconds between two looks at the status file.
POLL_S = 0.5
_FOLLOWING: set[asyncio.Future] = set()


class AppPage:
    """The box a page shows (``.box``) and how it fills it; see the module docstring."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = path
        self.app = read_app_config(path)
        self.line = w.Label("preparing the audit…")
        self.line.add_class("pa-app-status")
        self.box = w.VBox([self.line])
        self.box.add_class("prefaudit-app")
        self.dashboard: Any = None

    def status(self) -> dict[str, Any]:
        """The preparation's status (an app file without one was prepared before it was served)."""
        where = self.app.get("status")
        return {"state": "ready", "stage": "ready"} if where is None else read_status(where)

    def step(self) -> bool:
        """Look once: say the stage, or fill the box when ready. True when there is nothing left to do."""
        st = self.status()
        if st["state"] == "ready":
            self.fill()
            return True
        if st["state"] == "failed":
            # The page says that it failed; the terminal that started the app says why.
            self.line.value = (
                f"preparing the audit failed ({st['stage']}): see the terminal that started the app."
            )
            return True
        took = f", {st['seconds']:.0f} s so far" if "seconds" in st else ""
        self.line.value = f"preparing the audit: {st['stage']}{took}…"
        return False

    def fill(self) -> None:
        self.line.value = "opening the audit…"
        session = open_app_session(self.path)
        self.line.value = describe(session, self.app["title"])  # plain text in a Label
        self.dashboard = session.dashboard()
        self.box.children = (self.line, self.dashboard)

    async def follow(self, poll: float = POLL_S) -> None:
        """Step until done, between the kernel's messages."""
        try:
            while not self.step():
                await asyncio.sleep(poll)
        except Exception as err:  # shown without a traceback, as the app shows every error
            log.warning("the app page could not open the audit", exc_info=err)
            self.line.value = f"opening the audit failed: {type(err).__name__}: {err}"


def app_page(path: str | Path | None = None, *, poll: float = POLL_S) -> w.VBox:
    """The page's box: filled now if the audit is ready, else as soon as it is (module docstring)."""
    page = AppPage(path)
    if page.step():
        return page.box
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no event loop (plain Python): wait here
        while not page.step():
            time.sleep(poll)
        return page.box
    task = asyncio.ensure_future(page.follow(poll))
    _FOLLOWING.add(task)  # the loop holds tasks weakly: keep it until it is done
    task.add_done_callback(_FOLLOWING.discard)
    return page.box
