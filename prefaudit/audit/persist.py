"""Save and open an audit (:class:`~prefaudit.audit.core.AuditCore`) as a directory — no pickle.

Layout::

    session.json         config, labels, notes, weights, verdicts, selection, concept specs, and
                         the manifest: each file below with its fingerprint, size and sha256
    pairs.parquet        the data (message lists and odd metadata columns JSON-encoded)
    report.json          the load report (rows read, kept, rejected with reasons)
    encoded.safetensors  pooled SAE features (sparse parts) and per-response arrays
    concepts.safetensors concept values and direction vectors
    results.parquet      the feature table

**Saving is atomic.** The whole session is written into a hidden folder beside the target, every
file and the folder fsynced, then renamed into place; an existing session is first renamed aside
and removed only after the new one is in place. A crash or an error mid-save leaves the previous
session as it was; the folder never holds a mix of two sessions.

**Opening checks everything.** Each artefact carries the fingerprint of the data and settings it
was computed from (:mod:`prefaudit.audit.fingerprint`); ``load`` refuses a file whose fingerprint,
size or checksum differs from the manifest, a listed file that is missing, and a file the manifest
does not list (:class:`~prefaudit.audit.fingerprint.SessionFileError`, a ``ValueError``, naming the
file and both fingerprints). ``session.json`` and ``report.json`` are validated field by field
(types, ranges, unknown keys, nesting, size); the loader opens only the fixed file names above and
never a path read from a file, never follows a link, and never unpickles. A session saved by
prefaudit before the manifest (format 1) still opens, with a warning that its files cannot be
checked, and with the row counts of every artefact checked against the data.

Concepts defined by a Python callable cannot be serialised safely; their *values* are saved and
restored, so the table and the views are identical, but new data cannot be scored with them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import ids
from ..durable import fsync_path, process_alive
from ..errors import ConfigError, PrefauditError
from ..features.concepts import DirectionConcept, TextConcept, builtin_concepts, regex_concept
from ..features.encoded import EncodedFeatures
from .fingerprint import (
    ARTEFACTS,
    FINGERPRINT_KEY,
    REQUIRED_ARTEFACTS,
    SESSION_FILE,
    SessionFileError,
    artefact_fingerprints,
    data_fingerprint,
    manifest_entry,
    open_regular,
    settings_fingerprint,
    verify_folder,
    write_json,
)
from .fit import SAEFit
from .persist_schema import FORMAT_VERSION, JSON_COLS, check_report, check_state, fail, parse_json, read_json

if TYPE_CHECKING:
    from .protocol import AuditState

__all__ = ["FORMAT_VERSION", "SessionFileError", "load_session", "save_session"]


# ---------------------------------------------------------------------------- saving
def save_session(session: AuditState, path: Path) -> Path:
    """Write ``session`` to the folder ``path`` atomically (see the module docstring)."""
    target = Path(os.path.abspath(path))  # "." or "x/.." name a folder too
    target = target.resolve() if target.is_symlink() else target  # replace the folder, not the link
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(target)
    tmp = _sibling(target, "saving")
    tmp.mkdir()
    try:
        _write_session(session, tmp, target)
        _replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Path(path)


def _check_target(path: Path) -> None:
    if not path.exists():
        return
    if not path.is_dir():
        raise ConfigError(f"{path} is a file; a session is saved as a folder.")
    if not (path / SESSION_FILE).is_file() and any(path.iterdir()):
        raise ConfigError(
            f"{path} holds files but no {SESSION_FILE}: it is not a saved prefaudit session, and saving "
            "replaces the whole folder. Choose a new or empty folder."
        )


def _sibling(path: Path, what: str) -> Path:
    # The pid lets a later save tell a dead writer's leftovers from a live one's.
    return path.parent / f".{path.name}.{what}-{os.getpid()}-{secrets.token_hex(4)}"


def _clean_leftovers(path: Path) -> None:
    """Remove the temporary folders a killed save to ``path`` left behind (POSIX only)."""
    if os.name != "posix":
        return  # os.kill(pid, 0) is no liveness probe on Windows
    for old in path.parent.glob(f".{_glob_escape(path.name)}.*-*-*"):
        parts = old.name[len(path.name) + 2 :].split("-")
        if len(parts) != 3 or parts[0] not in ("saving", "old") or not parts[1].isdigit():
            continue
        if not process_alive(int(parts[1])):  # alive, another user's or unknowable: left alone
            shutil.rmtree(old, ignore_errors=True)


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _replace_folder(tmp: Path, path: Path) -> None:
    if not os.path.lexists(path):
        os.rename(tmp, path)
        fsync_path(path.parent)
        return
    old = _sibling(path, "old")
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    fsync_path(path.parent)
    try:
        shutil.rmtree(old)
    except OSError as e:
        warnings.warn(f"The previous session was moved to {old} and could not be removed: {e}", stacklevel=3)


def _write_session(session: AuditState, folder: Path, target: Path) -> None:
    """Write every artefact and then ``session.json`` into ``folder`` (which becomes ``target``)."""
    from safetensors.numpy import save_file

    config = dict(session.config)
    if config["model"] is not None and not isinstance(config["model"], str):
        config["model"] = getattr(getattr(config["model"], "config", None), "_name_or_path", None)
    if config["sae"] is not None and not isinstance(config["sae"], (str, bool, list, tuple)):
        config["sae"] = session.sae.name if session.uses_sae else False
    specs = [_concept_spec(c) for c in session.concepts]
    fps = artefact_fingerprints(session, config, specs)

    json_cols = _frame_to_parquet(session.data.df, folder / "pairs.parquet", fps["pairs.parquet"])
    r = session.data.report
    report = {
        "source": r.source,
        "n_read": r.n_read,
        "n_kept": r.n_kept,
        "rejected": [{"index": x.index, "field": x.field, "reason": x.reason} for x in r.rejected],
        "notes": list(r.notes),
        "format": session.data.format,
        "fingerprint": fps["report.json"],
    }
    write_json(report, folder / "report.json")
    c_vals, r_vals = session.space.concept_values()
    tensors = {"chosen": np.ascontiguousarray(c_vals), "rejected": np.ascontiguousarray(r_vals)}
    for c in session.concepts:
        if isinstance(c, DirectionConcept):
            tensors[f"direction/{c.name}"] = np.ascontiguousarray(c.direction)
    fp_meta = {FINGERPRINT_KEY: fps["concepts.safetensors"]}
    save_file(tensors, str(folder / "concepts.safetensors"), metadata=fp_meta)
    if session.encoded is not None:
        arrays = {
            k: np.ascontiguousarray(v) for k, v in session.encoded.to_arrays().items() if k != "pooling"
        }
        fp_meta = {FINGERPRINT_KEY: fps["encoded.safetensors"]}
        save_file(arrays, str(folder / "encoded.safetensors"), metadata=fp_meta)
    results_json_cols: list[str] = []
    if session.results is not None:
        results_json_cols = _frame_to_parquet(
            session.results, folder / "results.parquet", fps["results.parquet"]
        )
    manifest = {}
    for name, fp in fps.items():
        fsync_path(folder / name)
        manifest[name] = manifest_entry(folder / name, fp)
    state = {
        "format_version": FORMAT_VERSION,
        "fingerprint": {"data": fps["pairs.parquet"], "settings": settings_fingerprint(config)},
        "manifest": manifest,
        "config": config,
        "cache_dir": str(session.cache_dir) if session.cache_dir else None,
        "pairs": {JSON_COLS: json_cols, "format": session.data.format},
        "results": {
            JSON_COLS: results_json_cols,
            "attrs": dict(session.results.attrs) if session.results is not None else None,
        },
        "encoded_meta": session.encoded.meta if session.encoded is not None else None,
        "pooling": session.encoded.pooling if session.encoded is not None else None,
        "concepts": specs,
        "auto_labels": session.auto_labels,
        "labels": dict(session.labels),
        "notes": dict(session.notes),
        "weights": dict(session.weights),
        "verdicts": dict(session.verdicts),
        "selection": list(session.selection),
        "focus": session.focus,
        "pair_edits": [[getattr(p, "item", lambda p=p: p)(), k] for p, k in session.pair_edits.items()],
        # Measured lens fits (sae_fit reads responses through the model): an opened audit shows
        # them without loading the model again.
        "sae_fits": [{"n": n, **asdict(fit)} for (n, _seed), fit in session.lens_fit.all().items()],
    }
    # What is written must open: check it as load will, so a bad save fails now, not when shared.
    check_state(parse_json(json.dumps(state, default=str), target / SESSION_FILE), target / SESSION_FILE)
    write_json(state, folder / SESSION_FILE)
    fsync_path(folder)


def _frame_to_parquet(df: pd.DataFrame, path: Path, fingerprint: str) -> list[str]:
    """Write ``df`` with its fingerprint; columns pyarrow cannot type (message lists, mixed objects) go as JSON text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = df.copy()
    json_cols = []
    for col in out.columns:
        if out[col].dtype == object:
            try:
                pa.array(out[col])
                if out[col].map(lambda v: isinstance(v, (list, dict))).any():
                    raise TypeError("nested")
            except (pa.ArrowException, TypeError, ValueError):
                out[col] = out[col].map(lambda v: json.dumps(v, ensure_ascii=False))
                json_cols.append(str(col))
    table = pa.Table.from_pandas(out, preserve_index=False)
    meta = {**(table.schema.metadata or {}), FINGERPRINT_KEY.encode(): fingerprint.encode()}
    pq.write_table(table.replace_schema_metadata(meta), path)
    return json_cols


