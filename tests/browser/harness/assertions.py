"""``expect``: Playwright's web-first assertions with a timeout fit for a busy, shared machine.

Imported from playwright on first use, so that test modules import without playwright and the
suite skips (or fails) with the reason instead of erroring at collection.
"""

from __future__ import annotations

import os
from typing import Any

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
