"""A no-code app: the dashboard of one audit served as a web page with Voila.

``prefaudit app DATA`` encodes and tests DATA once (progress in the terminal), saves the audit to
a temporary directory and serves ``dashboard.ipynb`` with Voila. Every visitor gets a fresh
kernel that opens the saved audit (seconds, no encoding) and shows ``session.dashboard()``; the
views load the model lazily when a drill-down needs token activations. The notebook never sees
user text as code: it reads the path of a small JSON file from ``PREFAUDIT_APP_CONFIG``.

Example
-------
$ prefaudit app demo                                  # the embedded demo, opens a browser
$ prefaudit app pairs.jsonl --port 8870 --no-browser

>>> from prefaudit.app import AppConfig, prepare_app    # doctest: +SKIP
>>> files = prepare_app(AppConfig("demo", limit=200), Path("/tmp/app"))  # doctest: +SKIP
"""

from __future__ import annotations

from .config import CONFIG_ENV, NOTEBOOK, AppConfig, read_app_config
from .prepare import build_session, describe, load_app_pairs, open_app_session, prepare_app
from .serve import serve, voila_command, voila_env

__all__ = [
    "CONFIG_ENV",
    "NOTEBOOK",
    "AppConfig",
    "build_session",
    "describe",
    "load_app_pairs",
    "open_app_session",
    "prepare_app",
    "read_app_config",
    "serve",
    "voila_command",
    "voila_env",
]
