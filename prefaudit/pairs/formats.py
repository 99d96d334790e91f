"""Detect a source's format and normalise each row to ``(prompt, chosen, rejected)``.

Three formats (see :class:`~prefaudit.pairs.PreferencePairs`):

- ``"text"``: prompt, chosen and rejected are strings.
- ``"conversational"`` (trl): lists of ``{"role", "content"}`` messages. With an implicit prompt
  (no prompt column, or responses that repeat it) the shared leading messages are the prompt.
- ``"hh"`` (Anthropic): chosen and rejected are whole ``"\\n\\nHuman: … \\n\\nAssistant: …"``
  dialogues that differ in the final assistant turn.

A row that cannot be used raises :class:`BadRow` (the field at fault and why); the loader turns
it into a :class:`~prefaudit.pairs.RejectedRow`. Before any format is applied, every value of the
row (metadata too, nested message lists included) must be text that UTF-8 can encode
(:func:`check_text`): one lone surrogate would otherwise stop the whole load later, in pandas,
Arrow or the tokenizer.

Example
-------
>>> from prefaudit.pairs.formats import Columns, Tally, normalise_hh
>>> row = {"chosen": "\\n\\nHuman: Hi\\n\\nAssistant: Hello!", "rejected": "\\n\\nHuman: Hi\\n\\nAssistant: What?"}
>>> normalise_hh(row, Columns(), Tally(), 0)
([{'role': 'user', 'content': 'Hi'}], 'Hello!', 'What?')
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .hh import looks_like_hh, split_dialogue
from .types import Message, unencodable

FORMATS = ("text", "conversational", "hh")
ROLES = ("user", "assistant", "system")
_SAMPLE = 200  # rows looked at to detect the format

Prompt = str | list[Message]
Normalised = tuple[Prompt, str, str]


class BadRow(Exception):
    """A row cannot be used: ``field`` (a source column) and ``reason``. Never leaves the package."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class Columns:
    """The source columns that hold prompt, chosen and rejected; ``has_prompt``: whether it exists."""

    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    has_prompt: bool = False


@dataclass
class Tally:
    """Things done to rows that were kept, worth a note in the report: note text -> pair ids."""

    rows: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def add(self, note: str, pair_id: int) -> None:
        self.rows[note].append(pair_id)

    def notes(self) -> list[str]:
        out = []
        for note, ids in self.rows.items():
            shown = ", ".join(map(str, ids[:5])) + (", ..." if len(ids) > 5 else "")
            out.append(f"{len(ids)} rows: {note} (pair_id {shown})")
        return out


# ----------------------------------------------------------------------------------- detection
def detect_format(rows: list[dict[str, Any]], cols: Columns) -> tuple[str, str]:
    """``(format, why)`` from the first rows: message lists, HH dialogues, or else plain text."""
    sample = rows[:_SAMPLE]
    if any(_is_list(r.get(c)) for r in sample for c in (cols.prompt, cols.chosen, cols.rejected)):
        return "conversational", "the rows hold lists of messages"
    no_prompt = not cols.has_prompt or not any(_nonblank(r.get(cols.prompt)) for r in sample)
    n_hh = sum(looks_like_hh(r.get(cols.chosen), r.get(cols.rejected)) for r in sample)
    if no_prompt and sample and n_hh * 2 >= len(sample):
        return (
            "hh",
            "no prompt column (or only empty prompts) and the responses are Human/Assistant dialogues",
        )
    return "text", "the responses are plain strings"


def _is_list(value: Any) -> bool:
    # numpy arrays stand for lists when a user passes a DataFrame read from parquet by pandas.
    return isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray"


