"""Load and validate preference pairs (prompt, chosen, rejected).

Sources: ``.jsonl``/``.jsonl.gz``/``.json``/``.csv``/``.parquet`` files, a ``pandas.DataFrame``, a
list of dicts, a ``datasets.Dataset`` and hub names. Formats: plain text, trl conversational
message lists, Anthropic HH dialogues. Every row that cannot be used is reported with its index,
field and reason; nothing is dropped silently.

Example
-------
>>> from prefaudit.pairs import load_pairs
>>> pairs = load_pairs([{"chosen": "\\n\\nHuman: Hi\\n\\nAssistant: Hello!",
...                      "rejected": "\\n\\nHuman: Hi\\n\\nAssistant: Go away."}])
>>> pairs.format, pairs.messages(0), pairs[0]["chosen"]
('hh', [{'role': 'user', 'content': 'Hi'}], 'Hello!')
"""

from __future__ import annotations

from .load import load_pairs
from .stream import PairStream, stream_pairs
from .types import LoadReport, PreferencePairs, RejectedRow

__all__ = ["LoadReport", "PairStream", "PreferencePairs", "RejectedRow", "load_pairs", "stream_pairs"]
