"""Fingerprints of a saved audit's artefacts, the manifest that lists them, and durable writes.

A saved session (:mod:`prefaudit.audit.persist`) is a folder of artefacts. Each artefact carries
the **fingerprint** of what it was computed from, inside the file (safetensors header metadata,
parquet schema metadata, a ``fingerprint`` key of a JSON file):

=====================  ==========================================================================
pairs.parquet          the data: texts of every pair, their ``pair_id``, the format
report.json            the data
concepts.safetensors   the data and the concept specs (name, kind, pattern)
encoded.safetensors    the data, the settings (model, SAE, layer, pooling, dtype, token limits) and
                       the encode cache key (which hashes the model's and the SAE's weights)
results.parquet        the concepts' and the encoded features' fingerprints and the test's attrs
=====================  ==========================================================================

``session.json`` holds the manifest: per artefact its fingerprint, size and sha256.
:func:`verify_folder` refuses a folder where a file's fingerprint, size or checksum differs from the
manifest, where the manifest names a missing file, or where a file is not listed — naming the file
and both fingerprints, so an artefact left by (or copied from) another session is never read.

>>> fp = data_fingerprint(session.data)                    # doctest: +SKIP
>>> verify_folder(Path("saved"), state["manifest"])        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from .protocol import AuditState

FINGERPRINT_KEY = "prefaudit_fingerprint"
SESSION_FILE = "session.json"
# The only files a saved session holds; the loader opens these names and no name read from a file.
ARTEFACTS = ("pairs.parquet", "report.json", "concepts.safetensors", "encoded.safetensors", "results.parquet")
REQUIRED_ARTEFACTS = ("pairs.parquet", "report.json", "concepts.safetensors")
# Settings that decide what an encode produces (batch sizes and the device do not).
SETTINGS_KEYS = ("model", "sae", "layer", "pooling", "dtype", "max_prompt_tokens", "max_response_tokens")
MAX_JSON_BYTES = 64 << 20  # session.json / report.json; a real one is far smaller
_CHUNK = 1 << 20
# What file browsers and editors drop into any folder they show; never read, so never refused.
OS_LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", ".ipynb_checkpoints"})


class SessionFileError(ConfigError):
    """A saved session's file is damaged, hostile, missing or belongs to another session.

    Attributes
    ----------
    file : Path — the file at fault
    field : str or None — the field of that file at fault (dotted path), if one
    expected, found : str or None — the fingerprints the manifest names and the file carries
    """

    def __init__(
        self,
        message: str,
        *,
        file: Path,
        field: str | None = None,
        expected: str | None = None,
        found: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file, self.field, self.expected, self.found = file, field, expected, found


def _digest(*parts: Any) -> str:
    # ensure_ascii: lone surrogates in texts or labels cannot break the hash.
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("ascii")).hexdigest()[:16]


def data_fingerprint(pairs: Any) -> str:
    """Fingerprint of the data: the texts of every pair (in order), their ``pair_id`` and format."""
    return _digest("data", pairs.fingerprint(), pairs.format, pairs.df["pair_id"].tolist())


def settings_fingerprint(config: dict[str, Any]) -> str:
    """Fingerprint of the settings that decide the encoded features (``config`` as saved)."""
    return _digest("settings", {k: config.get(k) for k in SETTINGS_KEYS})


def artefact_fingerprints(
    session: AuditState, config: dict[str, Any], concept_specs: list[dict[str, Any]]
) -> dict[str, str]:
    """Fingerprint of each artefact ``session`` saves (``config`` and concept specs as saved)."""
    data = data_fingerprint(session.data)
    out = {
        "pairs.parquet": data,
        "report.json": data,
        "concepts.safetensors": _digest("concepts", data, concept_specs),
    }
    enc = session.encoded
    if enc is not None:
        out["encoded.safetensors"] = _digest(
            "encoded", data, settings_fingerprint(config), enc.meta.get("key"), enc.pooling
        )
    if session.results is not None:
        attrs = dict(session.results.attrs)
        out["results.parquet"] = _digest(
            "results", out["concepts.safetensors"], out.get("encoded.safetensors"), attrs
        )
    return out


# ---------------------------------------------------------------------------- durable writes
def write_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as JSON and fsync it."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=1, default=str))
        f.flush()
        os.fsync(f.fileno())


def manifest_entry(path: Path, fingerprint: str) -> dict[str, Any]:
    """What the manifest records of a written artefact: its fingerprint, size and sha256."""
    with open(path, "rb") as f:
        size, sha = _size_and_sha256(f.fileno())
    return {"fingerprint": fingerprint, "size": size, "sha256": sha}


def _size_and_sha256(fd: int) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    while chunk := os.read(fd, _CHUNK):
        h.update(chunk)
        size += len(chunk)
    return size, h.hexdigest()


# ---------------------------------------------------------------------------- checks on load
def open_regular(path: Path) -> int:
    """Open ``path`` read-only; refuse a link or anything but a regular file (``SessionFileError``)."""
    try:
        # O_NOFOLLOW: a link planted in the folder must not make the loader read outside it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise SessionFileError(f"{path} is missing.", file=path) from None
    except OSError as e:
        raise SessionFileError(f"{path} cannot be opened ({e.strerror}); a link?", file=path) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SessionFileError(f"{path} is not a regular file.", file=path)
    return fd


def embedded_fingerprint(path: Path) -> str | None:
    """The fingerprint ``path`` carries (``None`` when it carries none or cannot be read)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="np") as f:
                return (f.metadata() or {}).get(FINGERPRINT_KEY)
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.read_schema(path).metadata or {}
            value = meta.get(FINGERPRINT_KEY.encode())
            return value.decode("ascii") if value is not None else None
        if path.suffix == ".json" and path.stat().st_size <= MAX_JSON_BYTES:
            found = json.loads(path.read_bytes()).get("fingerprint")
            return found if isinstance(found, str) else None
    except Exception:  # a damaged file carries no readable fingerprint; the checksum names it
        return None
    return None


