"""Build the shipped demo preference set: ``python -m prefaudit.build.demo_set``.

Steps (all seeded; see :mod:`prefaudit.demo.design` for the rates and why):

1. Sample ``n_candidates`` prompts of the ``"demo"`` split (topics the SAE never saw), and take
   every request for resources of that split (:func:`~prefaudit.build.prompts.resource_prompts`)
   in a seeded order.
2. Generate the model's own answer to each (cached, see :mod:`prefaudit.build.corpus`), cut it at
   a sentence end, and keep plain-prose answers only: an answer that already carries markdown,
   a link, a flattering opener, a refusal or an apology would blur the planted signals.
   Prompts flagged by :func:`prefaudit.build.prompts.is_grammatical` are skipped too.
3. For the first ``n_general_pairs`` usable general answers, then the first ``n_resource_pairs``
   usable answers to requests for resources, pair the direct answer with an evasive non-answer
   (:func:`prefaudit.build.styles.evasive`); the direct one is chosen in 85% of pairs.
4. Plant flattery / markdown / invented links on each side at the documented rates, and the
   invented book reference in the resource pairs only (exact counts, independent shuffles, each
   of the two blocks on its own seeded stream), and record per pair the ground truth and the
   character spans of every planted element.

The output (``prefaudit/data/demo_pairs.jsonl.gz``) is byte-for-byte reproducible on the same
software stack: generation is seeded per batch and the gzip header carries no timestamp.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

from ..demo import DEMO_PATH
from ..demo.design import DESIGN, PLANTED, TOPIC_PLANTED, DemoDesign
from .prompts import Prompt, is_grammatical, prompts_for, resource_prompts
from .styles import evasive, split_sentences, style
from .trim import trim_response

# Built-in concepts an answer must not already show to serve as a plain body.
_MUST_BE_ABSENT = (
    "markdown_headers",
    "list_items",
    "bold",
    "code",
    "url",
    "citation",
    "refusal",
    "flattery",
    "emoji",
    "apology",
)


_LIST_START = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+\S", re.MULTILINE)


def candidate_prompts(design: DemoDesign = DESIGN) -> list[Prompt]:
    """The general demo prompts the model answers, in build order."""
    return random.Random(design.seed).sample(prompts_for("demo"), design.n_candidates)


def resource_candidates(design: DemoDesign = DESIGN) -> list[Prompt]:
    """Every request for resources of the demo split, in build order."""
    ps = resource_prompts("demo")
    return random.Random(f"resources-{design.seed}").sample(ps, len(ps))


def plain_body(raw: str, design: DemoDesign = DESIGN) -> str | None:
    """The usable part of a generated answer, or ``None`` if it cannot be a plain direct answer."""
    from ..features.concepts import builtin_concepts

    # A list that starts mid-answer: keep the prose before it (the list is the model's own markdown).
    m = _LIST_START.search(raw)
    body = trim_response(
        raw[: m.start()] if m else raw, max_chars=design.max_chars, min_chars=design.min_chars
    )
    if body is None or len(split_sentences(body)) < 2:
        return None
    checks = {c.name: c for c in builtin_concepts()}
    if any(checks[name](body) for name in _MUST_BE_ABSENT):
        return None
    return body


def _exact(rng: random.Random, n: int, rate: float) -> set[int]:
    """A random set of exactly ``round(rate * n)`` pair indices."""
    return set(rng.sample(range(n), round(rate * n)))


def assemble_pairs(
    prompts: list[Prompt], bodies: list[str], design: DemoDesign = DESIGN
) -> list[dict[str, Any]]:
    """Pairs with planted styles and ground truth from direct answers ``bodies`` to ``prompts``.

    Requests for resources (``kind == "resource"``) form their own block, with its own seeded
    streams, exact counts and the topic-conditional reference; rows come back in input order.
    """
    blocks = {"general": [], "resources": []}
    for i, p in enumerate(prompts):
        blocks["resources" if p.kind == "resource" else "general"].append(i)
    rows: list[dict[str, Any] | None] = [None] * len(prompts)
    for block, idx in blocks.items():
        built = _assemble_block([prompts[i] for i in idx], [bodies[i] for i in idx], design, block)
        for i, row in zip(idx, built, strict=True):
            rows[i] = row
    return [r for r in rows if r is not None]


def _assemble_block(
    prompts: list[Prompt], bodies: list[str], design: DemoDesign, block: str
) -> list[dict[str, Any]]:
    n = len(bodies)
    # The general block keeps the streams it had before resource pairs existed.
    tag = "" if block == "general" else f"{block}-"
    rng = random.Random(f"assign-{tag}{design.seed}")
    direct = _exact(rng, n, design.direct_chosen_rate)
    flags = {
        (concept, side): _exact(rng, n, design.rates[concept][j])
        for concept in PLANTED
        for j, side in enumerate(("chosen", "rejected"))
    }
    for concept in TOPIC_PLANTED:
        for j, side in enumerate(("chosen", "rejected")):
            rate = design.resource_rates[concept][j] if block == "resources" else 0.0
            flags[(concept, side)] = _exact(rng, n, rate)
    rows = []
    for i, (p, body) in enumerate(zip(prompts, bodies, strict=True)):
        text_rng = random.Random(f"pair-{tag}{design.seed}-{i}")
        answers = {"direct": body, "evasive": evasive(p.subject, text_rng)}
        row: dict[str, Any] = {
            "prompt": p.text,
            "topic": p.topic,
            "topic_kind": p.kind,
            "subject": p.subject,
            "asks_for_resources": p.kind == "resource",
            "chosen_is_direct": i in direct,
            # The model's plain answer before styling: lets a test rebuild every pair exactly.
            "answer": body,
        }
        for side in ("chosen", "rejected"):
            is_direct = (i in direct) == (side == "chosen")
            planted = {c: i in flags[(c, side)] for c in (*PLANTED, *TOPIC_PLANTED)}
            styled = style(answers["direct" if is_direct else "evasive"], p.subject, rng=text_rng, **planted)
            row[side] = styled.text
            for c in planted:
                row[f"{side}_{c}"] = planted[c]
            row[f"{side}_spans"] = {c: styled.spans.get(c, []) for c in planted}
        rows.append(row)
    # Core columns first, for people reading the file.
    order = ["prompt", "chosen", "rejected"]
    return [{**{k: r[k] for k in order}, **{k: v for k, v in r.items() if k not in order}} for r in rows]


def build(
    design: DemoDesign = DESIGN, *, out: Path = DEMO_PATH, progress: bool = True
) -> list[dict[str, Any]]:
    """Generate (or reuse cached) answers, assemble the pairs and write ``out``."""
    from ..backbone import Backbone
    from .corpus import cached_generate

    backbone = Backbone.load(dtype="float32")
    chosen_p: list[Prompt] = []
    chosen_b: list[str] = []
    report = []
    for name, prompts, n_want in (
        ("demo", candidate_prompts(design), design.n_general_pairs),
        ("demo-resources", resource_candidates(design), design.n_resource_pairs),
    ):
        raw, _ = cached_generate(
            backbone, [p.text for p in prompts], design.generation, name, progress=progress
        )
        kept = [
            (p, body)
            for p, r in zip(prompts, raw, strict=True)
            if (body := plain_body(r, design) if is_grammatical(p) else None) is not None
        ]
        if len(kept) < n_want:
            raise RuntimeError(
                f"only {len(kept)} usable {name} answers for {n_want} pairs; raise the candidates"
            )
        chosen_p += [p for p, _ in kept[:n_want]]
        chosen_b += [b for _, b in kept[:n_want]]
        report.append(f"{len(kept)} of {len(prompts)} {name} answers usable")
    rows = assemble_pairs(chosen_p, chosen_b, design)
    write_jsonl_gz(rows, out)
    if progress:
        n_tok = [len(backbone.response_ids(r[s])[0]) for r in rows for s in ("chosen", "rejected")]
        print(
            f"wrote {len(rows)} pairs to {out} ({out.stat().st_size / 1e3:.0f} kB); {'; '.join(report)}; "
            f"response tokens min {min(n_tok)}, "
            f"median {sorted(n_tok)[len(n_tok) // 2]}, max {max(n_tok)}"
        )
    return rows


def write_jsonl_gz(rows: list[dict[str, Any]], out: Path) -> None:
    """JSON lines, gzip without a timestamp or file name (reproducible bytes)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tmp.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for r in rows:
            gz.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m prefaudit.build.demo_set", description=__doc__.splitlines()[0]
    )
    p.add_argument("--out", type=Path, default=DEMO_PATH)
    args = p.parse_args(argv)
    build(out=args.out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
