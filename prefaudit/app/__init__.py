"""A no-code app: the dashboard of one audit served as a web page with Voila.

``prefaudit app DATA`` serves ``dashboard.ipynb`` with Voila at once and meanwhile encodes and
tests DATA once (progress in the terminal) and saves the audit to a temporary directory. Every
visitor gets a fresh kernel whose page says what the preparation is doing, then opens the saved
audit (seconds, no encoding) and shows ``session.dashboard()`` (:mod:`.page`); the
views load the model lazily when a drill-down needs token activations. The notebook never sees
user text as code: it reads the path of a small JSON file from ``PREFAUDIT_APP_CONFIG``.

The server is locked down as Jupyter Server is (:func:`voila_settings`): a token, the Host header
checked, no tracebacks on the page, closed pages' kernels culled and a cap on open pages; the
page's export box writes only into the app's output folder (``--out``).

Example
-------
$ prefaudit app demo                                  # the embedded demo, opens a browser
$ prefaudit app pairs.jsonl --port 8870 --no-browser  # prints http://127.0.0.1:8870/?token=...

>>> from prefaudit.app import AppConfig, prepare_app    # doctest: +SKIP
>>> files = prepare_app(AppConfig("demo", limit=200), Path("/tmp/app"))  # doctest: +SKIP
"""

from __future__ import annotations

from .config import CONFIG_ENV, NOTEBOOK, AppConfig, ServeOptions, read_app_config
from .page import app_page
from .prepare import (
    build_session,
    describe,
    load_app_pairs,
    open_app_session,
    prepare_app,
    prepare_audit,
    write_app_files,
)
from .serve import serve, voila_command, voila_env, voila_settings

__all__ = [
    "CONFIG_ENV",
    "NOTEBOOK",
    "AppConfig",
    "ServeOptions",
    "app_page",
    "build_session",
    "describe",
    "load_app_pairs",
    "open_app_session",
    "prepare_app",
    "prepare_audit",
    "read_app_config",
    "serve",
    "voila_command",
    "voila_env",
    "voila_settings",
    "write_app_files",
]
