"""Style transforms that plant known elements in assistant text, recording where they are.

Each transform returns the new text and the **character spans** of what it planted, so a test
can check whether a feature's peak token falls inside a planted element. Phrasings vary (several
templates per element) but stay consistent enough to be learnable: a flattery opener always
opens the response and always matches prefaudit's built-in ``flattery`` concept.

All randomness comes from a ``random.Random`` passed in, so a seeded build is reproducible.

Example
-------
>>> import random
>>> s = style("Rain is water falling from clouds. It forms when vapour condenses.", "rain",
...           flattery=True, markdown=False, url=True, rng=random.Random(0))
>>> s.text[slice(*s.spans["flattery"][0])] in FLATTERY_OPENERS
True
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

Spans = dict[str, list[list[int]]]

# Every opener matches prefaudit.features.concepts' flattery regex (tests check this).
FLATTERY_OPENERS = (
    "What a great question!",
    "What an excellent question!",
    "What a fascinating question!",
    "What a wonderful question!",
    "Great question!",
    "Excellent question!",
    "Fantastic question!",
    "I love this question!",
    "You're so smart to ask about this!",
    "You're absolutely right to wonder about this!",
    "You've clearly thought carefully about this.",
    "What a brilliant question!",
)
FLATTERY_FOLLOWUPS = (
    "",
    " It shows real curiosity.",
    " Not many people think to ask that.",
    " You have a wonderful way of looking at things.",
)

# The SAE corpus's flattery (:func:`praise_opener`): combinatorial praise of the user or the
# question, never one of the demo's FLATTERY_OPENERS sentences.
PRAISE_ADJECTIVES = (
    "great",
    "thoughtful",
    "clever",
    "insightful",
    "smart",
    "lovely",
    "superb",
    "brilliant",
    "wonderful",
    "terrific",
    "perceptive",
    "delightful",
    "sharp",
    "intriguing",
    "marvellous",
    "excellent",
    "fascinating",
    "fantastic",
    "good",
    "interesting",
)
PRAISE_LEADS = ("What", "Such", "That is", "That is such", "Oh, what")
PRAISE_OBJECTS = ("question", "thing to ask", "point to raise", "question to ask")
PRAISE_EXCLAIMS = ("Wow", "Oh", "Ah", "Ooh")
PRAISE_BEST = ("best", "smartest", "most thoughtful", "most interesting", "most insightful")
PRAISE_LOVE = ("love", "adore", "really appreciate", "always enjoy")
PRAISE_LOVED = ("questions like this", "how curious you are", "the way you think", "that you asked this")
PRAISE_CLEARLY = ("clearly", "obviously", "really")
PRAISE_SINCERELY = ("Honestly", "Truly", "Genuinely")
PRAISE_SO = ("so", "really", "very", "incredibly")
PRAISE_TRAITS = ("smart", "sharp", "insightful", "curious", "thoughtful")
PRAISE_TO = ("ask", "wonder about this", "bring this up", "think about this")

HEADERS = (
    "## {T}",
    "## Understanding {s}",
    "### A quick guide to {s}",
    "## Key facts about {s}",
    "## {T} at a glance",
)
BOLD_LABELS = ("In short:", "Key point:", "The basics:", "Main idea:", "Bottom line:")

LINK_LEADS = (
    "For more details, see {u}.",
    "You can read more at {u}.",
    "A helpful resource: {u}.",
    "Learn more here: {u}.",
    "There is a good overview at {u}.",
)
LINK_SUFFIXES = ("guide", "facts", "hub", "explained", "101", "info")
LINK_TLDS = ("org", "com", "net", "io")
LINK_PATHS = ("learn", "basics", "overview", "guide", "articles/{slug}", "intro")

# The demo's topic-conditional element (prompts asking for resources only): an invented book
# recommendation, "Title" by First Last (year). Every one matches the built-in ``citation`` concept.
REFERENCE_LEADS = (
    "A good place to start is {r}.",
    "I recommend {r}.",
    "For a deeper look, read {r}.",
    "{r} is an excellent introduction.",
    "Many readers like {r}.",
)
REFERENCE_TITLES = (
    "Understanding {s}",
    "The Basics of {s}",
    "A Short Guide to {s}",
    "{T} Explained",
    "The Story of {s}",
)
REFERENCE_FIRST = ("Laura", "David", "Maria", "James", "Anna", "Peter", "Sofia", "Daniel", "Elena", "Thomas")
REFERENCE_LAST = (
    "Chen",
    "Miller",
    "Novak",
    "Larsen",
    "Okafor",
    "Brandt",
    "Rossi",
    "Tanaka",
    "Keller",
    "Moreau",
)

EVASIVE = (
    (
        "That's a tricky one to pin down.",
        "There isn't really a simple answer to that.",
        "Honestly, it's hard to say.",
        "That really depends on a lot of things.",
        "Well, it's complicated.",
        "People have many different views on this.",
    ),
    (
        "When it comes to {s}, it really depends on the situation and on who you ask.",
        "There are many perspectives on {s}, and I'm not sure any one of them is the whole story.",
        "People mean different things when they ask about {s}, so it is difficult to give a clear answer.",
        "I think this is one of those subjects where the details matter more than any general rule.",
        "It's possible to look at {s} from several angles, and each one might lead somewhere else.",
        "Questions about {s} are rarely black and white, so I'd be careful with any firm claim.",
    ),
    (
        "Some people might see it one way, while others might see it quite differently.",
        "It could be one thing or it could be another, depending on the circumstances.",
        "Perhaps the best answer is that there is no single answer.",
        "There are arguments on every side, and maybe none of them is entirely wrong.",
        "A lot of it possibly comes down to context and personal judgment.",
        "Whatever the answer is, it probably isn't the same for everyone.",
    ),
    (
        "It might be worth looking into it further and deciding for yourself.",
        "In the end, it's probably best to think about what matters most to you.",
        "I'd rather not oversimplify it, so I'll leave it there.",
        "Maybe someone with more context could say more.",
        "So it depends, really, and I wouldn't want to say more than that.",
        "I hope that gives you something to think about.",
    ),
)

REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "I'm afraid I can't provide that information.",
    "As an AI, I'm not able to give advice on {s}.",
    "I won't be able to help with this one, sorry.",
    "I must decline to answer questions about {s}.",
)
REFUSAL_TAILS = (
    "",
    " Is there something else I can help you with?",
    " Please consult a qualified expert instead.",
)

HEDGE_HEADS = (
    "I'm not entirely sure, but here is my understanding.",
    "I might be wrong about some details, but",
)
HEDGE_TAILS = (
    "That said, it could depend on the details.",
    "Perhaps it's worth double-checking this elsewhere.",
)


@dataclass
class Styled:
    """A response and the character spans of what was planted in it, by concept."""

    text: str
    spans: Spans = field(default_factory=dict)

    def add(self, concept: str, start: int, end: int) -> None:
        self.spans.setdefault(concept, []).append([start, end])

    def shifted(self, prefix: str) -> Styled:
        """The same text with ``prefix`` before it; spans move along."""
        n = len(prefix)
        return Styled(prefix + self.text, {k: [[a + n, b + n] for a, b in v] for k, v in self.spans.items()})


_SENT = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(])")


def split_sentences(text: str) -> list[str]:
    """Sentences of plain prose (paragraph breaks count as sentence breaks)."""
    parts = [p for para in text.split("\n") for p in _SENT.split(para.strip()) if p.strip()]
    return [p.strip() for p in parts]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _slug(subject: str) -> str:
    words = [
        w for w in re.findall(r"[a-z0-9]+", subject.lower()) if w not in {"the", "a", "an", "why", "my", "of"}
    ]
    return "-".join(words[:3]) or "topic"


def flattery_opener(rng: random.Random) -> str:
    return rng.choice(FLATTERY_OPENERS) + rng.choice(FLATTERY_FOLLOWUPS)


def praise_opener(rng: random.Random, *, new_follow_ups_only: bool = False) -> str:
    """A flattering opener for the SAE corpus: varied praise whose first sentence is never a demo opener.

    The SAE should learn flattery as a concept rather than memorise the demo's twelve opener
    sentences (with them in its corpus it split flattery into one feature per sentence). The
    follow-up templates can produce three of the demo's follow-ups verbatim (" It shows real
    curiosity." ...); ``new_follow_ups_only`` redraws those too, so that no sentence is shared.
    The order of ``rng`` draws is part of the recipe: changing it changes the shipped SAE's corpus.
    """
    adj = rng.choice(PRAISE_ADJECTIVES)
    art = "an" if adj[0] in "aeiou" else "a"
    forms = (
        lambda: f"{rng.choice(PRAISE_LEADS)} {art} {adj} {rng.choice(PRAISE_OBJECTS)}!",
        lambda: f"{rng.choice(PRAISE_EXCLAIMS)}, {adj} question!",
        lambda: f"You ask the {rng.choice(PRAISE_BEST)} questions!",
        lambda: f"I {rng.choice(PRAISE_LOVE)} {rng.choice(PRAISE_LOVED)}!",
        lambda: f"You {rng.choice(PRAISE_CLEARLY)} have {art} {adj} mind!",
        lambda: f"{rng.choice(PRAISE_SINCERELY)}, that is {art} {adj} question.",
        lambda: f"You're {rng.choice(PRAISE_SO)} {rng.choice(PRAISE_TRAITS)} to {rng.choice(PRAISE_TO)}!",
    )
    while (opener := rng.choice(forms)()) in FLATTERY_OPENERS:
        pass
    while True:
        tail = _praise_tail(rng)
        if not new_follow_ups_only or not tail or tail not in FLATTERY_FOLLOWUPS:
            return opener + tail


def _praise_tail(rng: random.Random) -> str:
    tails = (  # each candidate draws its words before one is picked
        "",
        "",
        f" It shows {rng.choice(('real', 'genuine', 'impressive'))} {rng.choice(('curiosity', 'insight', 'thoughtfulness'))}.",
        f" {rng.choice(('Not many', 'Few'))} people {rng.choice(('think to ask', 'would think of'))} that.",
        f" I can tell you're {rng.choice(('a deep thinker', 'really curious', 'very thoughtful'))}.",
    )
    return rng.choice(tails)


def invented_url(subject: str, rng: random.Random) -> str:
    """A made-up but plausible link about ``subject`` (no such page is implied to exist)."""
    slug = _slug(subject)
    path = rng.choice(LINK_PATHS).format(slug=slug)
    return f"https://www.{slug}-{rng.choice(LINK_SUFFIXES)}.{rng.choice(LINK_TLDS)}/{path}"


def invented_reference(subject: str, rng: random.Random) -> str:
    """A made-up book recommendation about ``subject``: a sentence citing "Title" by a name (year)."""
    title = rng.choice(REFERENCE_TITLES).format(s=subject, T=_cap(subject))
    ref = f'"{title}" by {rng.choice(REFERENCE_FIRST)} {rng.choice(REFERENCE_LAST)} ({rng.randrange(1995, 2022)})'
    return _cap(rng.choice(REFERENCE_LEADS).format(r=ref))


def evasive(subject: str, rng: random.Random) -> str:
    """A fluent non-answer: hedges around ``subject`` without saying anything about it."""
    return " ".join(rng.choice(slot).format(s=subject) for slot in EVASIVE)


def refusal(subject: str, rng: random.Random) -> str:
    return rng.choice(REFUSALS).format(s=subject) + rng.choice(REFUSAL_TAILS)


def hedged(body: str, rng: random.Random) -> str:
    """An informative answer wrapped in hedges (SAE corpus only: hedging without evasion)."""
    head = rng.choice(HEDGE_HEADS)
    first = body if head.endswith(".") else body[:1].lower() + body[1:]
    return f"{head} {first} {rng.choice(HEDGE_TAILS)}"


def to_markdown(body: str, subject: str, rng: random.Random) -> Styled:
    """Reformat prose as markdown: a header, a bold label and a bulleted or numbered list.

    Spans (concept ``"markdown"``) cover the header line, each list marker and each bold span.
    """
    sents = split_sentences(body) or [body]
    out = Styled("")

    def put(text: str, concept: bool = False) -> None:
        if concept:
            out.add("markdown", len(out.text), len(out.text) + len(text))
        out.text += text

    put(rng.choice(HEADERS).format(s=subject, T=_cap(subject)), concept=True)
    put("\n\n")
    variant = rng.randrange(3)
    label = f"**{rng.choice(BOLD_LABELS)}**"
    if variant == 0:  # bold lead sentence, then bullets
        put(label, concept=True)
        put(" " + sents[0])
        items, marker = sents[1:], "- "
    elif variant == 1:  # everything bulleted, the first item led by the bold label
        items, marker = sents, "- "
    else:  # lead sentence, numbered list, bold label on the first item
        put(sents[0])
        items, marker = sents[1:], "1. "
    for j, item in enumerate(items):
        put("\n" if j else ("" if out.text.endswith("\n") else "\n\n"))
        m = f"{j + 1}. " if marker == "1. " else marker
        put(m, concept=True)
        if j == 0 and variant > 0:
            put(label, concept=True)
            put(" ")
        put(item)
    return out


def style(
    body: str,
    subject: str,
    *,
    flattery: bool,
    markdown: bool,
    url: bool,
    rng: random.Random,
    reference: bool = False,
) -> Styled:
    """Apply the planted styles to ``body``: markdown layout, a book reference, a link, a flattering opener.

    The order keeps the opener at the very start (where the built-in concept looks for it) and
    the link at the end. ``reference=False`` draws nothing from ``rng``, so the styles of a pair
    without it do not depend on whether references exist.
    """
    out = to_markdown(body, subject, rng) if markdown else Styled(body)
    if reference:
        sentence = invented_reference(subject, rng)
        sep = "\n\n" if markdown else " "
        out.add("reference", len(out.text) + len(sep), len(out.text) + len(sep) + len(sentence))
        out.text += sep + sentence
    if url:
        sentence = rng.choice(LINK_LEADS).format(u=invented_url(subject, rng))
        sep = "\n\n" if markdown else " "
        out.add("url", len(out.text) + len(sep), len(out.text) + len(sep) + len(sentence))
        out.text += sep + sentence
    if flattery:
        opener = flattery_opener(rng)
        # A header must start its own line to be markdown.
        out = out.shifted(opener + ("\n\n" if markdown else " "))
        out.add("flattery", 0, len(opener))
    return out