def _concept_spec(c: TextConcept | DirectionConcept) -> dict[str, Any]:
    builtin = {b.name for b in builtin_concepts()}
    if isinstance(c, DirectionConcept):
        return {"name": c.name, "kind": "direction", "description": c.description}
    if c.kind == "builtin" and c.name in builtin:
        return {"name": c.name, "kind": "builtin"}
    if c.kind == "regex":
        return {"name": c.name, "kind": "regex", "pattern": c.pattern, "description": c.description}
    return {"name": c.name, "kind": "values", "description": c.description}


# ---------------------------------------------------------------------------- loading
def load_session(cls: type, path: Path, **overrides: Any) -> Any:
    """Open the session saved in ``path`` after checking every file (see the module docstring)."""
    from safetensors.numpy import load_file

    from ..pairs import LoadReport, PreferencePairs, RejectedRow

    path = Path(path)
    session_file = path / SESSION_FILE
    if not os.path.lexists(session_file):
        raise ConfigError(f"{path} is not a saved prefaudit session (no {SESSION_FILE}).{_interrupted(path)}")
    state = read_json(session_file)
    version = check_state(state, session_file)
    if version == FORMAT_VERSION:
        verify_folder(path, state["manifest"])
        present = set(state["manifest"])
    else:
        warnings.warn(
            f"{session_file} was saved by an older prefaudit without a manifest: its files cannot be "
            "checked against the data they belong to (only their row counts are). Re-save it.",
            stacklevel=3,
        )
        present = _legacy_artefacts(path, state)

    rep = read_json(path / "report.json")
    check_report(rep, path / "report.json")
    report = _named(
        path / "report.json",
        lambda: LoadReport(
            source=rep["source"],
            n_read=rep["n_read"],
            n_kept=rep["n_kept"],
            rejected=[RejectedRow(**x) for x in rep["rejected"]],
            notes=rep["notes"],
        ),
    )
    df = _frame_from_parquet(path / "pairs.parquet", state["pairs"][JSON_COLS])
    missing = [c for c in ("pair_id", "prompt", "chosen", "rejected") if c not in df.columns]
    if missing:
        raise SessionFileError(
            f"{path / 'pairs.parquet'} has no column {missing[0]!r}.", file=path / "pairs.parquet"
        )
    pairs = PreferencePairs(df=df, format=state["pairs"]["format"], report=report)
    if version == FORMAT_VERSION:
        found = _named(path / "pairs.parquet", lambda: data_fingerprint(pairs))
        if found != state["fingerprint"]["data"]:
            raise SessionFileError(
                f"{path / 'pairs.parquet'} holds other data than {session_file} was saved with: "
                f"fingerprint expected {state['fingerprint']['data']}, found {found}.",
                file=path / "pairs.parquet",
                expected=state["fingerprint"]["data"],
                found=found,
            )
    n = len(df)

    config = dict(state["config"])
    if isinstance(config.get("sae"), list):
        config["sae"] = tuple(config["sae"])
    config.update(overrides)
    if "cache_dir" in config:
        cache_dir = config.pop("cache_dir")
    else:
        cache_dir = _cache_dir(state["cache_dir"], session_file)
    try:
        session = cls(pairs, concepts=False, cache_dir=cache_dir, **config)
    except (PrefauditError, TypeError) as e:
        given = f" (with the overrides {', '.join(sorted(overrides))})" if overrides else ""
        raise SessionFileError(
            f"{session_file}: field 'config'{given}: {e}", file=session_file, field="config"
        ) from e

    concepts, values = _read_concepts(path / "concepts.safetensors", state["concepts"], n, load_file)
    encoded = None
    if "encoded.safetensors" in present:
        enc_path = path / "encoded.safetensors"
        arrays = _named(enc_path, lambda: load_file(str(enc_path)))
        if state["pooling"] is None:
            fail(session_file, "pooling", f"is null but {enc_path.name} is saved")
        arrays["pooling"] = np.asarray(state["pooling"])
        encoded = _named(enc_path, lambda: EncodedFeatures.from_arrays(arrays, state["encoded_meta"]))
        _check_rows(enc_path, encoded.n_pairs, encoded.rejected.values.shape[0], n)
    results = None
    if "results.parquet" in present:
        res_path = path / "results.parquet"
        results = _frame_from_parquet(res_path, state["results"][JSON_COLS])
        results.attrs.update(state["results"].get("attrs") or {})
        d_sae = encoded.d_sae if encoded is not None else 0
        want = [ids.sae_id(i) for i in range(d_sae)] + [ids.concept_id(c.name) for c in concepts]
        if "feature" not in results.columns or results["feature"].tolist() != want:
            raise SessionFileError(
                f"{res_path} holds {len(results)} rows for other features than the {len(want)} this "
                "session has (left by another session?). Re-save it, or delete the file and test again.",
                file=res_path,
            )
    decisions = {k: state[k] for k in ("labels", "notes", "weights", "verdicts", "selection", "focus")}
    decisions["pair_edits"] = {pid: kind for pid, kind in state.get("pair_edits") or []}
    fits = {}
    for f in state.get("sae_fits") or []:
        f = {**f, "sample": tuple((int(i), str(side)) for i, side in f["sample"])}
        k = f.pop("n")
        fits[(k, f["seed"])] = SAEFit(**f)
    session.restore(
        sae_fits=fits,
        concepts=concepts,
        concept_values=values,
        encoded=encoded,
        results=results,
        auto_labels=state["auto_labels"],
        decisions=decisions,
    )
    return session


