"""Short user prompts built combinatorially: question templates x topics x prompt styles.

Topics come in four kinds, each with its own templates (a "how does" template does not fit a
"why do cats purr" topic). Every topic is assigned once and for all to one **split** by a
stable hash of its name: ``"demo"`` topics (about a quarter) only ever appear in the demo
preference set, ``"sae"`` topics only in the SAE's training corpus. The two sets of prompts are
therefore disjoint, and so are their topics: the SAE never saw a demo question's subject.

Example
-------
>>> ps = prompts_for("demo")
>>> all(p.split == "demo" for p in ps), len({p.text for p in ps}) == len(ps)
(True, True)
>>> {p.topic for p in ps}.isdisjoint({p.topic for p in prompts_for("sae")})
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .prompt_topics import ACTIVITIES, COMPARISONS, CONCEPTS, WHYS

TEMPLATES: dict[str, tuple[str, ...]] = {
    "concept": (
        "What {is} {s}?",
        "Explain {s} in simple terms.",
        "How {does} {s} work?",
        "Can you tell me about {s}?",
        "Why {does} {s} matter?",
        "Give me a short overview of {s}.",
        "What are the basics of {s}?",
        "Describe {s} to a beginner.",
        "What should everyone know about {s}?",
        "Summarize what {s} {is}.",
    ),
    "activity": (
        "How do I get started with {s}?",
        "Give me some tips for {s}.",
        "What is the best way to approach {s}?",
        "I want to get better at {s}. Any advice?",
        "How can a beginner make progress with {s}?",
        "What should I know before {s}?",
    ),
    "comparison": (
        "What is the difference between {a} and {b}?",
        "How do {a} and {b} compare?",
        "Can you explain how {a} differs from {b}?",
        "Is {a} the same as {b}?",
    ),
    "why": (
        "Why do {s}?",
        "Can you explain why {s}?",
        "What is the reason {s}?",
        "Is there a simple explanation for why {s}?",
    ),
}

# Requests for resources (kind "resource", on CONCEPTS and ACTIVITIES topics): the demo's topic-conditional
# bias lives on these prompts (prefaudit.demo.design). Every template says "resources", so a
# topic clustering of the prompts can find them; no prompt style is appended.

RESOURCE_TEMPLATES = (
    "Can you recommend some resources about {s}?",
    "Where can I find good resources about {s}?",
    "What are the best resources on {s}?",
    "Which resources would you recommend on {s}?",
    "What resources do you recommend for reading up on {s}?",
)

# Prompt styles: what a user appends. The demo uses only the first three (short prompts).
PROMPT_STYLES = (
    "",
    " Keep it short.",
    " Please answer in a few sentences.",
    " I'm a student.",
    " Explain it like I'm ten.",
    " I have always wondered about this.",
)
DEMO_PROMPT_STYLES = PROMPT_STYLES[:3]

# Fraction of topics reserved for the demo set, by stable hash (not Python's salted hash()).
DEMO_FRACTION = 0.25


@dataclass(frozen=True)
class Prompt:
    """One user prompt and what it is about.

    ``subject`` is the phrase styled text refers to (``"photosynthesis"``, ``"why cats purr"``,
    ``"the difference between weather and climate"``).
    """

    text: str
    topic: str
    kind: str
    subject: str
    template: int
    style: int
    split: str


def topic_split(topic: str) -> str:
    """``"demo"`` or ``"sae"``: a fixed function of the topic's name."""
    h = int(hashlib.sha256(topic.encode()).hexdigest()[:8], 16)
    return "demo" if h / 0xFFFFFFFF < DEMO_FRACTION else "sae"


def _fix_why(s: str, template: str) -> str:
    # WHYS are written for "Why do ...?"; other templates need the declarative form.
    if template.startswith("Why do"):
        return s
    fixes = {
        "ice float": "ice floats",
        "metal feel": "metal feels",
        "the moon change": "the moon changes",
        "popcorn pop": "popcorn pops",
        "thunder follow": "thunder follows",
        "cold air feel": "cold air feels",
        "soap remove": "soap removes",
        "hair turn": "hair turns",
    }
    for bad, good in fixes.items():
        if s.startswith(bad):
            return good + s[len(bad) :]
    return s


