"""Generated text, cached: the model's own answers, and the SAE's training corpus built from them.

Generation is the slow step (minutes on 2 CPU cores), so every finished batch is appended to a
JSON-lines file under ``<cache root>/corpus/`` (``~/.cache/prefaudit`` unless
``$PREFAUDIT_CACHE`` is set), keyed by everything that determines it: the prompts, the sampling
recipe and the model's fingerprint. An interrupted run resumes at the first missing batch;
nothing is written into the repository.

The SAE corpus (:func:`sae_corpus`) is the model's answers to prompts of the ``"sae"`` split
(:mod:`prefaudit.build.prompts`), each read plain, and most of them a second time in a styled
variant (flattery opener, markdown, invented link, hedges, an evasive non-answer or a refusal;
:mod:`prefaudit.build.styles`) so that these concepts exist in the SAE's training distribution.
The corpus's flattery is varied praise (:func:`~prefaudit.build.styles.praise_opener`), not the
demo set's opener sentences: with those twelve sentences in its corpus the SAE learnt one
feature per sentence and no feature for flattery as such.

Example
-------
>>> items, seconds = sae_corpus(backbone, CorpusRecipe(n_prompts=40))   # doctest: +SKIP
>>> items[0].variant, items[0].heldout                         # doctest: +SKIP
('plain', False)
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..demo.design import DEMO_SAMPLING
from ..errors import ConfigError
from ..generation import SamplingConfig, generate_texts
from .prompts import prompts_for
from .styles import evasive, hedged, praise_opener, refusal, style
from .trim import trim_response

# Styled second readings and their shares (the rest of the answers are read plain only).
STYLE_MIX: dict[str, float] = {
    "flattery": 0.10,
    "markdown": 0.10,
    "url": 0.10,
    "combo": 0.10,  # two or three of flattery / markdown / url together
    "evasive": 0.08,
    "hedged": 0.07,
    "refusal": 0.05,
}


FLATTERY_RECIPES = ("praise", "praise-strict", "demo")


@dataclass(frozen=True)
class CorpusRecipe:
    """What the SAE's training text is made of (recorded in the SAE's metadata)."""

    n_prompts: int = 1600
    heldout_fraction: float = 0.05
    seed: int = 0
    max_chars: int = 520
    style_mix: dict[str, float] = field(default_factory=lambda: dict(STYLE_MIX))
    # "praise": openers from styles.praise_opener on their own random stream; "praise-strict": the
    # same, sharing no sentence with the demo's openers; "demo": the demo's own opener sentences
    # (the first shipped SAE's corpus). The last two reproduce the model card's ablation.
    flattery: str = "praise"
    praise_seed: int = 1234
    generation: SamplingConfig = DEMO_SAMPLING

    def __post_init__(self) -> None:
        if self.flattery not in FLATTERY_RECIPES:
            raise ValueError(f"flattery={self.flattery!r}; choose one of {', '.join(FLATTERY_RECIPES)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["generation"] = self.generation.cache_dict()
        return d


@dataclass(frozen=True)
class CorpusItem:
    """One response to read: its prompt, text, how it was made, and whether it is held out."""

    prompt: str
    response: str
    variant: str
    heldout: bool
    topic: str


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_generate(
    backbone: Any, prompts: Sequence[str], cfg: SamplingConfig, name: str, *, progress: bool = True
) -> tuple[list[str], float | None]:
    """The model's answers to single-turn ``prompts``, resumable and cached on disk (module docstring).

    :func:`~prefaudit.generation.generate_texts` on ``backbone.model`` (texts not stripped), keyed
    by ``cfg.cache_dict()``. Returns the texts and the seconds generation took when it ran (summed
    over the cached batches, so a fully cached call still reports it; ``None`` for caches without
    timings).
    """
    from ..default_model import cache_root

    if cfg.samples_per_prompt != 1:  # not part of the key: each prompt is answered once
        raise ConfigError(
            f"cached_generate answers each prompt once; got samples_per_prompt={cfg.samples_per_prompt}"
        )
    path = (
        cache_root()
        / "corpus"
        / f"{name}-{_key(list(prompts), cfg.cache_dict(), backbone.fingerprint())}.jsonl"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    texts: list[str | None] = [None] * len(prompts)
    done: set[int] = set()
    seconds: dict[int, float | None] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: that batch reruns
                continue
            done.add(rec["b"])
            seconds[rec["b"]] = rec.get("s")
            for i, t in zip(rec["i"], rec["text"], strict=True):
                texts[i] = t
    n_batches = (len(prompts) + cfg.batch_size - 1) // cfg.batch_size
    t0 = last = time.perf_counter()
    todo = n_batches - len(done)

    def save(b: int, idx: list[int], batch: list[str]) -> None:
        nonlocal last
        now = time.perf_counter()
        seconds[b], last = round(now - last, 2), now
        with path.open("a") as f:
            f.write(json.dumps({"b": b, "i": idx, "text": batch, "s": seconds[b]}) + "\n")
        for i, t in zip(idx, batch, strict=True):
            texts[i] = t
        done.add(b)
        if progress:
            k = len(done) - (n_batches - todo)
            rate = (time.perf_counter() - t0) / max(k, 1)
            print(f"  {name}: batch {len(done)}/{n_batches}, {rate:.0f} s/batch", file=sys.stderr, flush=True)

    if todo:
        if progress:
            print(f"prefaudit: generating {len(prompts)} answers ({name}) into {path}", file=sys.stderr)
        messages = [[{"role": "user", "content": p}] for p in prompts]
        generate_texts(backbone.model, backbone, messages, cfg, skip_batches=frozenset(done), on_batch=save)
    known = [v for v in seconds.values() if v is not None]
    total = round(sum(known), 1) if len(known) == n_batches else None
    return [t or "" for t in texts], total


def _styled_variant(
    kind: str,
    body: str,
    subject: str,
    rng: random.Random,
    opener: Callable[[], str] | None = None,
) -> str:
    """One styled reading of ``body``; ``opener`` (if given) replaces the demo's flattering opener."""
    if kind == "evasive":
        return evasive(subject, rng)
    if kind == "refusal":
        return refusal(subject, rng)
    if kind == "hedged":
        return hedged(body, rng)
    if kind == "combo":
        picks = rng.sample(["flattery", "markdown", "url"], rng.choice([2, 3]))
        flags = {k: k in picks for k in ("flattery", "markdown", "url")}
    else:
        flags = {k: k == kind for k in ("flattery", "markdown", "url")}
    out = style(body, subject, rng=rng, **flags)
    if not flags["flattery"] or opener is None:
        return out.text
    # Swap the demo's opener for corpus praise; its own stream leaves ``rng``'s draws as they were.
    end = out.spans["flattery"][0][1]
    return opener() + out.text[end:]


