"""Text concepts: features computed from the response text, tested like SAE features.

Built-in concepts capture the usual suspects in preference data (length, markdown, flattery,
refusal, ...). Users add their own with a regex (counted matches), a callable ``str -> float``, or
a direction in activation space (see :class:`DirectionConcept`).

Example
-------
>>> from prefaudit.features.concepts import builtin_concepts, concept_matrix
>>> concepts = builtin_concepts()
>>> m = concept_matrix(["**Great question!** See https://x.org"], concepts)
>>> float(m[0, [c.name for c in concepts].index("url")])
1.0
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class TextConcept:
    """A named scalar function of a response's text.

    ``kind`` is ``"regex"`` (value = number of matches), ``"callable"`` or ``"builtin"``.
    """

    name: str
    description: str
    fn: Callable[[str], float]
    kind: str = "callable"
    pattern: str | None = None

    def __call__(self, text: str) -> float:
        return float(self.fn(text))


@dataclass(frozen=True)
class DirectionConcept:
    """Projection of a response's mean layer activation onto a direction (unit-normalised).

    Mean pooling is linear, so the value is exact from the mean activation stored at encode time
    and can be added after encoding without re-running the model.
    """

    name: str
    description: str
    direction: np.ndarray  # shape (d_model,)
    kind: str = "direction"


def _count(pattern: str, flags: int = 0) -> Callable[[str], float]:
    rx = re.compile(pattern, flags)
    return lambda text: float(len(rx.findall(text)))


def regex_concept(name: str, pattern: str | re.Pattern[str], description: str = "") -> TextConcept:
    rx = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
    return TextConcept(
        name=name,
        description=description or f"matches of /{rx.pattern}/",
        fn=lambda text: float(len(rx.findall(text))),
        kind="regex",
        pattern=rx.pattern,
    )


def check_concept_name(name: str, taken: Sequence[str]) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or name.isdigit():
        raise ConfigError(
            f"Concept name {name!r} must start with a letter or underscore and contain only letters, "
            "digits, '_' or '-'."
        )
    if name in taken:
        raise ConfigError(f"A concept named {name!r} already exists.")


_EMOJI = (
    "[\U0001f300-\U0001faff\U00002600-\U000027bf\U0001f000-\U0001f2ff\U0001f900-\U0001f9ff\u2b50\u2705\u274c]"
)
_FLATTERY = (
    r"^\W*(?:what an? (?:great|excellent|wonderful|fantastic|brilliant|insightful|thoughtful|fascinating)"
    r"|(?:great|excellent|wonderful|fantastic|brilliant|insightful|thoughtful|fascinating|amazing) question"
    r"|you(?:'re| are) (?:so |absolutely |clearly )?(?:smart|right|brilliant|clever|insightful|thoughtful)"
    r"|i love (?:this|your|that) question|you(?:'ve| have) (?:clearly|obviously|really))"
)


def builtin_concepts() -> list[TextConcept]:
    """The default text concepts (names are stable: they appear in tables and saved sessions)."""
    b = "builtin"
    m, i = re.MULTILINE, re.IGNORECASE
    return [
        TextConcept("length", "response length in words", lambda t: float(len(t.split())), b),
        TextConcept("markdown_headers", "lines starting with # headers", _count(r"^\s{0,3}#{1,6}\s+\S", m), b),
        TextConcept("list_items", "bulleted or numbered list items", _count(r"^\s*(?:[-*•+]|\d+[.)])\s+\S", m), b),
        TextConcept("bold", "**bold** or __bold__ spans", _count(r"\*\*[^*\n]+\*\*|__[^_\n]+__"), b),
        TextConcept("code", "code fences and `inline code`", _count(r"```|`[^`\n]+`"), b),
        TextConcept("emoji", "emoji characters", _count(_EMOJI), b),
        TextConcept("exclamation", "exclamation marks", _count(r"!"), b),
        TextConcept("url", "links (http(s):// or www.)", _count(r"https?://\S+|\bwww\.\S+", i), b),
        TextConcept(
            "refusal",
            "refusal phrases (I can't / I won't / as an AI ...)",
            _count(
                r"\bI (?:can(?:'|no)t|won't|will not|am not able to|'m not able to|am unable to|'m unable to)"
                r"\b|\bas an AI\b|\bI must decline\b|\bnot (?:appropriate|something I can)\b",
                i,
            ),
            b,
        ),
        TextConcept(
            "hedging",
            "hedges (might, perhaps, possibly, I think, it depends ...)",
            _count(r"\b(?:might|perhaps|possibly|maybe|it depends|I think|I'm not sure|not certain|could be)\b", i),
            b,
        ),
        TextConcept("apology", "apologies (sorry, I apologize ...)", _count(r"\b(?:sorry|apologi[sz]e)", i), b),
        TextConcept(
            "flattery",
            "flattering opener praising the question or the user",
            lambda t: float(bool(re.search(_FLATTERY, t[:200], i))),
            b,
        ),
        TextConcept("question", "questions asked back (?)", _count(r"\?"), b),
        TextConcept("second_person", "addressing the user (you, your)", _count(r"\byou(?:r|rs|'re|'ve)?\b", i), b),
    ]


def concept_matrix(texts: Sequence[str], concepts: Sequence[TextConcept]) -> np.ndarray:
    """Values ``(len(texts), len(concepts))`` as float64; a failing callable names the concept and row."""
    out = np.zeros((len(texts), len(concepts)), dtype=np.float64)
    for j, concept in enumerate(concepts):
        for i, text in enumerate(texts):
            try:
                value = concept(text)
            except Exception as err:
                raise ConfigError(f"Concept {concept.name!r} failed on response row {i}: {err}") from err
            if not np.isfinite(value):
                raise ConfigError(f"Concept {concept.name!r} returned {value!r} for response row {i}.")
            out[i, j] = value
    return out


def make_concept(name: str, spec: Any, description: str = "") -> TextConcept:
    """A :class:`TextConcept` from a regex string/pattern or a callable."""
    if isinstance(spec, (str, re.Pattern)):
        try:
            return regex_concept(name, spec, description)
        except re.error as err:
            raise ConfigError(f"Concept {name!r}: invalid regular expression {spec!r}: {err}") from err
    if callable(spec):
        return TextConcept(name=name, description=description or getattr(spec, "__name__", "callable"), fn=spec)
    raise ConfigError(f"Concept {name!r} must be a regex, a callable text -> float, or direction=.")