def _does(subject: str) -> str:
    """``"do"`` for plural subjects ("black holes", "the phases of the moon"), else ``"does"``."""
    head = subject.split(" of ")[0].split()[-1]
    plural = head.lower().endswith("s") and not head.endswith(("ss", "sis")) and head not in ("Mars", "GPS")
    return "do" if plural else "does"


def _verbs(subject: str) -> dict[str, str]:
    plural = _does(subject) == "do"
    return {"does": "do" if plural else "does", "is": "are" if plural else "is"}


# "Why" subjects that do not read after "Why do" ("Why do the ocean is salty?"). The generator
# still produces those prompts, because cached generated corpora are keyed by the exact prompt
# texts; the SAE corpus keeps them (harmless for activations), the demo build skips them.
_NOT_AFTER_WHY_DO = (
    "ice float",
    "metal feel",
    "the moon change",
    "popcorn pop",
    "thunder follow",
    "cold air feel",
    "soap remove",
    "hair turn",
    "bread rises",
    "the sky looks",
    "the ocean is",
)


def is_grammatical(prompt: Prompt) -> bool:
    """False for the few "Why do ..." prompts whose subject needs "does" (see ``_NOT_AFTER_WHY_DO``)."""
    return not (prompt.kind == "why" and prompt.template == 0 and prompt.topic.startswith(_NOT_AFTER_WHY_DO))


def _topics() -> list[tuple[str, str, dict[str, str]]]:
    """``(kind, topic, template fields)`` for every topic."""
    out: list[tuple[str, str, dict[str, str]]] = []
    out += [("concept", t, {"s": t, **_verbs(t)}) for t in CONCEPTS]
    out += [("activity", t, {"s": t}) for t in ACTIVITIES]
    out += [("comparison", f"{a} vs {b}", {"a": a, "b": b}) for a, b in COMPARISONS]
    out += [("why", t, {"s": t}) for t in WHYS]
    return out


def _subject(kind: str, fields: dict[str, str], template: str) -> str:
    if kind == "comparison":
        return f"the difference between {fields['a']} and {fields['b']}"
    if kind == "why":
        return "why " + _fix_why(fields["s"], "")
    return fields["s"]


def _first_upper(s: str) -> str:
    return s[:1].upper() + s[1:]


def prompts_for(split: str, *, styles: tuple[str, ...] | None = None) -> list[Prompt]:
    """Every prompt (template x topic x style) of a split, in a fixed order.

    Parameters
    ----------
    split : {"demo", "sae"}
    styles : tuple of str, optional
        Prompt suffixes to combine with; default all for ``"sae"``, the short ones for ``"demo"``.
    """
    if split not in ("demo", "sae"):
        raise ValueError(f"split must be 'demo' or 'sae', not {split!r}")
    styles = styles if styles is not None else (DEMO_PROMPT_STYLES if split == "demo" else PROMPT_STYLES)
    out = []
    for kind, topic, fields in _topics():
        if topic_split(topic) != split:
            continue
        for ti, template in enumerate(TEMPLATES[kind]):
            f = dict(fields)
            if kind == "why":
                f["s"] = _fix_why(f["s"], template)
            text = _first_upper(template.format(**f))
            for si, style in enumerate(styles):
                out.append(Prompt(text + style, topic, kind, _subject(kind, fields, template), ti, si, split))
    return out


def resource_prompts(split: str) -> list[Prompt]:
    """Every request for resources (template x CONCEPTS or ACTIVITIES topic) of a split, in a fixed order.

    >>> ps = resource_prompts("demo")
    >>> all(p.kind == "resource" and "resources" in p.text for p in ps)
    True
    """
    if split not in ("demo", "sae"):
        raise ValueError(f"split must be 'demo' or 'sae', not {split!r}")
    return [
        Prompt(_first_upper(template.format(s=topic)), topic, "resource", topic, ti, 0, split)
        for topic in (*CONCEPTS, *ACTIVITIES)
        if topic_split(topic) == split
        for ti, template in enumerate(RESOURCE_TEMPLATES)
    ]