def _legacy_artefacts(path: Path, state: dict[str, Any]) -> set[str]:
    """The artefacts a format-1 ``session.json`` records; a file it does not record is refused."""
    present = set(REQUIRED_ARTEFACTS)
    if state["pooling"] is not None:
        present.add("encoded.safetensors")
    if state["results"]["attrs"] is not None:
        present.add("results.parquet")
    for name in ARTEFACTS:
        if name not in present and os.path.lexists(path / name):
            # What an in-place save of prefaudit < format 2 left behind: another session's file.
            raise SessionFileError(
                f"{path / name} is in the folder but {path / SESSION_FILE} records no such artefact: "
                "it was left by another session saved there before. Delete it, or re-save.",
                file=path / name,
            )
    for name in present:
        os.close(open_regular(path / name))  # missing, a link or not a file: refused
    return present


def _interrupted(path: Path) -> str:
    old = sorted(path.parent.glob(f".{_glob_escape(path.name)}.old-*"))
    return f" A save to it was interrupted; the previous session is in {old[-1]}." if old else ""


def _cache_dir(saved: str | None, file: Path) -> Path | bool | None:
    """The saved cache folder if it is one of yours on this machine; else the default (``None``)."""
    if saved is None:
        return False
    try:
        p = Path(saved)
        mine = (
            p.is_absolute() and p.is_dir() and (not hasattr(os, "getuid") or p.stat().st_uid == os.getuid())
        )
    except (OSError, ValueError):
        mine = False
    if mine:
        return p
    # A shared session must not choose where this machine reads and writes its caches.
    warnings.warn(
        f"{file}: field 'cache_dir' ({saved!r}) is not a folder of yours on this machine; the session "
        "caches in the default folder instead (pass cache_dir= to choose).",
        stacklevel=4,
    )
    return None


