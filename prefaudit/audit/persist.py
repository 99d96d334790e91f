"""Save and open an audit (:class:`~prefaudit.audit.core.AuditCore`) as a directory — no pickle.

Layout::

    session.json         config, labels, notes, weights, verdicts, selection, concept specs
    pairs.parquet        the data (message lists and odd metadata columns JSON-encoded)
    report.json          the load report (rows read, kept, rejected with reasons)
    encoded.safetensors  pooled SAE features (sparse parts) and per-response arrays
    concepts.safetensors concept values and direction vectors
    results.parquet      the feature table

Concepts defined by a Python callable cannot be serialised safely; their *values* are saved and
restored, so the table and the views are identical, but new data cannot be scored with them.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..features.concepts import DirectionConcept, TextConcept, builtin_concepts, regex_concept
from ..features.encoded import EncodedFeatures
from .fit import SAEFit

FORMAT_VERSION = 1
_JSON_COLS = "json_columns"


def _frame_to_parquet(df: pd.DataFrame, path: Path) -> list[str]:
    """Write ``df``; columns pyarrow cannot type (message lists, mixed objects) go as JSON text."""
    import pyarrow as pa

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
    out.to_parquet(path, index=False)
    return json_cols


def _frame_from_parquet(path: Path, json_cols: list[str]) -> pd.DataFrame:
    df = pd.read_parquet(path)
    for col in json_cols:
        df[col] = df[col].map(json.loads).astype(object)
    return df


def _concept_spec(c: TextConcept | DirectionConcept) -> dict[str, Any]:
    builtin = {b.name for b in builtin_concepts()}
    if isinstance(c, DirectionConcept):
        return {"name": c.name, "kind": "direction", "description": c.description}
    if c.kind == "builtin" and c.name in builtin:
        return {"name": c.name, "kind": "builtin"}
    if c.kind == "regex":
        return {"name": c.name, "kind": "regex", "pattern": c.pattern, "description": c.description}
    return {"name": c.name, "kind": "values", "description": c.description}


def save_session(session: Any, path: Path) -> Path:
    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    json_cols = _frame_to_parquet(session.data.df, path / "pairs.parquet")
    r = session.data.report
    (path / "report.json").write_text(
        json.dumps(
            {
                "source": r.source,
                "n_read": r.n_read,
                "n_kept": r.n_kept,
                "rejected": [{"index": x.index, "field": x.field, "reason": x.reason} for x in r.rejected],
                "notes": list(r.notes),
                "format": session.data.format,
            },
            indent=1,
        )
    )
    c_vals, r_vals = session.concept_values()
    tensors = {"chosen": np.ascontiguousarray(c_vals), "rejected": np.ascontiguousarray(r_vals)}
    for c in session.concepts:
        if isinstance(c, DirectionConcept):
            tensors[f"direction/{c.name}"] = np.ascontiguousarray(c.direction)
    save_file(tensors, str(path / "concepts.safetensors"))
    if session.encoded is not None:
        save_file(
            {k: np.ascontiguousarray(v) for k, v in session.encoded.to_arrays().items() if k != "pooling"},
            str(path / "encoded.safetensors"),
        )
    results_json_cols: list[str] = []
    if session.results is not None:
        results_json_cols = _frame_to_parquet(session.results, path / "results.parquet")
    config = {k: v for k, v in session.config.items()}
    if config["model"] is not None and not isinstance(config["model"], str):
        config["model"] = getattr(getattr(config["model"], "config", None), "_name_or_path", None)
    if config["sae"] is not None and not isinstance(config["sae"], (str, bool, list, tuple)):
        config["sae"] = session.sae.name if session.uses_sae else False
    state = {
        "format_version": FORMAT_VERSION,
        "config": config,
        "cache_dir": str(session.cache_dir) if session.cache_dir else None,
        "pairs": {_JSON_COLS: json_cols, "format": session.data.format},
        "results": {
            _JSON_COLS: results_json_cols,
            "attrs": dict(session.results.attrs) if session.results is not None else None,
        },
        "encoded_meta": session.encoded.meta if session.encoded is not None else None,
        "pooling": session.encoded.pooling if session.encoded is not None else None,
        "concepts": [_concept_spec(c) for c in session.concepts],
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
        "sae_fits": [{"n": n, **asdict(fit)} for (n, _seed), fit in (session._sae_fit_cache or {}).items()],
    }
    (path / "session.json").write_text(json.dumps(state, indent=1, default=str))
    return path


def load_session(cls: type, path: Path, **overrides: Any) -> Any:
    from safetensors.numpy import load_file

    from ..pairs import LoadReport, PreferencePairs, RejectedRow

    if not (path / "session.json").is_file():
        raise ConfigError(f"{path} is not a saved prefaudit session (no session.json).")
    state = json.loads((path / "session.json").read_text())
    if state.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{path} was saved by an incompatible prefaudit (format {state.get('format_version')})."
        )
    rep = json.loads((path / "report.json").read_text())
    report = LoadReport(
        source=rep["source"],
        n_read=rep["n_read"],
        n_kept=rep["n_kept"],
        rejected=[RejectedRow(**x) for x in rep["rejected"]],
        notes=rep["notes"],
    )
    df = _frame_from_parquet(path / "pairs.parquet", state["pairs"][_JSON_COLS])
    pairs = PreferencePairs(df=df, format=state["pairs"]["format"], report=report)
    config = dict(state["config"])
    if isinstance(config.get("sae"), list):
        config["sae"] = tuple(config["sae"])
    config.update(overrides)
    cache_dir = config.pop("cache_dir", state.get("cache_dir") or False)
    session = cls(pairs, concepts=False, cache_dir=cache_dir if cache_dir else False, **config)

    concept_arrays = load_file(str(path / "concepts.safetensors"))
    builtin = {b.name: b for b in builtin_concepts()}
    concepts: list[Any] = []
    for spec in state["concepts"]:
        kind = spec["kind"]
        if kind == "builtin":
            concepts.append(builtin[spec["name"]])
        elif kind == "regex":
            concepts.append(regex_concept(spec["name"], spec["pattern"], spec.get("description", "")))
        elif kind == "direction":
            direction = concept_arrays[f"direction/{spec['name']}"]
            concepts.append(DirectionConcept(spec["name"], spec["description"], direction))
        else:
            concepts.append(_values_only(spec["name"], spec.get("description", "")))
    values = [
        (concept_arrays["chosen"][:, j], concept_arrays["rejected"][:, j]) for j in range(len(concepts))
    ]

    encoded = None
    if (path / "encoded.safetensors").is_file():
        arrays = load_file(str(path / "encoded.safetensors"))
        arrays["pooling"] = np.asarray(state["pooling"])
        encoded = EncodedFeatures.from_arrays(arrays, state["encoded_meta"])
    results = None
    if (path / "results.parquet").is_file():
        results = _frame_from_parquet(path / "results.parquet", state["results"][_JSON_COLS])
        results.attrs.update(state["results"].get("attrs") or {})
    decisions = {k: state[k] for k in ("labels", "notes", "weights", "verdicts", "selection", "focus")}
    decisions["pair_edits"] = {pid: kind for pid, kind in state.get("pair_edits") or []}
    fits = {}
    for f in state.get("sae_fits") or []:
        f = {**f, "sample": tuple((int(i), str(side)) for i, side in f["sample"])}
        n = f.pop("n")
        fits[(n, f["seed"])] = SAEFit(**f)
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


def _values_only(name: str, description: str) -> TextConcept:
    def unavailable(_text: str) -> float:
        raise ConfigError(
            f"Concept {name!r} was defined by a Python function in the saved session; only its values "
            "were saved. Add it again with session.add_concept to score new text."
        )

    return TextConcept(name=name, description=description, fn=unavailable, kind="values")