def _nonblank(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


# ----------------------------------------------------------------------------------- checks
def _is_missing(value: Any) -> bool:
    # None, NaN (pandas' missing value for floats and "str" columns) and pd.NA / pd.NaT.
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return type(value).__name__ in ("NAType", "NaTType")


def _string(row: Mapping[str, Any], col: str, *, allow_blank: bool = False) -> str:
    value = row[col]
    if _is_missing(value):
        raise BadRow(col, f"missing value ({value!r})")
    if not isinstance(value, str):
        raise BadRow(col, f"expected a string, got {type(value).__name__} ({_short(value)})")
    if not allow_blank and not value.strip():
        raise BadRow(col, "blank (empty or whitespace only)")
    return str(value)  # a plain str, also for numpy.str_


def _messages(value: Any, col: str) -> list[Message]:
    if _is_missing(value):
        raise BadRow(col, f"missing value ({value!r})")
    if not _is_list(value):
        raise BadRow(col, f"expected a list of messages, got {type(value).__name__} ({_short(value)})")
    out = []
    for k, m in enumerate(value):
        if not isinstance(m, Mapping):
            raise BadRow(col, f"message {k} is a {type(m).__name__}, not a {{'role', 'content'}} dict")
        if "role" not in m or "content" not in m:
            raise BadRow(col, f"message {k} lacks {'role' if 'role' not in m else 'content'!r}")
        if m["role"] not in ROLES:
            raise BadRow(col, f"message {k} has role {m['role']!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise BadRow(col, f"message {k} content is {type(m['content']).__name__}, not a string")
        out.append({"role": str(m["role"]), "content": str(m["content"])})
    return out


def _check_pair(chosen: str, rejected: str, cols: Columns) -> None:
    for text, col in ((chosen, cols.chosen), (rejected, cols.rejected)):
        if not text.strip():
            raise BadRow(col, "blank response (empty or whitespace only)")
    if chosen.strip() == rejected.strip():
        raise BadRow(cols.rejected, "chosen and rejected are identical")


def _short(value: Any, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


# ----------------------------------------------------------------------------------- formats
def normalise_text(row: Mapping[str, Any], cols: Columns, tally: Tally, pair_id: int) -> Normalised:
    """Plain strings; an empty prompt is allowed (the prompt column exists)."""
    prompt = _string(row, cols.prompt, allow_blank=True)
    chosen, rejected = _string(row, cols.chosen), _string(row, cols.rejected)
    _check_pair(chosen, rejected, cols)
    return prompt, chosen, rejected


def normalise_conversational(row: Mapping[str, Any], cols: Columns, tally: Tally, pair_id: int) -> Normalised:
    """Message lists; the messages chosen and rejected share at the start join the prompt."""
    chosen_m, rejected_m = (
        _messages(row[cols.chosen], cols.chosen),
        _messages(row[cols.rejected], cols.rejected),
    )
    prompt_value = _optional_prompt(row, cols, [])
    n = _common_prefix(chosen_m, rejected_m)
    if isinstance(prompt_value, str):
        # e.g. UltraFeedback: a prompt string and responses that repeat the whole conversation.
        if n:
            prompt = []
            tally.add(
                "prompt string set aside; the prompt is the messages chosen and rejected share", pair_id
            )
        else:
            prompt = [{"role": "user", "content": prompt_value}] if prompt_value.strip() else []
    else:
        prompt = _messages(prompt_value, cols.prompt)
    if chosen_m == rejected_m:
        raise BadRow(cols.rejected, "chosen and rejected are identical")
    chosen = _response(chosen_m[n:], n, cols.chosen, tally, pair_id)
    rejected = _response(rejected_m[n:], n, cols.rejected, tally, pair_id)
    _check_pair(chosen, rejected, cols)
    prompt = prompt + chosen_m[:n]
    if not prompt:
        where = cols.prompt if cols.has_prompt else cols.chosen
        raise BadRow(where, "empty prompt: no messages before the responses")
    return prompt, chosen, rejected


def _optional_prompt(row: Mapping[str, Any], cols: Columns, empty: Any) -> Any:
    # The prompt is optional in these formats (the dialogue holds it): absent or missing = empty.
    value = row.get(cols.prompt) if cols.has_prompt else None
    return empty if _is_missing(value) else value


def _common_prefix(a: list[Message], b: list[Message]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _response(messages: list[Message], offset: int, col: str, tally: Tally, pair_id: int) -> str:
    if not messages:
        raise BadRow(col, "no response: the other response continues this one's messages")
    for k, m in enumerate(messages, start=offset):
        if m["role"] != "assistant":
            raise BadRow(
                col,
                f"message {k} is a {m['role']} message after chosen and rejected diverge; "
                "they must differ only in their final assistant turn",
            )
    if len(messages) > 1:
        tally.add("a response held several assistant messages, joined with blank lines", pair_id)
    return "\n\n".join(m["content"] for m in messages)


def normalise_hh(row: Mapping[str, Any], cols: Columns, tally: Tally, pair_id: int) -> Normalised:
    """HH dialogues: the prompt is the shared dialogue, the responses the final assistant turns."""
    # A prompt column holding the dialogue's start ("\n\nHuman: …\n\nAssistant:") is prepended.
    prefix = _optional_prompt(row, cols, "")
    if not isinstance(prefix, str):
        raise BadRow(cols.prompt, f"expected a string, got {type(prefix).__name__} ({_short(prefix)})")
    turns = {}
    for col in (cols.chosen, cols.rejected):
        messages = split_dialogue(prefix + _string(row, col))
        if not any(m["role"] == "assistant" for m in messages):
            raise BadRow(col, "dialogue has no '\\n\\nAssistant:' turn")
        if messages[-1]["role"] != "assistant":
            raise BadRow(col, "dialogue ends with a Human turn, not with the Assistant response")
        turns[col] = messages
    prompt, chosen_t = turns[cols.chosen][:-1], turns[cols.chosen][-1]["content"]
    if prompt != turns[cols.rejected][:-1]:
        k = _common_prefix(prompt, turns[cols.rejected][:-1])
        raise BadRow(
            cols.rejected,
            f"chosen and rejected do not share the dialogue before the final Assistant turn (turn {k} differs)",
        )
    if not any(m["role"] == "user" for m in prompt):
        raise BadRow(cols.chosen, "no Human turn before the final Assistant turn")
    rejected_t = turns[cols.rejected][-1]["content"]
    for text, col in ((chosen_t, cols.chosen), (rejected_t, cols.rejected)):
        if not text.strip():
            raise BadRow(col, "blank response: the final Assistant turn is empty")
    _check_pair(chosen_t, rejected_t, cols)
    if prompt[-1]["role"] != "user":
        tally.add("prompt ends with an assistant turn (consecutive Assistant turns)", pair_id)
    return prompt, chosen_t, rejected_t


NORMALISERS: dict[str, Callable[[Mapping[str, Any], Columns, Tally, int], Normalised]] = {
    "text": normalise_text,
    "conversational": normalise_conversational,
    "hh": normalise_hh,
}


def normalise(row: Mapping[str, Any], fmt: str, cols: Columns, tally: Tally, pair_id: int) -> Normalised:
    """``(prompt, chosen, rejected)`` of one source row in format ``fmt``, or :class:`BadRow`."""
    required = (cols.prompt, cols.chosen, cols.rejected) if fmt == "text" else (cols.chosen, cols.rejected)
    for col in required:
        if col not in row:
            raise BadRow(col, "missing field")
    check_text(row)
    out = NORMALISERS[fmt](row, cols, tally, pair_id)
    if any("\x00" in text for text in _texts(out)):
        tally.add(_NUL_NOTE, pair_id)
    return out


# ----------------------------------------------------------------------------------- text
#: NUL and the other control characters are valid Unicode and encode in UTF-8, Arrow, parquet
#: and JSON, and byte-level tokenizers take them, so rows holding them are kept as they are
#: (code datasets hold form feeds and escapes on purpose). NUL alone is counted in the report:
#: it is rarely meant (binary debris, a bad export) and some tools cut C strings at it.
_NUL_NOTE = "text holds NUL characters (U+0000), kept as they are"


def check_text(row: Mapping[str, Any]) -> None:
    """Raise :class:`BadRow` (column, where, which code point) for text that UTF-8 cannot encode.

    Every value is looked at, nested lists and dicts too (message lists, metadata), so the
    rows kept can be written anywhere; the reason says where inside a nested value it is.
    """
    for col, value in row.items():
        if isinstance(value, str) and value.isascii():  # the common case, without a call
            continue
        problem = _text_problem(value, "", 0)
        if problem is not None:
            raise BadRow(col, problem)


def _text_problem(value: Any, where: str, depth: int) -> str | None:
    """The first unencodable text in ``value``, prefixed with where it is (``[1]['content']: ``)."""
    if isinstance(value, str):
        reason = unencodable(value)
        return None if reason is None else (f"{where}: " if where else "") + reason
    if depth > 32:  # nothing this deep is text we use; JSON nesting this deep is not a preference row
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            key_reason = unencodable(key) if isinstance(key, str) else None
            if key_reason is not None:
                return f"{where or 'a'} key: {key_reason}"
            problem = _text_problem(item, f"{where}[{key!r}]", depth + 1)
            if problem is not None:
                return problem
    elif _is_list(value):
        for k, item in enumerate(value):
            problem = _text_problem(item, f"{where}[{k}]", depth + 1)
            if problem is not None:
                return problem
    return None


def _texts(normalised: Normalised) -> list[str]:
    prompt, chosen, rejected = normalised
    texts = [prompt] if isinstance(prompt, str) else [m["content"] for m in prompt]
    return [*texts, chosen, rejected]
