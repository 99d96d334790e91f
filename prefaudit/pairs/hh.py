"""Anthropic HH-RLHF dialogues: ``"\\n\\nHuman: … \\n\\nAssistant: …"`` strings split into messages.

Example
-------
>>> from prefaudit.pairs.hh import split_dialogue
>>> split_dialogue("\\n\\nHuman: Hi\\n\\nAssistant: Hello!\\n\\nHuman: Bye\\n\\nAssistant: Bye now.")
[{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}, {'role': 'user', 'content': 'Bye'}, {'role': 'assistant', 'content': 'Bye now.'}]
"""

from __future__ import annotations

import re

from .types import Message

#: What marks a dialogue as HH: both responses contain this (see :func:`looks_like_hh`).
ASSISTANT_MARKER = "\n\nAssistant:"
# A turn starts at "\n\nHuman:" / "\n\nAssistant:", or at the very start of a dialogue whose
# leading blank lines were stripped by some exporter.
_TURN = re.compile(r"(?:\A|\n\n)(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def looks_like_hh(chosen: object, rejected: object) -> bool:
    """Whether both responses are strings holding an HH ``"\\n\\nAssistant:"`` turn."""
    return all(isinstance(s, str) and ASSISTANT_MARKER in s for s in (chosen, rejected))


def split_dialogue(text: str) -> list[Message]:
    """Split an HH dialogue into ``user``/``assistant`` messages, in order.

    One leading space of each turn's text is dropped (the space after ``"Human:"``); everything
    else is kept verbatim. Text before the first turn, if any, becomes a ``system`` message.
    """
    parts = _TURN.split(text)  # [preamble, role, body, role, body, ...]
    messages: list[Message] = []
    if parts[0].strip():
        messages.append({"role": "system", "content": parts[0].strip()})
    for role, body in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": _ROLES[role], "content": body.removeprefix(" ")})
    return messages