def _read_concepts(
    path: Path, specs: list[dict[str, Any]], n: int, load_file: Any
) -> tuple[list[Any], list[tuple[np.ndarray, np.ndarray]]]:
    arrays = _named(path, lambda: load_file(str(path)))
    builtin = {b.name: b for b in builtin_concepts()}
    for side in ("chosen", "rejected"):
        a = arrays.get(side)
        if a is None or a.ndim != 2 or a.shape != (n, len(specs)):
            shape = None if a is None else a.shape
            raise SessionFileError(
                f"{path}: tensor {side!r} has shape {shape}; the session has {n} pairs and {len(specs)} concepts.",
                file=path,
                field=side,
            )
    concepts: list[Any] = []
    for spec in specs:
        kind, name = spec["kind"], spec["name"]
        if kind == "builtin":
            concepts.append(builtin[name])
        elif kind == "regex":
            concepts.append(regex_concept(name, spec["pattern"], spec.get("description", "")))
        elif kind == "direction":
            direction = arrays.get(f"direction/{name}")
            if direction is None:
                raise SessionFileError(f"{path} has no tensor 'direction/{name}'.", file=path, field=name)
            concepts.append(DirectionConcept(name, spec.get("description", ""), direction))
        else:
            concepts.append(_values_only(name, spec.get("description", "")))
    values = [(arrays["chosen"][:, j], arrays["rejected"][:, j]) for j in range(len(concepts))]
    return concepts, values


