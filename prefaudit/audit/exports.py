"""Where a pair export may write, and how it writes (``session.edits.export``).

Exports never replace a file unless asked (``overwrite=True``), never the audited dataset's own
file, and, under ``prefaudit app`` (which sets ``PREFAUDIT_EXPORT_DIR``) or with ``root=``, write
only inside that folder: a page visitor types the path, and it must not reach the rest of the disk.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError

EXPORT_FORMATS = (".jsonl", ".csv")
#: Set by ``prefaudit app`` in its kernels' environment: the one folder exports may write into.
EXPORT_DIR_ENV = "PREFAUDIT_EXPORT_DIR"


def export_root(root: str | Path | None = None) -> Path | None:
    """The folder exports are confined to: ``root``, else ``$PREFAUDIT_EXPORT_DIR``, else None (anywhere).

    In a notebook the person who types the path runs the kernel and can write any file anyway,
    so nothing is confined there; ``prefaudit app`` sets the variable for its page visitors.
    """
    if root is None:
        root = os.environ.get(EXPORT_DIR_ENV) or None
    return None if root is None else Path(root).expanduser().resolve()


def export_target(path: str | Path, root: Path | None, protected: Iterable[Any] = ()) -> Path:
    """The file an export of ``path`` writes (links resolved), or a ``ConfigError`` saying why not.

    A relative ``path`` is taken inside ``root`` when there is one. Refused: a name that is not
    ``.jsonl``/``.csv`` (before or after links), anything that resolves outside ``root``, a
    folder, and any of the ``protected`` files (the audited dataset).
    """
    given = Path(path).expanduser()
    if given.suffix.lower() not in EXPORT_FORMATS:
        raise ConfigError(f"export_pairs: {given.name!r}; name a {' or '.join(EXPORT_FORMATS)} file.")
    target = ((root / given) if root is not None else given).resolve()
    if root is not None and not target.is_relative_to(root):
        raise ConfigError(
            f"export_pairs: {str(path)!r} leads to {target}, outside the export folder {root}; "
            f"name a file in that folder (e.g. 'drivers{given.suffix}')."
        )
    if target.suffix.lower() not in EXPORT_FORMATS:
        raise ConfigError(
            f"export_pairs: {str(path)!r} links to {target}, not a {' or '.join(EXPORT_FORMATS)} file."
        )
    if target.is_dir():
        raise ConfigError(f"export_pairs: {target} is a folder; name a file.")
    for p in protected:
        if isinstance(p, (str, os.PathLike)) and str(p) and _same_file(target, Path(p).expanduser()):
            raise ConfigError(f"export_pairs: {target} is the audited dataset's own file; name another file.")
    return target


def write_export(target: Path, text: str, *, overwrite: bool) -> None:
    """Write ``text`` (UTF-8) to ``target``: a new file, or with ``overwrite`` an atomic replacement.

    Without ``overwrite`` the file is created exclusively (``O_EXCL``), so a file (or link) that
    appears meanwhile is not clobbered either.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        try:
            f = open(target, "x", encoding="utf-8", newline="")  # noqa: SIM115 - closed below
        except FileExistsError:
            raise FileExistsError(
                errno.EEXIST, "export_pairs: the file exists; pass overwrite=True to replace it", str(target)
            ) from None
        try:
            with f:
                f.write(text)
        except BaseException as err:
            target.unlink(missing_ok=True)  # a full disk leaves no half-written export behind
            raise _write_error(err, target) from err
        return
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        if target.exists():
            shutil.copymode(target, tmp)  # the replaced file keeps its permissions
        os.replace(tmp, target)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)  # the old file stays as it was
        raise _write_error(err, target) from err


def _write_error(err: BaseException, target: Path) -> BaseException:
    """An ``OSError`` naming ``target`` (the OS names no file for a failed write); others as they are."""
    if not isinstance(err, OSError):
        return err
    return type(err)(err.errno, f"export_pairs: could not write the file ({err.strerror})", str(target))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.is_file() and (a.resolve() == b.resolve() or (a.exists() and os.path.samefile(a, b)))
    except OSError:
        return False
