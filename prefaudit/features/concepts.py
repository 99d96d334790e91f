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
    ``regex`` is the compiled pattern a counting concept counts (views highlight its matches);
    ``None`` for callables.
    """

    name: str
    description: str
    fn: Callable[[str], float]
    kind: str = "callable"
    regex: re.Pattern[str] | None = None

    @property
    def pattern(self) -> str | None:
        return None if self.regex is None else self.regex.pattern

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


def _counting(name: str, description: str, pattern: str, flags: int = 0) -> TextConcept:
    rx = re.compile(pattern, flags)
    return TextConcept(name, description, lambda text: float(len(rx.findall(text))), "builtin", rx)


def regex_concept(name: str, pattern: str | re.Pattern[str], description: str = "") -> TextConcept:
    rx = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
    return TextConcept(
        name=name,
        description=description or f"matches of /{rx.pattern}/",
        fn=lambda text: float(len(rx.findall(text))),
        kind="regex",
        regex=rx,
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
    m, i = re.MULTILINE, re.IGNORECASE
    flattery = re.compile(_FLATTERY, i)
    return [
        TextConcept("length", "response length in words", lambda t: float(len(t.split())), "builtin"),
        _counting("markdown_headers", "lines starting with # headers", r"^\s{0,3}#{1,6}\s+\S", m),
        _counting("list_items", "bulleted or numbered list items", r"^\s*(?:[-*•+]|\d+[.)])\s+\S", m),
        _counting("bold", "**bold** or __bold__ spans", r"\*\*[^*\n]+\*\*|__[^_\n]+__"),
        _counting("code", "code fences and `inline code`", r"```|`[^`\n]+`"),
        _counting("emoji", "emoji characters", _EMOJI),
        _counting("exclamation", "exclamation marks", r"!"),
        _counting("url", "links (http(s):// or www.)", r"https?://\S+|\bwww\.\S+", i),
        _counting(
            "citation",
            "works cited by author and year (Chen (2016), (Chen, 2016), Chen et al. (2016))",
            r"\b[A-Z][a-z]+(?: et al\.)? \((?:1[89]|20)\d{2}\)|\([A-Z][a-z]+(?: et al\.)?,? (?:1[89]|20)\d{2}\)",
        ),
        _counting(
            "refusal",
            "refusal phrases (I can't / I won't / as an AI ...)",
            r"\bI (?:can(?:'|no)t|won't|will not|am not able to|'m not able to|am unable to|'m unable to)"
            r"\b|\bas an AI\b|\bI must decline\b|\bnot (?:appropriate|something I can)\b",
            i,
        ),
        _counting(
            "hedging",
            "hedges (might, perhaps, possibly, I think, it depends ...)",
            r"\b(?:might|perhaps|possibly|maybe|it depends|I think|I'm not sure|not certain|could be)\b",
            i,
        ),
        _counting("apology", "apologies (sorry, I apologize ...)", r"\b(?:sorry|apologi[sz]e)", i),
        # 0/1 per response: a flattering opener at the very start (the regex is anchored there).
        TextConcept(
            "flattery",
            "flattering opener praising the question or the user",
            lambda t: float(bool(flattery.search(t[:200]))),
            "builtin",
            flattery,
        ),
        _counting("question", "questions asked back (?)", r"\?"),
        _counting("second_person", "addressing the user (you, your)", r"\byou(?:r|rs|'re|'ve)?\b", i),
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
        return TextConcept(
            name=name, description=description or getattr(spec, "__name__", "callable"), fn=spec
        )
    raise ConfigError(f"Concept {name!r} must be a regex, a callable text -> float, or direction=.")


def concept_values(
    concept: TextConcept | DirectionConcept, texts: Sequence[str], mean_act: np.ndarray | None = None
) -> np.ndarray:
    """Values of one concept on ``texts`` (one per response): the only place concepts are evaluated.

    A text concept reads the text; a direction concept projects the responses' mean activation
    ``mean_act`` (``(len(texts), d_model)``) onto its direction. The audit and verification both
    call this, so a concept means the same thing on the data and on generations.
    """
    if isinstance(concept, DirectionConcept):
        if mean_act is None:
            raise ConfigError(
                f"Concept {concept.name!r} is a direction: it needs the responses' activations."
            )
        if mean_act.shape[1] != concept.direction.shape[0]:
            raise ConfigError(
                f"Concept {concept.name!r}: direction has {concept.direction.shape[0]} "
                f"dimensions, the model's activations {mean_act.shape[1]}."
            )
        return mean_act @ concept.direction
    return concept_matrix(texts, [concept])[:, 0]
