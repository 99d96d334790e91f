"""What :func:`~prefaudit.pairs.load_pairs` returns: the pairs, and a report of how they were read.

Example
-------
>>> from prefaudit.pairs import load_pairs
>>> pairs = load_pairs([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
>>> pairs.format, len(pairs), pairs.report.n_read
('text', 1, 1)
>>> pairs.messages(0)
[{'role': 'user', 'content': '2+2?'}]
"""

from __future__ import annotations

import copy
import hashlib
import json
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

Message = dict[str, str]

#: Columns every :attr:`PreferencePairs.df` starts with; source columns follow as metadata.
CORE_COLUMNS = ("pair_id", "prompt", "chosen", "rejected")


def unencodable(text: str) -> str | None:
    """Why ``text`` cannot be written as UTF-8, or ``None`` when it can.

    A Python ``str`` can hold any code point up to U+10FFFF; the only ones UTF-8 (and so Arrow,
    parquet, tokenizers and the browser) cannot carry are the surrogates U+D800–U+DFFF. They
    reach a row as a lone ``"\\ud800"`` escape in JSON (valid JSON, decoded as is by Python), or
    in Python objects (a list of dicts, an object-dtype DataFrame); Arrow-backed sources
    (parquet, ``datasets``) cannot hold them. The reason names the first one and its 0-based
    character index, never the character itself (printing it would fail).

    Example
    -------
    >>> unencodable("fine é"), unencodable("ab\\ud800")
    (None, 'lone surrogate U+D800 at character 2 (0-based): not valid Unicode text, cannot be encoded as UTF-8')
    """
    if text.isascii():  # the common case, checked in C without encoding anything
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return (
            f"lone surrogate U+{ord(text[err.start]):04X} at character {err.start} (0-based): "
            "not valid Unicode text, cannot be encoded as UTF-8"
        )
    return None


@dataclass(frozen=True)
class RejectedRow:
    """A source row that was not kept: its 0-based index in the source, the field at fault, why.

    Example
    -------
    >>> RejectedRow(3, "chosen", "blank response")
    RejectedRow(index=3, field='chosen', reason='blank response')
    """

    index: int
    field: str  # a column name, or "row" when the row as a whole could not be read
    reason: str

    def __str__(self) -> str:
        return f"row {self.index}, {self.field}: {self.reason}"


@dataclass
class LoadReport:
    """How a source was read: rows read, kept and rejected (with reasons), and notes.

    ``n_read == n_kept + len(rejected)`` always holds: no row is dropped without a reason.

    Example
    -------
    >>> r = LoadReport("list of 2 dicts", n_read=2, n_kept=1, rejected=[RejectedRow(1, "chosen", "None")])
    >>> print(r.summary())
    list of 2 dicts: read 2 rows, kept 1, rejected 1
      row 1, chosen: None
    """

    source: str
    n_read: int
    n_kept: int
    rejected: list[RejectedRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.n_read != self.n_kept + len(self.rejected):
            raise ValueError(
                f"inconsistent load report: read {self.n_read} != kept {self.n_kept} + rejected {len(self.rejected)}"
            )

    def to_frame(self) -> pd.DataFrame:
        """The rejected rows as a table with columns ``index``, ``field``, ``reason``."""
        return pd.DataFrame(
            [(r.index, r.field, r.reason) for r in self.rejected], columns=["index", "field", "reason"]
        ).astype({"index": "int64"})

    def summary(self, max_rows: int = 10) -> str:
        """A few lines for people: the counts, the first ``max_rows`` rejected rows, the notes."""
        lines = [f"{self.source}: read {self.n_read} rows, kept {self.n_kept}, rejected {len(self.rejected)}"]
        lines += [f"  {r}" for r in self.rejected[:max_rows]]
        if len(self.rejected) > max_rows:
            lines.append(f"  ... and {len(self.rejected) - max_rows} more (report.to_frame() lists all)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


@dataclass(frozen=True, eq=False, repr=False)
class PreferencePairs:
    """Validated preference pairs in one of three formats, with the report of how they were read.

    ``df`` has columns ``pair_id`` (the row's 0-based index in the source), ``prompt``, ``chosen``,
    ``rejected``, then the source's other columns unchanged. ``format`` is ``"text"`` (all strings),
    ``"conversational"`` or ``"hh"`` (prompt is a list of ``{"role", "content"}`` messages, the
    responses are the final assistant texts).

    Example
    -------
    >>> from prefaudit.pairs import load_pairs
    >>> pairs = load_pairs([{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away.", "src": "a"}])
    >>> pairs[0]
    {'pair_id': 0, 'prompt': 'Hi', 'chosen': 'Hello!', 'rejected': 'Go away.', 'src': 'a'}
    """

    df: pd.DataFrame
    format: str
    report: LoadReport

    def __len__(self) -> int:
        return len(self.df)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Row at position ``i`` (not ``pair_id``) as a dict."""
        i = operator.index(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"pair position {i} out of range for {len(self)} pairs")
        # to_dict boxes numpy scalars into Python ones (int, float, str).
        return self.df.iloc[[i]].to_dict("records")[0]

    def messages(self, i: int) -> list[Message]:
        """The prompt of row position ``i`` as chat messages (a copy, safe to modify)."""
        prompt = self.df["prompt"].iloc[operator.index(i)]
        if self.format == "text":
            return [{"role": "user", "content": prompt}] if prompt else []
        return copy.deepcopy(list(prompt))

    def fingerprint(self) -> str:
        """sha256 (hex) of prompt, chosen and rejected of every row, in order.

        Metadata columns and ``pair_id`` do not enter; equal content always gives the same digest.
        """
        digest = hashlib.sha256()
        for p, c, r in zip(self.df["prompt"], self.df["chosen"], self.df["rejected"], strict=True):
            # One JSON line per row: unambiguous separators, and dict key order cannot matter.
            line = json.dumps([p, c, r], ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            digest.update(b"\n" + line.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    def head(self, n: int = 5) -> PreferencePairs:
        """The first ``n`` pairs."""
        return self.subset(range(min(max(n, 0), len(self))))

    def subset(self, positions: Iterable[int]) -> PreferencePairs:
        """New pairs holding the rows at ``positions`` (row positions, not ``pair_id``), which keep their ``pair_id``."""
        df = self.df.iloc[[operator.index(p) for p in positions]].reset_index(drop=True)
        return PreferencePairs(df=df, format=self.format, report=self.report)

    def to_records(self) -> list[dict[str, Any]]:
        """All rows as dicts (what :meth:`__getitem__` returns, for every row)."""
        return self.df.to_dict("records")

    def __repr__(self) -> str:
        r = self.report
        return (
            f"PreferencePairs(format={self.format!r}, n={len(self)}, read={r.n_read}, "
            f"rejected={len(r.rejected)}, source={r.source!r})"
        )
