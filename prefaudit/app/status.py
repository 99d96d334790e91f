"""The app's preparation status: one small JSON file the preparing process writes and the pages read.

``prefaudit app`` serves its page at once and prepares the audit meanwhile; each visitor's page
shows what the preparation is doing and fills in the dashboard once the audit is saved. The
file holds ``{"state": "preparing" | "ready" | "failed", "stage": <plain text>, "seconds": …}``
and is replaced atomically, so a reader never sees half of it.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "status.json"
>>> write_status(path, "preparing", "encoding the pairs"); read_status(path)["stage"]
'encoding the pairs'
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..durable import write_text_atomic

STATES = ("preparing", "ready", "failed")


def write_status(path: str | Path, state: str, stage: str, *, started: float | None = None) -> None:
    """Replace the status file: ``state`` (one of :data:`STATES`) and a plain-text ``stage``."""
    if state not in STATES:
        raise ValueError(f"state={state!r}; choose one of {', '.join(STATES)}.")
    record: dict[str, Any] = {"state": state, "stage": str(stage)}
    if started is not None:
        record["seconds"] = round(time.monotonic() - started, 1)
    write_text_atomic(path, json.dumps(record))


def read_status(path: str | Path) -> dict[str, Any]:
    """The last status written; ``{"state": "preparing", "stage": "starting"}`` before the first."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {"state": "preparing", "stage": "starting"}
    except json.JSONDecodeError as err:  # written atomically: a broken file is not a race
        raise ValueError(f"{path}: the app's status file is not JSON ({err}).") from err
    if record.get("state") not in STATES:
        raise ValueError(f"{path}: unknown state {record.get('state')!r} in the app's status file.")
    return record
