"""The app's options (:class:`AppConfig`) and its JSON file, read by the notebook's kernel.

The notebook never sees user text as code: it reads the path of the JSON file from
``PREFAUDIT_APP_CONFIG`` and opens the audit saved there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

HERE = Path(__file__).resolve().parent
#: The shipped notebook Voila runs.
NOTEBOOK = HERE / "dashboard.ipynb"
#: Environment variable that holds the path of the app's JSON file (read by the notebook's kernel).
CONFIG_ENV = "PREFAUDIT_APP_CONFIG"
DEMO = "demo"


@dataclass
class AppConfig:
    """What to audit and how: the options of ``prefaudit app``.

    ``data`` is a file, a hub dataset name or ``"demo"`` (the embedded demo set). ``sae=False``
    tests text concepts only (no model). The rest are :class:`~prefaudit.session.AuditSession`'s
    arguments of the same names; ``None`` keeps its default.
    """

    data: str
    model: str | None = None
    sae: str | bool | None = None
    layer: int | None = None
    pooling: str = "max"
    device: str = "auto"
    limit: int | None = None
    split: str = "train"
    cache_dir: str | bool | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not str(self.data).strip():
            raise ConfigError("app: DATA is empty (a file, a hub dataset name or 'demo').")
        if self.limit is not None and self.limit < 2:
            raise ConfigError(
                f"app: --limit must be at least 2 (an audit needs two pairs), not {self.limit}."
            )

    @property
    def is_demo(self) -> bool:
        return self.data == DEMO

    def session_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"pooling": self.pooling, "batch_size": self.batch_size, "device": self.device}
        for name in ("model", "sae", "layer", "cache_dir"):
            if getattr(self, name) is not None:
                kw[name] = getattr(self, name)
        return kw


def read_app_config(path: str | Path | None = None) -> dict[str, Any]:
    """The app's JSON file (``PREFAUDIT_APP_CONFIG`` when ``path`` is None)."""
    if path is None:
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise ConfigError(
                f"{CONFIG_ENV} is not set: this notebook is the page of `prefaudit app DATA`; start it that way."
            )
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{CONFIG_ENV}={path}: no such file (was the app's temporary folder removed?).")
    try:
        app = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{p}: not JSON ({err}).") from err
    if not isinstance(app, dict) or not isinstance(app.get("session"), str):
        raise ConfigError(f"{p}: no 'session' path in the app's JSON file.")
    return app