def sae_corpus(
    backbone: Any, recipe: CorpusRecipe, *, progress: bool = True
) -> tuple[list[CorpusItem], float | None]:
    """The SAE's training and held-out text (see module docstring); deterministic given the recipe.

    Prompts are a seeded sample of the ``"sae"`` split; the last ``heldout_fraction`` of them
    (and every variant of their answers) are held out for evaluation. Also returns the seconds
    generation took (see :func:`cached_generate`).
    """
    rng = random.Random(recipe.seed)
    opener = None
    if recipe.flattery != "demo":
        opener = partial(
            praise_opener,
            random.Random(recipe.praise_seed),
            new_follow_ups_only=recipe.flattery == "praise-strict",
        )
    pool = prompts_for("sae")
    chosen = rng.sample(pool, min(recipe.n_prompts, len(pool)))
    raw, seconds = cached_generate(
        backbone, [p.text for p in chosen], recipe.generation, "sae", progress=progress
    )
    n_held = round(len(chosen) * recipe.heldout_fraction)
    kinds, weights = list(recipe.style_mix), list(recipe.style_mix.values())
    items: list[CorpusItem] = []
    for j, (p, text) in enumerate(zip(chosen, raw, strict=True)):
        body = trim_response(text, max_chars=recipe.max_chars)
        if body is None:
            continue
        held = j >= len(chosen) - n_held
        items.append(CorpusItem(p.text, body, "plain", held, p.topic))
        r = rng.random()
        acc = 0.0
        for kind, w in zip(kinds, weights, strict=True):
            acc += w
            if r < acc:
                items.append(
                    CorpusItem(
                        p.text,
                        _styled_variant(kind, body, p.subject, rng, opener),
                        kind,
                        held,
                        p.topic,
                    )
                )
                break
    return items, seconds


def save_items(items: Sequence[CorpusItem], path: Path) -> None:
    """Write corpus items as JSON lines (for inspection; the SAE metadata records the recipe)."""
    with path.open("w") as f:
        for it in items:
            f.write(json.dumps(asdict(it)) + "\n")
