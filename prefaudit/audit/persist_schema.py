"""What a saved session's JSON files may hold, checked before anything is built from them.

``session.json`` and ``report.json`` come from whoever saved the session, so they are read as
hostile: at most :data:`MAX_JSON_BYTES`, UTF-8, no duplicate keys, nested at most
:data:`MAX_DEPTH` deep (checked without recursion), and every field of the known type and range —
an unknown field, a wrong type, an absurd number or a manifest entry that is not one of the fixed
artefact names is refused with a :class:`~prefaudit.audit.fingerprint.SessionFileError` naming the
file and the field. Nothing here opens a path taken from a file.

>>> state = read_json(Path("saved/session.json"))           # doctest: +SKIP
>>> version = check_state(state, Path("saved/session.json"))  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, NoReturn

from ..errors import ConfigError
from ..features.concepts import builtin_concepts
from ..shaping import VERDICTS
from .fingerprint import ARTEFACTS, MAX_JSON_BYTES, REQUIRED_ARTEFACTS, SessionFileError, open_regular
from .fit import SAEFit
from .pair_edits import PAIR_EDITS

FORMAT_VERSION = 2  # 2: manifest with fingerprints; 1: before (opens with a warning)
JSON_COLS = "json_columns"
MAX_DEPTH = 16  # nesting of any JSON value prefaudit writes is at most ~5
_INT_MAX = 2**40  # counts, sizes; settings stay below 2**31
_SEED_MAX = 2**63
_FORMATS = ("text", "conversational", "hh")
_POOLINGS = ("max", "mean", "sum")
_CONCEPT_KINDS = ("builtin", "regex", "direction", "values")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_FP = re.compile(r"[0-9a-f]{16}\Z")
_TOP = (
    "format_version",
    "config",
    "cache_dir",
    "pairs",
    "results",
    "encoded_meta",
    "pooling",
    "concepts",
    "auto_labels",
    "labels",
    "notes",
    "weights",
    "verdicts",
    "selection",
    "focus",
)
_CONFIG_KINDS: dict[str, tuple[Any, ...]] = {
    "model": (str, None),
    "sae": (str, bool, list, None),
    "layer": (int, None),
    "pooling": (str,),
    "batch_size": (int, None),
    "batch_tokens": (int, None),
    "shard_size": (int,),
    "dtype": (str, None),
    "device": (str,),
    "max_prompt_tokens": (int,),
    "max_response_tokens": (int,),
}
_NOT_CONFIG = {"self", "pairs", "tokenizer", "concepts", "cache_dir"}


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(f"key {k!r} appears twice in one object")
        out[k] = v
    return out


def read_json(path: Path) -> Any:
    """Parse a session's JSON file: a regular file (no link), at most :data:`MAX_JSON_BYTES`."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > MAX_JSON_BYTES:
            raise SessionFileError(
                f"{path} is {size:,} bytes; a saved session's JSON is at most {MAX_JSON_BYTES:,}.", file=path
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SessionFileError(f"{path} is not UTF-8 text (byte {e.start}).", file=path) from None
    return parse_json(text, path)


def parse_json(text: str, path: Path) -> Any:
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise SessionFileError(f"{path} nests deeper than Python can parse.", file=path) from None
    except ValueError as e:  # JSONDecodeError, a duplicate key, an integer of >4300 digits
        raise SessionFileError(f"{path} is not valid JSON: {e}", file=path) from None
    stack: list[tuple[Any, str, int]] = [(doc, "", 0)]
    while stack:  # iterative: the check itself must not recurse on hostile input
        value, field, depth = stack.pop()
        if depth > MAX_DEPTH:
            fail(path, field[:200], f"nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, f"{field}.{k}" if field else str(k), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{field}[{i}]", depth + 1) for i, v in enumerate(value))
    return doc


def fail(file: Path, field: str, why: str) -> NoReturn:
    raise SessionFileError(f"{file}: field {field!r} {why}.", file=file, field=field)


def _kind_name(k: Any) -> str:
    return "null" if k is None else {list: "list", dict: "object", str: "string"}.get(k, k.__name__)


