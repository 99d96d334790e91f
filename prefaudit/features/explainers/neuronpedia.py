"""Neuronpedia explanations from a local export, matched to the SAE through its Neuronpedia id.

Neuronpedia publishes its auto-interp explanations as bulk exports
(``v1/<modelId>/<source>/explanations/batch-N.jsonl.gz``: one JSON object a line with
``modelId``, ``layer`` — the source id, e.g. ``20-gemmascope-res-16k`` —, ``index`` as a string,
``description``, ``explanationModelName``, ``typeName``, ``createdAt``, …). The API's export
(a JSON array of the same objects) reads too. Download them yourself; nothing here reaches the
network.

Matching: sae-lens records a pretrained SAE's Neuronpedia id (``sae.cfg.metadata.neuronpedia_id``,
``"<modelId>/<layer>"``, see :func:`neuronpedia_id_of`); only records of that model and layer are
used. Without an id the export must hold exactly one (model, layer); an id that the export does
not hold is an error that lists what it holds, as is an index at or above ``d_sae`` — lining
explanations up with the wrong SAE is the usual mistake (SAELens issue 549), and it must not pass
silently.

One explanation per feature, by this rule: the first ``explanationModelName`` in ``prefer``
(default: none preferred), then the newest ``createdAt`` (ISO 8601 strings; missing counts as
oldest), then the first in reading order (files by name, lines in order). A cluster is labelled
from its members' explanations: distinct descriptions (compared lower-cased, whitespace collapsed,
a final period dropped) ranked by how many members share them, then by the first member holding
them in the order the cluster lists its members; the ``n_members`` first are joined with " · ".
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from prefaudit.errors import ConfigError
from prefaudit.features.labels import ConceptContexts

from . import Explanation, register_explainer

N_MEMBERS = 3


class NeuronpediaRecord(NamedTuple):
    """One explanation of one feature, as read."""

    index: int
    description: str
    model: str
    created: str
    order: int


def neuronpedia_id_of(sae: Any) -> str | None:
    """``sae.cfg.metadata.neuronpedia_id`` of a sae-lens SAE, or None where it has none."""
    meta = getattr(getattr(sae, "cfg", None), "metadata", None)
    value = getattr(meta, "neuronpedia_id", None) if meta is not None else None
    return str(value) if value else None


def export_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """The ``.jsonl``, ``.jsonl.gz`` and ``.json`` files of ``paths`` (folders searched recursively), by name."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and _kind(f))
        elif p.is_file() and _kind(p):
            out.append(p)
        else:
            raise ConfigError(f"{p}: not a .jsonl, .jsonl.gz or .json file, nor a folder")
    if not out:
        raise ConfigError(f"no .jsonl, .jsonl.gz or .json file in {items}")
    return out


def _kind(p: Path) -> str | None:
    name = p.name.lower()
    return next((k for k in (".jsonl.gz", ".jsonl", ".json") if name.endswith(k)), None)


