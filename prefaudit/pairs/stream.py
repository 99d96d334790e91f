"""``stream_pairs``: validate a preference dataset chunk by chunk, for sources bigger than memory.

Every row goes through the same checks as in :func:`~prefaudit.pairs.load_pairs`; each chunk
is a :class:`~prefaudit.pairs.PreferencePairs` whose ``pair_id`` are the rows' indices in the
whole source, and the stream's :attr:`PairStream.report` keeps the running count of rows read,
kept and rejected (each with its index and reason). Read to the end, the chunks put together
and the report equal what ``load_pairs`` returns for the same source.

Example
-------
>>> rows = [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."},
...         {"prompt": "Hi", "chosen": "Same", "rejected": "Same"},
...         {"prompt": "2+2?", "chosen": "4", "rejected": "5"}]
>>> stream = stream_pairs(rows, batch_rows=2)
>>> [chunk.df["pair_id"].tolist() for chunk in stream]
[[0], [2]]
>>> stream.report.n_read, stream.report.n_kept, stream.report.rejected[0].index
(3, 2, 1)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pandas as pd

from ..errors import ConfigError, DataError
from .formats import _SAMPLE, BadRow, Columns, Tally, detect_format, normalise
from .load import _NO_PROMPT_HINT, _check_columns, _check_options, _frame
from .sources import RawRows, stream_source
from .types import LoadReport, PreferencePairs, RejectedRow

#: Rows per chunk unless told otherwise: a chunk of long dialogues stays around 100 MB.
DEFAULT_BATCH_ROWS = 10_000


def stream_pairs(
    source: Any,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    limit: int | None = None,
    format: Literal["auto", "text", "conversational", "hh"] = "auto",
    prompt_col: str = "prompt",
    chosen_col: str = "chosen",
    rejected_col: str = "rejected",
    split: str = "train",
    on_bad_row: Literal["report", "raise"] = "report",
) -> PairStream:
    """Preference pairs of ``source``, validated and handed out ``batch_rows`` source rows at a time.

    The options are those of :func:`~prefaudit.pairs.load_pairs`. Read lazily (one chunk in
    memory): ``.parquet`` (row group by row group), ``.jsonl``/``.jsonl.gz``, a
    ``datasets.IterableDataset`` (``load_dataset(..., streaming=True)``) and hub names (opened
    with ``streaming=True``). Other sources are read whole and handed out in chunks.

    Example
    -------
    >>> stream = stream_pairs("big.parquet", batch_rows=50_000)      # doctest: +SKIP
    >>> for chunk in stream:                                         # doctest: +SKIP
    ...     process(chunk.df)        # chunk.df["pair_id"]: row indices in the whole file
    >>> print(stream.report)                                          # doctest: +SKIP

    Notes
    -----
    The format is detected, as ``load_pairs`` does, from the first 200 readable rows (the
    stream reads ahead until it has them). The columns a JSON-lines file or a schema-less
    dataset has are known only as rows are read: a column first seen after those rows is
    kept from there on and noted in the report (``load_pairs``, which reads everything first,
    would have known it from the start).

    Raises
    ------
    DataError, ConfigError
        As :func:`~prefaudit.pairs.load_pairs`; a file that cannot be opened, at once; a bad
        row with ``on_bad_row="raise"`` and "no usable rows", while reading.
    """
    _check_options(limit, format, on_bad_row, (prompt_col, chosen_col, rejected_col))
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ConfigError(f"batch_rows must be a positive int, not {batch_rows!r}")
    text_columns = (prompt_col, chosen_col, rejected_col)
    raw = stream_source(source, batch_rows=batch_rows, limit=limit, split=split, text_columns=text_columns)
    return PairStream(raw, format, Columns(prompt_col, chosen_col, rejected_col), on_bad_row)


def _drain(buffered: list[RawRows], chunks: Iterator[RawRows]) -> Iterator[RawRows]:
    """The chunks read ahead, then the rest; none is held once handed out (memory stays flat)."""
    while buffered:
        yield buffered.pop(0)
    yield from chunks


class PairStream:
    """Chunks of validated pairs (iterate once) and the running :attr:`report`.

    ``format`` is ``None`` until the first chunk has been read. :meth:`collect` reads the rest
    and returns all pairs as one :class:`~prefaudit.pairs.PreferencePairs`.
    """

    def __init__(self, raw: Any, format: str, cols: Columns, on_bad_row: str) -> None:
        self._raw, self._requested, self._cols, self._on_bad_row = raw, format, cols, on_bad_row
        self.format: str | None = None
        self.report = LoadReport(raw.description, 0, 0, [], list(raw.notes))
        self._head: list[str] = []  # notes before the tally's: format, renamed columns, late columns
        self._tally = Tally()
        self._started = False

    def __iter__(self) -> Iterator[PreferencePairs]:
        if self._started:
            raise ConfigError("a PairStream is read once; call stream_pairs again to read the source again")
        self._started = True
        chunks = iter(self._raw.chunks)
        buffered = self._read_ahead(chunks)
        cols, fixed = self._settle_format(buffered)
        known = set(fixed)
        for chunk in _drain(buffered, chunks):
            late = [c for c in chunk.columns if c not in known]
            for c in late:
                self._head.append(
                    f"column {c!r} first appears at or after row {chunk.start}, after the columns were fixed"
                )
            known.update(late)
            out = self._validate(chunk, cols, [*fixed, *[c for c in chunk.columns if c not in fixed]])
            self._refresh_notes()
            if out is not None:
                yield out
        if self.report.n_kept == 0:
            first = "; ".join(str(r) for r in self.report.rejected[:5])
            raise DataError(
                f"{self.report.source}: no usable rows: all {len(self.report.rejected)} rows read were "
                f"rejected. First reasons: {first}"
            )

    def collect(self) -> PreferencePairs:
        """Read every (remaining) chunk; all pairs in one table, with the whole report."""
        frames = [chunk.df for chunk in self]
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return PreferencePairs(df=df, format=str(self.format), report=self.report)

    # ------------------------------------------------------------------------------ steps
    def _read_ahead(self, chunks: Iterator[RawRows]) -> list[RawRows]:
        """Chunks until ``_SAMPLE`` readable rows are in hand (or the source ends), for detection."""
        buffered: list[RawRows] = []
        n_rows = 0
        while n_rows < _SAMPLE:
            chunk = next(chunks, None)
            if chunk is None:
                break
            buffered.append(chunk)
            n_rows += sum(isinstance(item, dict) for item in chunk.items)
        return buffered

    def _settle_format(self, buffered: list[RawRows]) -> tuple[Columns, list[str]]:
        """Detect the format as load_pairs does; returns the columns and the column list fixed now."""
        columns = list(buffered[-1].columns) if buffered else list(self._raw.columns)
        c = self._cols
        cols = Columns(c.prompt, c.chosen, c.rejected, has_prompt=c.prompt in columns)
        rows = [item for chunk in buffered for item in chunk.items if isinstance(item, dict)]
        fmt = self._requested
        if rows:
            probe = RawRows(self.report.source, [], columns)
            _check_columns(probe, required=(c.chosen, c.rejected))
            if fmt == "auto":
                fmt, why = detect_format(rows, cols)
                self._head.append(f"format {fmt!r} detected: {why}")
            if fmt == "text":
                _check_columns(
                    probe, required=(c.prompt,), hint=_NO_PROMPT_HINT if self._requested == "auto" else ""
                )
        self.format = fmt
        return cols, columns

    def _validate(self, chunk: RawRows, cols: Columns, columns: list[str]) -> PreferencePairs | None:
        """Check every row of a chunk; its kept pairs (``None`` if none), the report updated."""
        kept, values, rejected = [], [], []
        for k, item in enumerate(chunk.items):
            i = chunk.start + k
            bad = item if isinstance(item, RejectedRow) else None
            if bad is None:
                try:
                    values.append(normalise(item, str(self.format), cols, self._tally, i))
                    kept.append(k)
                except BadRow as err:
                    bad = RejectedRow(i, err.field, err.reason)
            if bad is not None:
                if self._on_bad_row == "raise":
                    raise DataError(
                        f"{self.report.source}: row {bad.index}, field {bad.field!r}: {bad.reason}"
                    )
                rejected.append(bad)
        r = self.report
        r.n_read, r.n_kept = r.n_read + len(chunk.items), r.n_kept + len(kept)
        r.rejected.extend(rejected)
        if not kept:
            return None
        local = RawRows(chunk.description, chunk.items, columns, frame=chunk.frame)
        c = self._cols
        df, renamed = _frame(local, kept, values, consumed={c.prompt, c.chosen, c.rejected})
        df["pair_id"] += chunk.start
        for old, new in renamed.items():
            note = f"source column {old!r} renamed {new!r}: the name is taken"
            if note not in self._head:
                self._head.append(note)
        end = chunk.start + len(chunk.items) - 1
        report = LoadReport(f"{r.source} rows {chunk.start}-{end}", len(chunk.items), len(kept), rejected)
        return PreferencePairs(df=df, format=str(self.format), report=report)

    def _refresh_notes(self) -> None:
        # Same order as load_pairs: the format, the source's own notes, renamed columns, the tally.
        detected = [n for n in self._head if n.startswith("format ")]
        rest = [n for n in self._head if not n.startswith("format ")]
        self.report.notes = [*detected, *self._raw.notes, *rest, *self._tally.notes()]

    def __repr__(self) -> str:
        r = self.report
        return (
            f"PairStream(format={self.format!r}, read={r.n_read}, kept={r.n_kept}, "
            f"rejected={len(r.rejected)}, source={r.source!r})"
        )
