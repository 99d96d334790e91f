"""``load_pairs``: read a preference dataset, detect its format, validate every row, report.

Example
-------
>>> from prefaudit.pairs import load_pairs
>>> rows = [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."},
...         {"prompt": "Hi", "chosen": "Same", "rejected": "Same"}]
>>> pairs = load_pairs(rows)
>>> len(pairs), pairs.report.rejected
(1, [RejectedRow(index=1, field='rejected', reason='chosen and rejected are identical')])
"""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd

from ..errors import ConfigError, DataError
from .formats import FORMATS, BadRow, Columns, Tally, detect_format, normalise
from .sources import RawRows, read_source
from .types import CORE_COLUMNS, LoadReport, PreferencePairs, RejectedRow


def load_pairs(
    source: Any,
    *,
    limit: int | None = None,
    format: Literal["auto", "text", "conversational", "hh"] = "auto",
    prompt_col: str = "prompt",
    chosen_col: str = "chosen",
    rejected_col: str = "rejected",
    split: str = "train",
    on_bad_row: Literal["report", "raise"] = "report",
) -> PreferencePairs:
    """Load preference pairs (prompt, chosen, rejected) and validate every row.

    Example
    -------
    >>> pairs = load_pairs([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
    >>> pairs.df[["pair_id", "prompt", "chosen", "rejected"]].values.tolist()
    [[0, '2+2?', '4', '5']]

    Parameters
    ----------
    source
        A path (``.jsonl``, ``.jsonl.gz``, ``.json``, ``.csv``, ``.parquet``; ``.json.gz``,
        ``.csv.gz`` too), a ``pandas.DataFrame``, a list of dicts, a ``datasets.Dataset`` or
        ``DatasetDict``, or a Hugging Face hub name ``"owner/name"`` (needs a network).
    limit
        Read only the first ``limit`` source rows (a JSON-lines file stops reading there).
    format
        ``"auto"`` detects: message lists are ``"conversational"``; responses that are both
        ``"\\n\\nHuman: … \\n\\nAssistant: …"`` dialogues without a prompt are ``"hh"``; otherwise
        ``"text"``, which needs a prompt column.
    prompt_col, chosen_col, rejected_col
        Source columns holding the prompt and the two responses.
    split
        The split to take from a ``DatasetDict`` or from the hub.
    on_bad_row
        ``"report"``: reject bad rows and list them in ``pairs.report``; ``"raise"``: raise
        :class:`~prefaudit.errors.DataError` at the first bad row.

    Returns
    -------
    PreferencePairs
        ``df`` (``pair_id``, ``prompt``, ``chosen``, ``rejected``, then the source's other
        columns), ``format`` and ``report``.

    Raises
    ------
    DataError
        The source cannot be read (missing, empty, corrupt or unknown file; missing columns;
        hub unreachable), no row is usable, or a row is bad and ``on_bad_row="raise"``.
    ConfigError
        An option has a value that is not allowed.
    """
    _check_options(limit, format, on_bad_row, (prompt_col, chosen_col, rejected_col))
    raw = read_source(source, limit=limit, split=split, text_columns=(prompt_col, chosen_col, rejected_col))
    cols = Columns(prompt_col, chosen_col, rejected_col, has_prompt=prompt_col in raw.columns)
    rows = [item for item in raw.items if isinstance(item, dict)]
    notes = list(raw.notes)
    fmt = format
    if rows:
        _check_columns(raw, required=(chosen_col, rejected_col))
        if format == "auto":
            fmt, why = detect_format(rows, cols)
            notes.insert(0, f"format {fmt!r} detected: {why}")
        if fmt == "text":
            _check_columns(raw, required=(prompt_col,), hint=_NO_PROMPT_HINT if format == "auto" else "")

    tally, kept, values, rejected = Tally(), [], [], []
    for i, item in enumerate(raw.items):
        bad = item if isinstance(item, RejectedRow) else None
        if bad is None:
            try:
                values.append(normalise(item, fmt, cols, tally, i))
                kept.append(i)
            except BadRow as err:
                bad = RejectedRow(i, err.field, err.reason)
        if bad is not None:
            if on_bad_row == "raise":
                raise DataError(f"{raw.description}: row {bad.index}, field {bad.field!r}: {bad.reason}")
            rejected.append(bad)
    if not kept:
        first = "; ".join(str(r) for r in rejected[:5])
        raise DataError(
            f"{raw.description}: no usable rows: all {len(rejected)} rows read were rejected. First reasons: {first}"
        )

    df, renamed = _frame(raw, kept, values, consumed={prompt_col, chosen_col, rejected_col})
    notes += [f"source column {old!r} renamed {new!r}: the name is taken" for old, new in renamed.items()]
    notes += tally.notes()
    report = LoadReport(raw.description, len(raw.items), len(kept), rejected, notes)
    return PreferencePairs(df=df, format=fmt, report=report)


def _check_options(limit: Any, format: str, on_bad_row: str, columns: tuple[str, str, str]) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive int or None, not {limit!r}")
    if format not in ("auto", *FORMATS):
        raise ConfigError(f"format must be one of 'auto', {', '.join(map(repr, FORMATS))}; not {format!r}")
    if on_bad_row not in ("report", "raise"):
        raise ConfigError(f"on_bad_row must be 'report' or 'raise', not {on_bad_row!r}")
    if len(set(columns)) != 3:
        raise ConfigError(f"prompt_col, chosen_col and rejected_col must differ; got {columns}")


def _check_columns(raw: RawRows, required: tuple[str, ...], hint: str = "") -> None:
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise DataError(
            f"{raw.description}: missing required column(s) {missing}; columns found: {raw.columns}{hint}"
        )


_NO_PROMPT_HINT = (
    ". Without a prompt column the responses must be trl message lists or Anthropic HH "
    "dialogues ('\\n\\nHuman: … \\n\\nAssistant: …'); pass prompt_col= if it has another name"
)


def _frame(
    raw: RawRows, kept: list[int], values: list[tuple[Any, str, str]], consumed: set[str]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The output table: core columns, then the source's other columns (renamed if they clash)."""
    prompts, chosen, rejected = zip(*values, strict=True)
    core = pd.DataFrame(
        {
            "pair_id": pd.Series(kept, dtype="int64"),
            # object dtype keeps message lists as lists (pandas would not guess it for us)
            "prompt": list(prompts) if isinstance(prompts[0], str) else pd.Series(prompts, dtype=object),
            "chosen": list(chosen),
            "rejected": list(rejected),
        }
    )
    meta = [c for c in raw.columns if c not in consumed]
    if raw.frame is not None:
        extra = raw.frame.iloc[kept][meta].reset_index(drop=True)
    else:
        extra = pd.DataFrame([{c: raw.items[i].get(c) for c in meta} for i in kept], columns=meta)  # type: ignore[union-attr]
    renamed = {}
    for c in meta:
        if c in CORE_COLUMNS:
            new = f"source_{c}"
            while new in meta:
                new = f"source_{new}"
            renamed[c] = new
    return pd.concat([core, extra.rename(columns=renamed)], axis=1), renamed
