"""The network guard: a page under test must not leave the machine.

``NetworkGuard``
    Aborts and records every request (and WebSocket) that is not 127.0.0.1/localhost or a
    file:/data:/blob: URL; ``verify()`` raises if anything unexpected was recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
LOCAL_SCHEMES = ("data", "blob", "file", "about")

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