def _check_rows(path: Path, rows: int, rows_rejected: int, n: int) -> None:
    if rows != n or rows_rejected != n:
        raise SessionFileError(
            f"{path} holds {rows} pairs, the session {n} (left by another session?). Re-save it.", file=path
        )


def _frame_from_parquet(path: Path, json_cols: list[str]) -> pd.DataFrame:
    df = _named(path, lambda: pd.read_parquet(path))
    for col in json_cols:
        if col not in df.columns:
            raise SessionFileError(f"{path} has no column {col!r}.", file=path, field=col)
        df[col] = _named(path, lambda col=col: df[col].map(json.loads).astype(object), field=col)
    return df


def _named(path: Path, read: Any, field: str | None = None) -> Any:
    """``read()``, with any failure to read or parse raised as a ``SessionFileError`` naming ``path``."""
    try:
        return read()
    except SessionFileError:
        raise
    except Exception as e:  # a parser's own error names no file
        where = f" (column {field!r})" if field else ""
        raise SessionFileError(
            f"{path}{where} cannot be read: {type(e).__name__}: {e}", file=path, field=field
        ) from e


def _values_only(name: str, description: str) -> TextConcept:
    def unavailable(_text: str) -> float:
        raise ConfigError(
            f"Concept {name!r} was defined by a Python function in the saved session; only its values "
            "were saved. Add it again with session.add_concept to score new text."
        )

    return TextConcept(name=name, description=description, fn=unavailable, kind="values")
