"""Durable writes: a file replaced atomically, and the flush that makes a write or a rename stick.

One place for what the encode cache, the feature store, saved sessions and run records each need:
a reader never sees half a file (temporary file in the same folder, then ``os.replace``), and a
crash right after never loses it (``fsync`` of the file, then of its folder's entries).
Standard library only, so every layer can use it.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "meta.json"
>>> write_text_atomic(path, "{}") == path, path.read_text()
(True, '{}')
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["fsync_path", "process_alive", "write_text_atomic"]


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a written file, or a folder's entries (a rename in it), to the disk.

    A file that cannot be flushed raises (its data may not be on disk); a folder that cannot be
    opened or flushed is let go (Windows, some network file systems: their renames stand as they are).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if path.is_dir():
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, prefix: str | None = None) -> Path:
    """Replace ``path`` by ``text`` atomically and durably; returns ``path``.

    The temporary file lies beside ``path`` (so the rename is atomic) and is named ``prefix`` +
    random (default ``.<name>.``), so a cache can tell whose leftover it is; it never outlives a
    failed write.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_path(path.parent)
    return path


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` on this machine may still be writing (POSIX: ``os.kill(pid, 0)``).

    Only "no such process" counts as dead; another user's process, or one that cannot be asked,
    counts as alive, so a cleaner never removes what a live writer still needs. Not for Windows,
    where ``os.kill`` ends the process.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
