"""Headless Chromium: where the binary is, the launch arguments, and whether it can run here.

The only place in the repository that knows the Chromium path: the browser fixtures
(``tests/browser/conftest.py``), the widget-module tests (``tests/test_widgets_js.py``) and the
latency benchmark all launch through :func:`launch_chromium`, so ``PREFAUDIT_CHROMIUM`` (a
Chromium binary other than Debian's ``/usr/lib/chromium/chromium``) reaches every layer.

``chromium_problem()``
    ``None`` when Debian's Chromium and the playwright package are usable, else the reason.
``launch_chromium(playwright)``
    Chromium with the launch arguments verified on these machines (see docs/BROWSER_TESTING.md).
"""

from __future__ import annotations

import os
from typing import Any

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


def launch_chromium(playwright: Any, **kwargs: Any) -> Any:
    """Headless Debian Chromium with the verified arguments (Playwright sync API)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, **kwargs)


# An init script (``page.add_init_script``) that imports any ES module over 1 MB 2.5 s late, as
# plotly's 5 MB FigureWidget module imports on a busy machine (past anywidget's 2 s; see
# docs/BROWSER_TESTING.md). Counts the slowed imports in ``window.__slowImports``.
SLOW_PLOTLY = """(() => {
  const create = URL.createObjectURL.bind(URL);
  URL.createObjectURL = (blob) => {
    const url = create(blob);
    if (!(blob instanceof Blob) || blob.size < 1e6 || !/javascript/.test(blob.type)) return url;
    const late = `await new Promise((r) => setTimeout(r, 2500));\\n` +
      `export * from ${JSON.stringify(url)};\\nexport { default } from ${JSON.stringify(url)};\\n`;
    window.__slowImports = (window.__slowImports || 0) + 1;
    return create(new Blob([late], { type: "text/javascript" }));
  };
})();"""
