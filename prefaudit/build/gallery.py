"""A gallery of the shipped SAE's features on the demo set: ``python -m prefaudit.build.gallery``.

Writes ``docs/gallery.md`` and the gallery section of ``docs/MODEL_CARD.md`` (between the
``<!-- gallery:start -->`` / ``<!-- gallery:end -->`` markers, fewer contexts). Features are picked by a fixed rule, not by hand:

* on demo data, each planted concept's best feature (:func:`prefaudit.demo.recovery.recovery_table`);
* then, up to ``n_dz`` in all, the SAE features with the largest ``|d_z|`` among those with
  ``q < 0.05`` (what the audit puts first), and
* the ``n_freq`` most frequently active features among those active in at most half of the
  responses (features active everywhere mostly track position or format).

For each: its automatic label, statistics, most common peak tokens, and the contexts of its
strongest responses with the peak token in bold (text escaped for markdown), plus which planted
element, if any, the peak falls in.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..demo.design import PLANTED
from ..demo.recovery import SIDES, _entries, token_offsets

if TYPE_CHECKING:
    from ..audit.protocol import AuditState

DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "gallery.md"
CARD_PATH = Path(__file__).resolve().parents[2] / "docs" / "MODEL_CARD.md"
MARKERS = ("<!-- gallery:start -->", "<!-- gallery:end -->")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def md_escape(text: str) -> str:
    """Text safe inside a markdown list item: specials backslash-escaped, newlines shown as ⏎."""
    return _MD_SPECIAL.sub(r"\\\1", text).replace("\r", "").replace("\n", " ⏎ ")


def _index(feature_id: str) -> int:
    """``"sae:12"`` -> 12."""
    return int(str(feature_id).split(":")[1])


def pick_features(session: AuditState, *, n_dz: int = 7, n_freq: int = 3) -> list[tuple[int, str]]:
    """``(feature index, why picked)`` by the module's rule."""
    res = session.results
    picked: list[tuple[int, str]] = []
    if all(f"{side}_spans" in session.data.df for side in SIDES):  # demo data: planted ground truth
        from ..demo.recovery import recovery_table

        table = recovery_table(session)
        for row in table[table["feature"].notna()].itertuples():
            picked.append((_index(row.feature), f"best feature of planted *{row.concept}*"))
    sae = res[(res["source"] == "sae") & (res["q"] < 0.05)]
    for f in map(_index, sae.reindex(sae["d_z"].abs().sort_values(ascending=False).index)["feature"]):
        if len(picked) >= n_dz:
            break
        if f not in {g for g, _ in picked}:
            picked.append((f, "top |d_z|"))
    enc = session.encoded
    active = np.asarray((enc.chosen.values > 0).sum(0) + (enc.rejected.values > 0).sum(0)).ravel()
    share = active / (2 * enc.n_pairs)
    seen = {f for f, _ in picked}
    for f in np.argsort(-np.where(share <= 0.5, share, -1), kind="stable"):
        if len(picked) >= n_dz + n_freq:
            break
        if int(f) not in seen:
            picked.append((int(f), "frequent"))
    return picked


