"""Read a source (file, DataFrame, list of dicts, ``datasets.Dataset``, hub name) into raw rows.

Rows keep their 0-based source index. A row that cannot even be read (a broken JSON line, bad
UTF-8 bytes, a list element that is not a dict, a field name that is not valid Unicode) becomes
a :class:`RejectedRow` in its place, so the loader can report it; a file that cannot be read at
all (a ``.json``/``.csv`` file that is not UTF-8 as a whole) raises :class:`DataError`.

Example
-------
>>> from prefaudit.pairs.sources import read_source
>>> raw = read_source([{"prompt": "p", "chosen": "a", "rejected": "b"}, 7])
>>> raw.columns, raw.items[1]
(['prompt', 'chosen', 'rejected'], RejectedRow(index=1, field='row', reason='expected a dict, got int'))
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DataError, MissingDependencyError
from .types import RejectedRow, unencodable

Row = dict[str, Any]

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".csv.gz", ".parquet")
# "owner/name" (one slash, hub-legal characters); a missing path with a file suffix is a missing file.
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# pandas' documented default NA strings; used only for metadata columns of CSV files, because in a
# text column "None" or "NA" may be a genuine response and must not turn into a missing value.
_CSV_NA = [
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
]


@dataclass
class RawRows:
    """Rows as read, before any format is applied.

    ``items[i]`` is source row ``start + i``: a dict, or a :class:`RejectedRow` when it could not
    be read. ``frame`` is the source table (of these rows) when there is one, so metadata columns
    keep their dtypes. ``start`` is 0 except for the chunks of :func:`stream_source`.
    """

    description: str
    items: list[Row | RejectedRow]
    columns: list[str]
    frame: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    start: int = 0


@dataclass
class RawStream:
    """A source read chunk by chunk (:func:`stream_source`).

    ``chunks`` yields :class:`RawRows` of consecutive rows (``start`` is the first one's source
    index). ``columns`` holds the columns known so far: the schema of a parquet file or dataset
    from the start, else those of the rows read (updated as chunks are read).
    """

    description: str
    columns: list[str]
    chunks: Iterator[RawRows]
    notes: list[str] = field(default_factory=list)


def read_source(
    source: Any,
    *,
    limit: int | None = None,
    split: str = "train",
    text_columns: Iterable[str] = ("prompt", "chosen", "rejected"),
) -> RawRows:
    """Read ``source`` (at most ``limit`` rows) into :class:`RawRows`; see :func:`load_pairs`."""
    if isinstance(source, str) and not source.strip():
        raise DataError("source is an empty string; pass a file path or a hub name 'owner/name'")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if isinstance(source, str) and not _exists(path) and _HUB_NAME.match(source) and not _suffix(path):
            return _read_hub(source, split=split, limit=limit)
        return _read_path(path, limit=limit, text_columns=tuple(text_columns))
    if isinstance(source, pd.DataFrame):
        return _from_frame(source.iloc[:limit], f"DataFrame ({len(source)} rows)")
    if isinstance(source, (list, tuple)):
        return _from_records(source[:limit], f"list of {len(source)} rows")
    if _is_datasets_object(source):
        return _read_dataset(source, split=split, limit=limit, description=None)
    raise DataError(
        f"cannot read pairs from a {type(source).__name__}: pass a file path (.jsonl, .jsonl.gz, .json, "
        ".csv, .parquet), a pandas DataFrame, a list of dicts, a datasets.Dataset or a hub name 'owner/name'"
    )


def stream_source(
    source: Any,
    *,
    batch_rows: int,
    limit: int | None = None,
    split: str = "train",
    text_columns: Iterable[str] = ("prompt", "chosen", "rejected"),
) -> RawStream:
    """Read ``source`` in chunks of at most ``batch_rows`` rows (at most ``limit`` rows in all).

    Read lazily, one chunk in memory at a time: ``.parquet`` files (pyarrow record batches,
    row group by row group), ``.jsonl``/``.jsonl.gz`` files (line by line), a
    ``datasets.IterableDataset`` and hub names (``datasets.load_dataset(name, streaming=True)``).
    Other sources (``.json``, ``.csv``, DataFrames, lists, an in-memory ``datasets.Dataset``)
    are read as :func:`read_source` reads them and then handed out in chunks.
    """
    if isinstance(source, (str, os.PathLike)) and not (isinstance(source, str) and not source.strip()):
        path = Path(source).expanduser()
        if isinstance(source, str) and not _exists(path) and _HUB_NAME.match(source) and not _suffix(path):
            return _stream_dataset(
                _load_hub(source, split, streaming=True), batch_rows, limit, f"hub:{source}[{split}]"
            )
        suffix = _check_file(path)
        if suffix == ".parquet":
            return _stream_parquet(path, batch_rows, limit)
        if suffix in (".jsonl", ".jsonl.gz"):
            columns: list[str] = []
            return RawStream(str(path), columns, _jsonl_chunks(path, batch_rows, limit, columns))
    elif _is_datasets_object(source):
        import datasets

        if isinstance(source, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            if split not in source:
                raise DataError(f"DatasetDict has no split {split!r}; splits: {list(source)}")
            return _stream_dataset(source[split], batch_rows, limit, f"DatasetDict[{split!r}]")
        if isinstance(source, datasets.IterableDataset):
            return _stream_dataset(source, batch_rows, limit, None)
    raw = read_source(source, limit=limit, split=split, text_columns=text_columns)
    return RawStream(raw.description, list(raw.columns), _chunks_of(raw, batch_rows), list(raw.notes))


def _chunks_of(raw: RawRows, batch_rows: int) -> Iterator[RawRows]:
    for lo in range(0, len(raw.items), batch_rows):
        hi = lo + batch_rows
        frame = None if raw.frame is None else raw.frame.iloc[lo:hi].reset_index(drop=True)
        yield RawRows(raw.description, raw.items[lo:hi], raw.columns, frame=frame, start=lo)


def _stream_parquet(path: Path, batch_rows: int, limit: int | None) -> RawStream:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        columns = list(pf.schema_arrow.names)
    except Exception as err:  # pyarrow: ArrowInvalid, OSError, ... for a file that is not parquet
        raise DataError(f"{path}: cannot parse parquet ({type(err).__name__}: {err})") from err

    def chunks() -> Iterator[RawRows]:
        start = 0
        try:
            # iter_batches reads row group by row group: memory holds one batch, not the file.
            for batch in pf.iter_batches(batch_size=batch_rows):
                rows = batch.to_pylist()[: None if limit is None else limit - start]
                if rows:
                    yield RawRows(str(path), rows, columns, start=start)
                start += len(rows)
                if limit is not None and start >= limit:
                    return
        except Exception as err:
            raise DataError(f"{path}: cannot parse parquet ({type(err).__name__}: {err})") from err
        if start == 0:
            raise DataError(f"{path}: file contains no rows")

    return RawStream(str(path), columns, chunks())


def _jsonl_chunks(path: Path, batch_rows: int, limit: int | None, columns: list[str]) -> Iterator[RawRows]:
    """Chunks of a JSON-lines file; ``columns`` grows (in order of first appearance) as rows are read."""
    seen = dict.fromkeys(columns)
    items: list[Row | RejectedRow] = []
    start = 0
    try:
        with _open_binary(path) as fh:
            for lineno, line in _numbered_nonblank(fh):
                if limit is not None and start + len(items) >= limit:
                    break
                item = _parse_json_line(line, lineno, start + len(items))
                if isinstance(item, dict):
                    for key in item:
                        if key not in seen:
                            seen[key] = None
                            columns.append(key)
                items.append(item)
                if len(items) == batch_rows:
                    yield RawRows(str(path), items, list(columns), start=start)
                    start, items = start + len(items), []
    except (OSError, EOFError, zlib.error) as err:
        raise _read_error(path, err) from err
    if items:
        yield RawRows(str(path), items, list(columns), start=start)
    elif start == 0:
        raise DataError(f"{path}: file contains no rows")


def _stream_dataset(ds: Any, batch_rows: int, limit: int | None, description: str | None) -> RawStream:
    description = description or "datasets.IterableDataset"
    columns: list[str] = list(ds.column_names or [])  # None for JSON files until rows are read

    def chunks() -> Iterator[RawRows]:
        rows = itertools.islice(iter(ds), limit)
        start = 0
        while batch := list(itertools.islice(rows, batch_rows)):
            chunk = _from_records(batch, description, start=start)
            columns.extend(c for c in chunk.columns if c not in columns)
            yield RawRows(description, chunk.items, list(columns), start=start)
            start += len(batch)

    return RawStream(description, columns, chunks())


# ----------------------------------------------------------------------------------- in memory
def _from_records(records: Iterable[Any], description: str, start: int = 0) -> RawRows:
    items: list[Row | RejectedRow] = []
    columns: dict[str, None] = {}  # ordered set: keys in order of first appearance
    for i, rec in enumerate(records, start=start):
        if isinstance(rec, Mapping):
            row = {str(k): v for k, v in rec.items()}
            bad = _bad_name(row, i, "")
            columns.update(dict.fromkeys(row if bad is None else ()))
            items.append(row if bad is None else bad)
        else:
            items.append(RejectedRow(i, "row", f"expected a dict, got {type(rec).__name__}"))
    return RawRows(description, items, list(columns))


def _bad_name(row: Row, index: int, where: str) -> RejectedRow | None:
    """A row with a field name UTF-8 cannot encode: rejected whole, the name never a column."""
    reason = next((f"field name {k!r}: {r}" for k in row if (r := unencodable(k)) is not None), None)
    return None if reason is None else RejectedRow(index, "row", where + reason)


def _from_frame(df: pd.DataFrame, description: str) -> RawRows:
    if df.columns.duplicated().any():
        dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        raise DataError(f"{description}: duplicate column names {dup}")
    for k, c in enumerate(df.columns):
        if (reason := unencodable(str(c))) is not None:  # every row's column: the table cannot be used
            raise DataError(f"{description}: column name {str(c)!r} (column {k}, 0-based): {reason}")
    df = df.set_axis([str(c) for c in df.columns], axis=1).reset_index(drop=True)
    items: list[Row | RejectedRow] = list(df.to_dict("records"))
    return RawRows(description, items, list(df.columns), frame=df)


def _is_datasets_object(obj: Any) -> bool:
    # Without importing datasets: if it was never imported, obj cannot be one of its objects.
    return "datasets" in sys.modules and type(obj).__module__.split(".")[0] == "datasets"


def _read_dataset(ds: Any, *, split: str, limit: int | None, description: str | None) -> RawRows:
    import datasets

    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split not in ds:
            raise DataError(f"{description or 'DatasetDict'} has no split {split!r}; splits: {list(ds)}")
        ds = ds[split]
        description = description or f"DatasetDict[{split!r}]"
    if isinstance(ds, datasets.Dataset):
        description = description or f"datasets.Dataset ({ds.num_rows} rows)"
        if limit is not None:
            ds = ds.select(range(min(limit, ds.num_rows)))
        return _from_records(ds.to_list(), description)
    if isinstance(ds, datasets.IterableDataset):  # streaming: only the rows we keep are fetched
        return _from_records(itertools.islice(ds, limit), description or "datasets.IterableDataset")
    raise DataError(f"cannot read pairs from a {type(ds).__name__}")


def _read_hub(name: str, *, split: str, limit: int | None) -> RawRows:
    ds = _load_hub(name, split, streaming=False)
    return _read_dataset(ds, split=split, limit=limit, description=f"hub:{name}[{split}]")


def _load_hub(name: str, split: str, *, streaming: bool) -> Any:
    try:
        import datasets
    except ImportError as err:
        raise MissingDependencyError(f"loading hub dataset {name!r} needs `pip install datasets`") from err
    try:
        # streaming=True only when asked: the non-streaming call stays the plain one.
        return datasets.load_dataset(name, split=split, **({"streaming": True} if streaming else {}))
    except Exception as err:  # network, auth, missing dataset or split: all mean "not loadable here"
        raise DataError(
            f"could not load hub dataset {name!r} (split {split!r}): the Hugging Face hub could not be "
            f"reached or has no such dataset ({type(err).__name__}: {err}). Download it where a network "
            "exists and pass the local file (.jsonl, .parquet, ...) or a datasets.Dataset instead."
        ) from err


# ----------------------------------------------------------------------------------- files
def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")


def _check_file(path: Path) -> str:
    """The file's suffix, once it is known to be a non-empty file of a supported type."""
    where = str(path)
    if not _exists(path):
        hint = "" if _suffix(path) else " (nor a hub dataset name of the form 'owner/name')"
        raise DataError(f"{where}: no such file{hint}")
    if path.is_dir():
        raise DataError(f"{where}: is a directory, not a file")
    suffix = _suffix(path)
    if not suffix:
        raise DataError(f"{where}: unknown file type; supported: {', '.join(SUFFIXES)}")
    if path.stat().st_size == 0:
        raise DataError(f"{where}: file is empty")
    return suffix


