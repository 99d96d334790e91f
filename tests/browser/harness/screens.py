"""Screenshots of pages under test.

``save_screenshot``
    PNG into ``artifacts/screens/`` (git-ignored; ``PREFAUDIT_SCREENS_DIR`` moves it).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from .server import REPO

SCREENS_DIR = Path(os.environ.get("PREFAUDIT_SCREENS_DIR", REPO / "artifacts" / "screens"))


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