def feature_section(
    session: AuditState, feature: int, why: str, *, n_contexts: int = 5, n_label: int = 30, level: int = 3
) -> str:
    """Markdown for one feature."""
    enc, df, tok = session.encoded, session.data.df, session.backbone.tokenizer
    max_tokens = session.backbone.max_response_tokens
    row = session.results.set_index("feature").loc[f"sae:{feature}"]
    hits = []
    for side in SIDES:
        rows, vals, pos = _entries(enc.side(side), feature)
        hits += [(float(v), side, int(r), int(p)) for r, v, p in zip(rows, vals, pos, strict=True)]
    hits.sort(key=lambda h: -h[0])
    tokens: Counter[str] = Counter()
    contexts = []
    for k, (value, side, r, p) in enumerate(hits[:n_label]):
        text = df[side].iloc[r]
        a, b = token_offsets(tok, text, max_tokens)[p]
        tokens[repr(text[a:b])] += 1
        if k < n_contexts:
            where = [
                c for c in PLANTED if any(a < e and s < b for s, e in df[f"{side}_spans"].iloc[r].get(c, []))
            ]
            left, right = text[max(0, a - 90) : a], text[b : b + 40]
            snippet = f"{'…' if a > 90 else ''}{md_escape(left)}**{md_escape(text[a:b]) or '␣'}**{md_escape(right)}…"
            tag = f" — in planted *{where[0]}*" if where else ""
            contexts.append(f"- `{value:.1f}` ({side}, pair {r}{tag}): {snippet}")
    share = len(hits) / (2 * enc.n_pairs)
    peak = ", ".join(f"`{t}` ×{n}" for t, n in tokens.most_common(5))
    label = md_escape(session.label(f"sae:{feature}"))
    return "\n".join(
        [
            f"{'#' * level} sae:{feature} — {label}",
            "",
            f"Picked by {why}. d_z = {row['d_z']:+.2f}, q = {row['q']:.1e}, more in **{row['direction']}**; "
            f"active in {100 * share:.0f}% of responses.",
            f"Peak tokens of its {min(n_label, len(hits))} strongest responses: {peak}.",
            "",
            *contexts,
            "",
        ]
    )


def gallery_markdown(
    session: AuditState,
    *,
    n_dz: int = 7,
    n_freq: int = 3,
    n_contexts: int = 5,
    title: bool = True,
    level: int = 3,
) -> str:
    """The whole gallery page for an encoded and tested demo session."""
    meta = session.sae.metadata.get("prefaudit", {})
    held = meta.get("metrics", {}).get("heldout", {})
    head = [
        *(["# Feature gallery: the default SAE on the demo set", ""] if title else []),
        "Generated by `python -m prefaudit.build.gallery` from the shipped weights "
        "(`prefaudit/data/default_sae`) and the shipped demo set; do not edit by hand.",
        f"SAE: TopK, d_sae {session.sae.d_sae}, k {session.sae.sae.cfg.k}, on SmolLM2-135M-Instruct `"
        f"{session.sae.hook_name}`; held-out explained variance {held.get('explained_variance', float('nan')):.3f}, "
        f"L0 {held.get('l0', float('nan')):.1f}. Demo set: {len(session.data)} pairs, max-pooled per response.",
        "",
        "**Rule**: for each planted concept, the best SAE feature that belongs to it (`prefaudit.demo.recovery`); "
        f"then, up to {n_dz} in all, the features with the largest |d_z| among those with q < 0.05; then the {n_freq} most "
        "frequently active features among those active in at most half of the responses. Bold marks the peak "
        "token; the tag says when it falls inside a planted element of the demo set.",
        "",
    ]
    picks = pick_features(session, n_dz=n_dz, n_freq=n_freq)
    body = [feature_section(session, f, why, n_contexts=n_contexts, level=level) for f, why in picks]
    return "\n".join(head + body)


def splice_section(document: str, section: str) -> str:
    """``document`` with the text between the gallery markers replaced by ``section``."""
    start, end = MARKERS
    if start not in document or end not in document:
        raise ValueError(f"the document has no {start} ... {end} markers")
    before, rest = document.split(start, 1)
    _, after = rest.split(end, 1)
    return f"{before}{start}\n{section.strip()}\n{end}{after}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m prefaudit.build.gallery", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DOCS_PATH)
    p.add_argument("--card", type=Path, default=CARD_PATH, help="model card whose gallery section to rewrite")
    p.add_argument("--no-card", action="store_true")
    args = p.parse_args(argv)
    from ..demo import load_demo_pairs
    from ..session import AuditSession

    session = AuditSession(load_demo_pairs())
    session.encode()
    session.test()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(gallery_markdown(session))
    print(f"wrote {args.out}")
    if not args.no_card:
        section = gallery_markdown(session, n_contexts=2, title=False, level=3)
        args.card.write_text(splice_section(args.card.read_text(), section))
        print(f"updated the gallery section of {args.card}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
