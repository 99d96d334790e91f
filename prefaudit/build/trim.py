"""Cutting a generated answer to a clean, complete passage (or rejecting it) before it is used.

Example
-------
>>> text = "Rain is water that falls from clouds. It forms when vapour condenses. Heavy rain can"
>>> trim_response(text, min_chars=40)
'Rain is water that falls from clouds. It forms when vapour condenses.'
>>> trim_response("Great question!!!!!!!!! Rain is wet.") is None
True
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*(?=\s|$)")
_REPEAT = re.compile(r"(\b\w+\b(?:\W+\w+){2,5}?)\W+(?:\1\W+){2,}", re.IGNORECASE)


def trim_response(text: str, *, max_chars: int = 520, min_chars: int = 120) -> str | None:
    """Cut a generated answer at its last complete sentence within ``max_chars``.

    Returns ``None`` for answers that are too short, that loop (a phrase repeated three times or
    more), that contain long digit or character runs, or that carry a chat-template marker.
    """
    text = text.strip()
    if "<|" in text or re.search(r"(\S)\1{7,}|\d{12,}", text) or _REPEAT.search(text):
        return None
    head = text[:max_chars]
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    if not ends:
        return None
    cut = head[: ends[-1]].strip()
    # Drop what a cut leaves dangling: a bare list number ("\n\n1.") or a "Here are some tips:" line.
    previous = None
    while previous != cut:
        previous = cut
        cut = re.sub(r"\n\s*\d+[.)]\s*$", "", cut).strip()
        if cut.endswith(":"):
            ends = [m.end() for m in _SENTENCE_END.finditer(cut)]
            cut = cut[: ends[-1]].strip() if ends else ""
    return cut if len(cut) >= min_chars else None