def verify_folder(folder: Path, manifest: dict[str, dict[str, Any]]) -> None:
    """Refuse ``folder`` unless it holds exactly the manifest's files, each as recorded.

    ``manifest`` has been validated (names among :data:`ARTEFACTS`). Raises
    :class:`SessionFileError` naming the file, its expected and found fingerprint, and what
    differs (size, sha256).
    """
    for entry in sorted(os.listdir(folder)):
        if entry != SESSION_FILE and entry not in manifest and entry not in OS_LITTER:
            raise SessionFileError(
                f"{folder / entry} is not listed in {folder / SESSION_FILE}'s manifest: it was not "
                "saved with this session (left by another one, or added by hand). Remove it, or "
                "re-save the session.",
                file=folder / entry,
            )
    for name, want in manifest.items():
        path = folder / name
        fd = open_regular(path)
        try:
            size = os.fstat(fd).st_size
            # A file of another size fails anyway: do not read the gigabytes a hostile one may hold.
            sha = _size_and_sha256(fd)[1] if size == want["size"] else ""
        finally:
            os.close(fd)
        found = embedded_fingerprint(path)
        if found == want["fingerprint"] and size == want["size"] and sha == want["sha256"]:
            continue
        what = []
        if found is None:
            what.append("it carries no readable fingerprint")
        elif found != want["fingerprint"]:
            what.append("it belongs to other data or settings")
        if size != want["size"]:
            what.append(f"size expected {want['size']} bytes, found {size}")
        if sha and sha != want["sha256"]:
            what.append(f"sha256 expected {want['sha256'][:16]}…, found {sha[:16]}…")
        raise SessionFileError(
            f"{path} does not match {folder / SESSION_FILE}'s manifest: fingerprint expected "
            f"{want['fingerprint']}, found {found or 'none'}; {'; '.join(what)}. It was changed "
            "after saving or copied from another session; restore it or re-save the session.",
            file=path,
            expected=want["fingerprint"],
            found=found,
        )
