"""What a run puts on disk: its folder name, its ``run.json``, and shaped datasets (JSON lines, Parquet).

* **Run names are names, not paths.** :func:`check_run_name` refuses a name with a path separator,
  ``.``/``..``, a NUL or other control character, text that cannot be encoded, or more than
  :data:`RUN_NAME_MAX_BYTES` bytes — before anything is written. :func:`run_folder` then checks that
  the resolved folder lies inside the ``runs/`` root (a symlink out of it is refused too).
* **A run whose process died reads as "interrupted".** ``run.json`` records its owner (pid, host and
  the process's start time, so a reused pid is not mistaken for the owner). :func:`read_run_record`
  reports a run that says ``queued``/``preparing``/``running`` but whose owner on this host is gone
  as ``interrupted`` and rewrites its ``run.json`` so. A run owned by another host is reported as
  written (its process cannot be checked from here). ``run.json`` is written atomically (temporary
  file, then rename), so a crash never leaves it half-written.

Only the standard library at import time (``psutil``, a dependency of accelerate, and pandas are
imported where used), so any module can import these without a cycle.

Example
-------
>>> check_run_name("margin-beta0.1")
'margin-beta0.1'
>>> check_run_name("../../etc")
Traceback (most recent call last):
...
prefaudit.errors.ConfigError: name='../../etc' is not a run name: it contains a path separator ('/'). Use letters, digits, '-', '_' or '.'.
>>> export_jsonl(shaped.dataset, "out/train.jsonl")  # doctest: +SKIP
PosixPath('out/train.jsonl')
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from ..durable import write_text_atomic
from ..errors import ConfigError

__all__ = [
    "INTERRUPTED",
    "LIVE_STATUSES",
    "RUN_NAME_MAX_BYTES",
    "check_run_name",
    "export_jsonl",
    "export_parquet",
    "list_runs",
    "process_owner",
    "read_run_record",
    "run_folder",
    "write_run_record",
]

#: A run folder is ``<timestamp>-<name>``: 16 bytes of timestamp plus the name stay under 255 bytes.
RUN_NAME_MAX_BYTES = 200
#: What file systems allow for one folder name.
FOLDER_MAX_BYTES = 255
#: Statuses of a run whose process is still working on it.
LIVE_STATUSES = ("queued", "preparing", "running")
#: What a live status becomes once the process that owned the run is gone.
INTERRUPTED = "interrupted"
RECORD = "run.json"


# ---------------------------------------------------------------------- names
def check_run_name(name: Any, field: str = "name", max_bytes: int = RUN_NAME_MAX_BYTES) -> str:
    """Return ``name`` if it can be a folder name inside ``runs/``; else raise ``ConfigError``.

    Refused: non-strings, empty or blank names, ``.`` and ``..``, ``/`` and ``\\`` (on every OS: a
    runs folder may be shared), NUL and other control characters, text that cannot be encoded
    (lone surrogates), and names over ``max_bytes`` bytes in UTF-8.
    """
    if not isinstance(name, str):
        raise ConfigError(f"{field} must be a string (a run name), got {type(name).__name__} {name!r}.")

    def bad(why: str) -> ConfigError:
        return ConfigError(
            f"{field}={name!r} is not a run name: {why}. Use letters, digits, '-', '_' or '.'."
        )

    if not name.strip():
        raise bad("it is empty")
    if name in (".", ".."):
        raise bad("it names a folder itself")
    for sep in ("/", "\\", os.sep, os.altsep):
        if sep and sep in name:
            raise bad(f"it contains a path separator ({sep!r})")
    control = next((c for c in name if ord(c) < 32 or ord(c) == 127), None)
    if control is not None:
        raise bad(f"it contains the control character {control!r}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError as err:
        raise bad(f"it cannot be encoded as UTF-8 ({err.reason} at position {err.start})") from None
    if size > max_bytes:
        raise bad(f"it is {size} bytes long; at most {max_bytes}")
    return name


def run_folder(root: str | Path, folder: str, *, claim: bool = False) -> Path:
    """``root / folder`` after checking ``folder`` is a run name and the result stays inside ``root``.

    With ``claim``, the folder is also created, atomically: when another run (another kernel on the
    same cache, the same name in the same second) holds it already, ``folder-2``, ``folder-3``, …
    is taken instead, so two runs never write into one folder.
    """
    check_run_name(folder, "run folder", max_bytes=FOLDER_MAX_BYTES)
    root = Path(root).expanduser()
    path = root / folder
    # resolve() follows symlinks: a runs/ entry linking elsewhere is refused as well.
    if not path.resolve().is_relative_to(root.resolve()):
        raise ConfigError(f"Run folder {path} resolves to {path.resolve()}, outside {root}.")
    if not claim:
        return path
    root.mkdir(parents=True, exist_ok=True)
    for k in range(1, 1000):
        candidate = path if k == 1 else root / f"{folder}-{k}"
        try:
            candidate.mkdir()  # atomic: exactly one claimant succeeds
        except FileExistsError:
            continue
        return candidate
    raise ConfigError(f"Run folders {path} to {path}-999 are all taken; give the run another name.")


# ---------------------------------------------------------------------- run.json
def process_owner() -> dict[str, Any]:
    """This process as the owner of a run: pid, host and start time (epoch seconds)."""
    import psutil

    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "process_started": round(psutil.Process().create_time(), 3),
    }


def owner_alive(owner: Any) -> bool | None:
    """Whether the process in an owner record still runs: ``None`` when that cannot be told from here."""
    import psutil

    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return None
    if owner.get("host") != socket.gethostname():
        return None
    try:
        started = psutil.Process(owner["pid"]).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # exists but cannot be inspected (another user's): not ours to call dead
        return None
    recorded = owner.get("process_started")
    # A different start time is a new process that reuses the pid.
    return not isinstance(recorded, (int, float)) or abs(started - recorded) < 1.0


def write_run_record(path: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` as JSON to ``path`` atomically (a temporary file in the folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(record, indent=2, default=str))


def read_run_record(path: str | Path, *, repair: bool = True) -> dict[str, Any]:
    """A run's ``run.json`` (``path``: the file or its folder), with a dead owner's run ``interrupted``.

    Parameters
    ----------
    path : str or Path
    repair : bool
        Rewrite the file when the run is found interrupted, so every later reader sees it (a failed
        rewrite is a warning; the returned record says ``interrupted`` either way).

    Raises
    ------
    ConfigError
        The file is missing, is not JSON or not a JSON object (the message names the file).
    """
    path = Path(path)
    if path.is_dir():
        path = path / RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"No run record at {path}.") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"Run record {path} cannot be read: {err}") from err
    if not isinstance(record, dict):
        raise ConfigError(f"Run record {path} holds {type(record).__name__}, not a JSON object.")
    status = record.get("status")
    if status in LIVE_STATUSES and owner_alive(record.get("owner")) is False:
        owner = record["owner"]
        record["status"] = INTERRUPTED
        record["interrupted"] = {"was": status, "noticed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        record["error"] = record.get("error") or (
            f"The process that ran it (pid {owner['pid']} on {owner.get('host')}) ended while it was {status}."
        )
        if repair:
            try:
                write_run_record(path, record)
            except OSError as err:
                warnings.warn(
                    f"Run {path.parent.name!r} is interrupted; could not rewrite {path}: {err}", stacklevel=2
                )
    return record


def list_runs(root: str | Path | None = None) -> Any:
    """One row per run folder under ``root`` (default ``<cache>/runs``): name, status, steps, folder.

    Statuses are :func:`read_run_record`'s (a dead owner's run reads ``interrupted``); a folder whose
    ``run.json`` cannot be read is listed with status ``unreadable`` and the reason as its error.
    """
    import pandas as pd

    if root is None:
        from ..default_model import cache_root

        root = cache_root() / "runs"
    rows = []
    for record_path in sorted(Path(root).expanduser().glob(f"*/{RECORD}")):
        try:
            rec = read_run_record(record_path)
        except ConfigError as err:
            rec = {"name": record_path.parent.name, "status": "unreadable", "error": str(err)}
        rows.append(
            {
                "name": rec.get("name"),
                "status": rec.get("status"),
                "intervention": (rec.get("config") or {}).get("intervention"),
                "steps": rec.get("steps"),
                "error": rec.get("error"),
                "folder": str(record_path.parent),
            }
        )
    columns = ["name", "status", "intervention", "steps", "error", "folder"]
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------- shaped datasets
def export_jsonl(dataset: Any, path: str | Path) -> Path:
    """Write a shaped dataset as JSON lines (one pair per line; messages stay lists of dicts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in dataset:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def export_parquet(dataset: Any, path: str | Path) -> Path:
    """Write a shaped dataset as Parquet (``datasets.Dataset.to_parquet``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(path))
    return path