def read_records(files: Sequence[Path]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """``(file, line, record)`` of every explanation object in ``files`` (line 0 for a JSON array)."""
    for f in files:
        kind = _kind(f)
        if kind == ".json":
            data = json.loads(f.read_text(encoding="utf-8"))
            rows = data.get("explanations", data) if isinstance(data, dict) else data
            if not isinstance(rows, list):
                raise ConfigError(f"{f}: expected a JSON array of explanations")
            for rec in rows:
                yield f, 0, rec
            continue
        opener = gzip.open if kind == ".jsonl.gz" else open
        with opener(f, "rt", encoding="utf-8") as fh:
            for k, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        yield f, k, json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ConfigError(f"{f} line {k}: not JSON ({err.msg})") from err


class NeuronpediaExplainer:
    """Explanations of an SAE's features from a Neuronpedia export.

    Parameters
    ----------
    paths : path or paths
        Export files or folders (``explanations/`` as downloaded).
    neuronpedia_id : str, optional
        ``"<modelId>/<layer>"`` of the SAE (:func:`neuronpedia_id_of`); required when the export
        holds more than one.
    prefer : sequence of str
        ``explanationModelName`` values in order of preference.
    d_sae : int, optional
        The SAE's width: an index at or above it is an error.
    n_members : int
        Member explanations joined in a cluster's text.

    Attributes
    ----------
    counts : dict
        ``records`` read, ``kept`` (this SAE, with a description), ``other_sources``,
        ``empty_description``, ``features`` explained.
    """

    name = "neuronpedia"

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        *,
        neuronpedia_id: str | None = None,
        prefer: Sequence[str] = (),
        d_sae: int | None = None,
        n_members: int = N_MEMBERS,
    ):
        files = export_files(paths)
        want = None if neuronpedia_id is None else _split_id(neuronpedia_id)
        by_source: dict[tuple[str, str], dict[int, list[NeuronpediaRecord]]] = {}
        counts = {"records": 0, "empty_description": 0}
        for order, (f, line, rec) in enumerate(read_records(files)):
            counts["records"] += 1
            where = f"{f} line {line}" if line else f"{f} item {order}"
            if not isinstance(rec, dict) or not {"modelId", "layer", "index"} <= rec.keys():
                raise ConfigError(f"{where}: an explanation needs modelId, layer and index")
            try:
                index = int(rec["index"])
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{where}: index {rec['index']!r} is not an integer") from err
            desc = " ".join(str(rec.get("description") or "").split())
            if not desc:
                counts["empty_description"] += 1
                continue
            key = (str(rec["modelId"]), str(rec["layer"]))
            item = NeuronpediaRecord(
                index,
                desc,
                str(rec.get("explanationModelName") or ""),
                str(rec.get("createdAt") or ""),
                order,
            )
            by_source.setdefault(key, {}).setdefault(index, []).append(item)
        held = sorted(by_source)
        if want is None:
            if len(held) != 1:
                raise ConfigError(
                    f"the export holds {len(held)} SAEs ({', '.join('/'.join(h) for h in held) or 'none'}); "
                    "pass neuronpedia_id='<modelId>/<layer>'"
                )
            want = held[0]
        if want not in by_source:
            raise ConfigError(
                f"the export holds no explanation of {'/'.join(want)}; it holds "
                f"{', '.join('/'.join(h) for h in held) or 'none'}"
            )
        chosen = {i: _choose(recs, prefer) for i, recs in by_source[want].items()}
        if d_sae is not None and chosen and max(chosen) >= d_sae:
            raise ConfigError(f"the export explains feature {max(chosen)} but the SAE has {d_sae} features")
        self.neuronpedia_id = "/".join(want)
        self.explanations: dict[int, NeuronpediaRecord] = dict(sorted(chosen.items()))
        self.n_members = int(n_members)
        counts["kept"] = sum(len(v) for v in by_source[want].values())
        counts["other_sources"] = sum(len(v) for k, s in by_source.items() if k != want for v in s.values())
        counts["features"] = len(chosen)
        self.counts = counts

    def describe(self, feature: int) -> str | None:
        """The chosen explanation of one SAE feature, or None."""
        rec = self.explanations.get(int(feature))
        return rec.description if rec else None

    def explain(self, contexts: ConceptContexts) -> Explanation | None:
        held = [(f, self.explanations[f]) for f in contexts.features if f in self.explanations]
        if not held:
            return None
        models = sorted({r.model for _, r in held if r.model})
        source = f"neuronpedia:{self.neuronpedia_id}" + (f" ({', '.join(models)})" if models else "")
        evidence = tuple(f"sae:{f}: {r.description}" for f, r in held)
        if len(contexts.features) == 1:
            return Explanation(held[0][1].description, source, None, evidence)
        groups: dict[str, list[int]] = {}
        for pos, (_, r) in enumerate(held):
            groups.setdefault(_norm(r.description), []).append(pos)
        ranked = sorted(groups.values(), key=lambda p: (-len(p), p[0]))[: self.n_members]
        text = " · ".join(held[p[0]][1].description for p in ranked)
        source += f", {len(held)} of {len(contexts.features)} members explained"
        return Explanation(text, source, None, evidence)


def _split_id(neuronpedia_id: str) -> tuple[str, str]:
    model, sep, layer = str(neuronpedia_id).partition("/")
    if not sep or not model or not layer:
        raise ConfigError(f"neuronpedia_id={neuronpedia_id!r}; expected '<modelId>/<layer>'")
    return model, layer


def _choose(records: list[NeuronpediaRecord], prefer: Sequence[str]) -> NeuronpediaRecord:
    """The rule of the module docstring, as three stable sorts (last key applied first)."""
    rank = {m: k for k, m in enumerate(prefer)}
    out = sorted(records, key=lambda r: r.order)
    # ISO 8601 timestamps sort as strings; a missing one ("") is the oldest. reverse keeps ties in order.
    out = sorted(out, key=lambda r: r.created, reverse=True)
    return sorted(out, key=lambda r: rank.get(r.model, len(rank)))[0]


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


register_explainer("neuronpedia", NeuronpediaExplainer)