def _typed(
    file: Path,
    value: Any,
    field: str,
    kinds: tuple[Any, ...],
    *,
    lo: int | None = None,
    hi: int | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    ok = any(
        (value is None) if k is None else isinstance(value, k) and (k is bool or not isinstance(value, bool))
        for k in kinds
    ) or (float in kinds and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        want = " or ".join(_kind_name(k) for k in kinds)
        fail(file, field, f"must be {want}, not {type(value).__name__} {str(value)[:40]!r}")
    if isinstance(value, int) and not isinstance(value, bool):
        lo = 0 if lo is None else lo
        hi = _INT_MAX if hi is None else hi
        if not lo <= value <= hi:
            fail(file, field, f"is {str(value)[:40]}, outside {lo}..{hi}")
    if choices is not None and value is not None and value not in choices:
        fail(file, field, f"is {str(value)[:40]!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def _object(
    file: Path, value: Any, field: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict:
    _typed(file, value, field, (dict,))
    for k in value:
        if k not in required and k not in optional:
            fail(file, f"{field}.{k}" if field else k, "is not a field of a saved session")
    for k in required:
        if k not in value:
            fail(file, f"{field}.{k}" if field else k, "is missing")
    return value


def _str_map(file: Path, value: Any, field: str, kinds: tuple[Any, ...], **kw: Any) -> None:
    _typed(file, value, field, (dict,))
    for k, v in value.items():
        _typed(file, v, f"{field}.{k}", kinds, **kw)


def _str_list(file: Path, value: Any, field: str) -> None:
    _typed(file, value, field, (list,))
    for i, v in enumerate(value):
        _typed(file, v, f"{field}[{i}]", (str,))


def check_state(state: Any, file: Path) -> int:
    """Validate a parsed ``session.json``; return its format version."""
    _typed(file, state, "(top level)", (dict,))
    version = _typed(file, state.get("format_version"), "format_version", (int,))
    if version not in (1, FORMAT_VERSION):
        raise ConfigError(f"{file} was saved by an incompatible prefaudit (format {version}).")
    extra = ("fingerprint", "manifest") if version == FORMAT_VERSION else ()
    _object(file, state, "", (*_TOP, *extra), ("pair_edits", "sae_fits"))
    if version == FORMAT_VERSION:
        fp = _object(file, state["fingerprint"], "fingerprint", ("data", "settings"))
        for k in fp:
            if not _FP.match(_typed(file, fp[k], f"fingerprint.{k}", (str,))):
                fail(file, f"fingerprint.{k}", "is not a fingerprint")
        _check_manifest(file, state["manifest"])
    _check_config(file, state["config"])
    _typed(file, state["cache_dir"], "cache_dir", (str, None))
    _object(file, state["pairs"], "pairs", (JSON_COLS, "format"))
    _str_list(file, state["pairs"][JSON_COLS], f"pairs.{JSON_COLS}")
    _typed(file, state["pairs"]["format"], "pairs.format", (str,), choices=_FORMATS)
    _object(file, state["results"], "results", (JSON_COLS, "attrs"))
    _str_list(file, state["results"][JSON_COLS], f"results.{JSON_COLS}")
    _typed(file, state["results"]["attrs"], "results.attrs", (dict, None))
    _typed(file, state["encoded_meta"], "encoded_meta", (dict, None))
    meta = state["encoded_meta"] or {}
    for k in ("max_prompt_tokens", "max_response_tokens", "n_pairs", "d_sae"):  # read as numbers
        if k in meta:
            _typed(file, meta[k], f"encoded_meta.{k}", (int,), hi=2**31 - 1)
    _typed(file, meta.get("key"), "encoded_meta.key", (str, None))
    _typed(file, state["pooling"], "pooling", (str, None), choices=_POOLINGS)
    _check_concepts(file, state["concepts"])
    for k in ("auto_labels", "labels", "notes"):
        _str_map(file, state[k], k, (str,))
    _str_map(file, state["weights"], "weights", (float,))
    for k, w in state["weights"].items():
        if not math.isfinite(w):
            fail(file, f"weights.{k}", f"is {w}; a weight is a finite number")
    _str_map(file, state["verdicts"], "verdicts", (str,), choices=VERDICTS)
    _str_list(file, state["selection"], "selection")
    _typed(file, state["focus"], "focus", (str, None))
    _typed(file, state.get("pair_edits", []), "pair_edits", (list,))
    for i, edit in enumerate(state.get("pair_edits") or []):
        if not isinstance(edit, list) or len(edit) != 2:
            fail(file, f"pair_edits[{i}]", "must be a [pair_id, kind] list")
        _typed(file, edit[0], f"pair_edits[{i}][0]", (int, str), hi=_SEED_MAX)
        _typed(file, edit[1], f"pair_edits[{i}][1]", (str,), choices=PAIR_EDITS)
    _typed(file, state.get("sae_fits", []), "sae_fits", (list,))
    required = tuple(f.name for f in fields(SAEFit) if f.default is MISSING)
    optional = tuple(f.name for f in fields(SAEFit) if f.default is not MISSING)
    for i, fit in enumerate(state.get("sae_fits") or []):
        at = f"sae_fits[{i}]"
        _object(file, fit, at, ("n", *required), optional)
        for k in ("n", "n_tokens", "n_responses", "seed"):
            _typed(file, fit[k], f"{at}.{k}", (int,), hi=_SEED_MAX)
        for k in ("explained_variance", "l0", "dead_fraction", "mse_per_token"):
            _typed(file, fit[k], f"{at}.{k}", (float,))
        _typed(file, fit.get("warning"), f"{at}.warning", (str, None))
        _typed(file, fit["sample"], f"{at}.sample", (list,))
        for j, s in enumerate(fit["sample"]):
            if not (isinstance(s, list) and len(s) == 2):
                fail(file, f"{at}.sample[{j}]", "must be a [position, side] list")
            _typed(file, s[0], f"{at}.sample[{j}][0]", (int,))
            _typed(file, s[1], f"{at}.sample[{j}][1]", (str,), choices=("chosen", "rejected"))
    return version


def _check_manifest(file: Path, manifest: Any) -> None:
    _typed(file, manifest, "manifest", (dict,))
    for name, entry in manifest.items():
        at = f"manifest.{name}"
        if name not in ARTEFACTS:  # never a path: '../x', '/etc/passwd' and links are refused here
            fail(file, at, f"is not a file a saved session holds ({', '.join(ARTEFACTS)})")
        _object(file, entry, at, ("fingerprint", "size", "sha256"))
        if not _FP.match(_typed(file, entry["fingerprint"], f"{at}.fingerprint", (str,))):
            fail(file, f"{at}.fingerprint", "is not a fingerprint")
        _typed(file, entry["size"], f"{at}.size", (int,))
        if not _SHA256.match(_typed(file, entry["sha256"], f"{at}.sha256", (str,))):
            fail(file, f"{at}.sha256", "is not a sha256 digest")
    for name in REQUIRED_ARTEFACTS:
        if name not in manifest:
            fail(file, f"manifest.{name}", "is missing")


def _check_config(file: Path, config: Any) -> None:
    from .core import AuditCore

    _typed(file, config, "config", (dict,))
    params = set(inspect.signature(AuditCore.__init__).parameters) | set(_CONFIG_KINDS)
    for k, v in config.items():
        if k not in params or k in _NOT_CONFIG:
            fail(file, f"config.{k}", "is not a setting of a session")
        kinds = _CONFIG_KINDS.get(k, (str, int, float, bool, None))
        _typed(file, v, f"config.{k}", kinds, lo=-(2**31), hi=2**31 - 1)
    sae = config.get("sae")
    if sae is True or (isinstance(sae, list) and (len(sae) != 2 or not all(isinstance(s, str) for s in sae))):
        fail(file, "config.sae", "must be a name, a [release, sae_id] pair, false or null")


def _check_concepts(file: Path, specs: Any) -> None:
    _typed(file, specs, "concepts", (list,))
    builtin = {b.name for b in builtin_concepts()}
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        at = f"concepts[{i}]"
        _object(file, spec, at, ("name", "kind"), ("pattern", "description"))
        name = _typed(file, spec["name"], f"{at}.name", (str,))
        kind = _typed(file, spec["kind"], f"{at}.kind", (str,), choices=_CONCEPT_KINDS)
        _typed(file, spec.get("description", ""), f"{at}.description", (str,))
        if name in seen:
            fail(file, f"{at}.name", f"repeats the concept {name!r}")
        seen.add(name)
        if kind == "builtin" and name not in builtin:
            fail(file, f"{at}.name", f"is not a built-in concept ({name!r})")
        if kind == "regex":
            try:
                re.compile(_typed(file, spec.get("pattern"), f"{at}.pattern", (str,)))
            except re.error as e:
                fail(file, f"{at}.pattern", f"is not a regular expression ({e})")


def check_report(rep: Any, file: Path) -> None:
    _object(file, rep, "", ("source", "n_read", "n_kept", "rejected", "notes", "format"), ("fingerprint",))
    _typed(file, rep["source"], "source", (str,))
    _typed(file, rep["n_read"], "n_read", (int,))
    _typed(file, rep["n_kept"], "n_kept", (int,))
    _typed(file, rep["format"], "format", (str,), choices=_FORMATS)
    _str_list(file, rep["notes"], "notes")
    _typed(file, rep["rejected"], "rejected", (list,))
    for i, row in enumerate(rep["rejected"]):
        _object(file, row, f"rejected[{i}]", ("index", "field", "reason"))
        _typed(file, row["index"], f"rejected[{i}].index", (int,))
        _typed(file, row["field"], f"rejected[{i}].field", (str,))
        _typed(file, row["reason"], f"rejected[{i}].reason", (str,))