def _read_path(path: Path, *, limit: int | None, text_columns: tuple[str, ...]) -> RawRows:
    where = str(path)
    suffix = _check_file(path)
    if suffix in (".jsonl", ".jsonl.gz"):
        raw = RawRows(where, *_read_jsonl(path, limit))
    elif suffix in (".json", ".json.gz"):
        raw = _read_json(path, limit)
    elif suffix in (".csv", ".csv.gz"):
        raw = _read_csv(path, limit, text_columns)
    else:
        raw = _read_parquet(path, limit)
    if not raw.items:
        raise DataError(f"{where}: file contains no rows")
    return raw


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # e.g. a name too long to be a path
        return False


def _read_error(path: Path, err: Exception) -> DataError:
    """A DataError for an error raised while reading ``path``'s bytes."""
    if isinstance(err, (EOFError, zlib.error, gzip.BadGzipFile)):
        return DataError(f"{path}: gzip data is truncated or corrupt ({type(err).__name__}: {err})")
    return DataError(f"{path}: cannot read file ({type(err).__name__}: {err})")


def _open_binary(path: Path) -> Any:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


def _read_jsonl(path: Path, limit: int | None) -> tuple[list[Row | RejectedRow], list[str]]:
    """Read JSON lines; a bad line is reported in place, and reading goes on."""
    items: list[Row | RejectedRow] = []
    columns: dict[str, None] = {}
    try:
        with _open_binary(path) as fh:
            for lineno, line in _numbered_nonblank(fh):
                if limit is not None and len(items) >= limit:
                    break  # lazily: the rest of the file is never read
                i = len(items)
                items.append(_parse_json_line(line, lineno, i))
                if isinstance(items[-1], dict):
                    columns.update(dict.fromkeys(items[-1]))
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise _read_error(path, err) from err
    return items, list(columns)


