"""The app's options: what to audit (:class:`AppConfig`), how to serve it (:class:`ServeOptions`),
and the app's JSON file, read by the notebook's kernel.

The notebook never sees user text as code: it reads the path of the JSON file from
``PREFAUDIT_APP_CONFIG`` and opens the audit saved there.
"""

from __future__ import annotations

import json
import os
import secrets
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
DEFAULT_PORT = 8866
#: Jupyter's variable for a chosen token; honoured as Jupyter Server does.
TOKEN_ENV = "JUPYTER_TOKEN"


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


@dataclass
class ServeOptions:
    """How ``prefaudit app`` serves the page, locked down as Jupyter Server is by default.

    Parameters
    ----------
    port : int
        Port on 127.0.0.1 (the app listens on no other address; the Host header is checked).
    token : str, optional
        The token a browser must show (``?token=...`` in the printed URL). ``None``:
        ``$JUPYTER_TOKEN`` if set, else a new random one; ``""``: no token (``--no-token``).
    open_browser : bool
        Open the page (with its token) once the server listens.
    max_kernels : int
        Most pages open at once (each holds a kernel); one more gets a message instead. 0: no cap.
    idle_timeout : int
        Seconds after which the kernel of a page no longer connected (a closed tab) and idle is
        shut down. 0: never.
    out : str or Path
        The app's output folder: the page's export box writes only inside it.
    """

    port: int = DEFAULT_PORT
    token: str | None = None
    open_browser: bool = True
    max_kernels: int = 8
    idle_timeout: int = 300
    out: str | Path = "prefaudit-exports"

    def __post_init__(self) -> None:
        if not 0 < int(self.port) < 65536:
            raise ConfigError(f"app: --port must be 1 to 65535, not {self.port}.")
        if self.max_kernels < 0:
            raise ConfigError(f"app: --max-kernels must be 0 (no cap) or more, not {self.max_kernels}.")
        if self.idle_timeout < 0:
            raise ConfigError(
                f"app: --idle-timeout must be 0 (never) or more seconds, not {self.idle_timeout}."
            )
        if self.token is not None and self.token != self.token.strip():
            raise ConfigError("app: the token has leading or trailing spaces.")

    def resolved_token(self) -> str:
        """The token to require: the one given, ``$JUPYTER_TOKEN``, or a new random one ("" for none)."""
        if self.token is not None:
            return self.token
        return os.environ.get(TOKEN_ENV) or secrets.token_hex(24)

    @property
    def cull_interval(self) -> int:
        """Seconds between two looks for idle kernels: often enough to honour ``idle_timeout``."""
        return max(1, min(60, self.idle_timeout // 2))


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