def _numbered_nonblank(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) for the lines that hold something; blank lines are not rows."""
    for lineno, line in enumerate(lines, start=1):
        if lineno == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")  # UTF-8 byte order mark
        if line.strip():
            yield lineno, line


def _parse_json_line(line: bytes, lineno: int, index: int) -> Row | RejectedRow:
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as err:
        return RejectedRow(index, "row", f"line {lineno}: invalid UTF-8 ({err.reason} at byte {err.start})")
    except json.JSONDecodeError as err:
        return RejectedRow(index, "row", f"line {lineno}: invalid JSON ({err.msg} at column {err.colno})")
    if not isinstance(obj, dict):
        return RejectedRow(index, "row", f"line {lineno}: expected a JSON object, got {type(obj).__name__}")
    return _bad_name(obj, index, f"line {lineno}: ") or obj


def _read_json(path: Path, limit: int | None) -> RawRows:
    try:
        with _open_binary(path) as fh:
            text = fh.read().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except (OSError, EOFError, zlib.error) as err:
        raise _read_error(path, err) from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # one object per line in a .json file: read it as JSON lines
            raw = RawRows(str(path), *_read_jsonl(path, limit))
            raw.notes.append("the .json file holds one JSON object per line; read as JSON lines")
            return raw
        raise DataError(f"{path}: invalid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from err
    if isinstance(data, dict):
        key = next((k for k in ("data", "rows") if isinstance(data.get(k), list)), None)
        if key is None:
            raise DataError(
                f"{path}: expected a JSON list of objects or {{'data': [...]}}; found an object with keys "
                f"{list(data)[:10]}"
            )
        data = data[key]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects, found {type(data).__name__}")
    return _from_records(data[:limit], str(path))


def _read_csv(path: Path, limit: int | None, text_columns: tuple[str, ...]) -> RawRows:
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
        text = [c for c in header if c in text_columns]
        df = pd.read_csv(
            path,
            nrows=limit,
            dtype=dict.fromkeys(text, str),
            keep_default_na=False,  # text cells stay verbatim ("" for an empty cell) ...
            na_values={c: _CSV_NA for c in header if c not in text},  # ... metadata gets the usual NAs
        )
    except Exception as err:  # pandas' parser raises many types (ParserError, UnicodeDecodeError, ...)
        raise DataError(f"{path}: cannot parse CSV ({type(err).__name__}: {err})") from err
    raw = _from_frame(df, str(path))
    n_parsed = 0
    for row in raw.items:
        for col in text:
            parsed = _json_messages(row[col])  # type: ignore[index]
            if parsed is not None:
                row[col] = parsed  # type: ignore[index]
                n_parsed += 1
    if n_parsed:
        raw.notes.append(f"{n_parsed} CSV cells held JSON message lists and were parsed")
    return raw


def _json_messages(cell: Any) -> list[Any] | None:
    """A CSV cell holding a JSON list of message dicts, parsed; anything else: None."""
    if not (isinstance(cell, str) and cell.lstrip().startswith("[") and cell.rstrip().endswith("]")):
        return None
    try:
        value = json.loads(cell)
    except json.JSONDecodeError:
        return None
    ok = isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)
    return value if ok else None


def _read_parquet(path: Path, limit: int | None) -> RawRows:
    import pyarrow.parquet as pq

    items: list[Row | RejectedRow] = []
    try:
        pf = pq.ParquetFile(path)
        columns = list(pf.schema_arrow.names)
        # Batches, so that a limit reads only the first row groups; to_pylist keeps lists as lists.
        for batch in pf.iter_batches(batch_size=min(limit or 65536, 65536)):
            items.extend(batch.to_pylist())
            if limit is not None and len(items) >= limit:
                break
    except Exception as err:  # pyarrow: ArrowInvalid, OSError, ... for a file that is not parquet
        raise DataError(f"{path}: cannot parse parquet ({type(err).__name__}: {err})") from err
    return RawRows(str(path), items[:limit], columns)
