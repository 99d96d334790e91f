"""The report page: :func:`write_report` puts the sections (``sections.py``) into one HTML file."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .. import ids
from ..errors import ConfigError
from .concept_sections import (
    clusters_html,
    drivers_html,
    fit_html,
    glossary_html,
    sentences_html,
    topics_html,
)
from .concepts import PARTS, ConceptParts, gather
from .sections import (
    SIGNIFICANT,
    decisions_html,
    esc,
    examples_html,
    feature_table,
    top_features,
    truncation_html,
    volcano_html,
)

if TYPE_CHECKING:
    from ..audit.protocol import AuditState

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2em auto; max-width: 1100px; color: #1a1a1a; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { border-bottom: 1px solid #eee; padding: 3px 6px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font-size: 12px; }
.meta { color: #555; font-size: 13px; }
.example { border: 1px solid #ddd; border-radius: 4px; padding: 6px 8px; margin: 6px 0; font-size: 13px; }
.example .sides { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
.example .text { white-space: pre-wrap; overflow-wrap: anywhere; }
.example .prompt { color: #444; white-space: pre-wrap; overflow-wrap: anywhere; }
.chosen { border-top: 3px solid #1f77b4; } .rejected { border-top: 3px solid #d62728; }
mark { background: rgba(255, 127, 14, 0.75); border-radius: 2px; }
.small { font-size: 12px; color: #666; }
.warning { border: 2px solid #d62728; background: #fdecea; color: #8b1a1a; border-radius: 4px; padding: 8px 10px; margin: 8px 0; font-weight: 600; }
table.drivers td.text { white-space: pre-wrap; overflow-wrap: anywhere; max-width: 380px; }
ul.sentences li { margin: 6px 0; line-height: 1.4; }
details.glossary { font-size: 13px; margin: 8px 0; } details.glossary dt { font-weight: 600; }
"""


def write_report(
    session: AuditState,
    path: str | Path,
    *,
    top: int = 15,
    example_features: int = 3,
    example_pairs: int = 2,
    effect: str = "d_z",
    examples: Sequence[int | str] | None = None,
    title: str = "prefaudit report",
    compute: Sequence[str] = PARTS,
    parts: ConceptParts | None = None,
) -> Path:
    """Write a standalone HTML report of ``session`` to ``path``; returns the path.

    Parameters
    ----------
    session : AuditSession
        Must have results (``session.test()``).
    top : int
        Features listed per direction (q < ``prefaudit.ids.ALPHA``, strongest |effect| first).
    example_features, example_pairs : int
        Example snippets: the top pairs of this many top features per direction.
    effect : str
        Effect column of the volcano's x axis and of the ranking.
    examples : sequence of feature ids, optional
        Show snippets for these features instead of the session's selection followed by the top ones.
    title : str
    compute : sequence of {"groups", "topics", "fit"}
        Parts to compute when the session has not yet (default all; the session caches them).
        A part left out and not computed is skipped, with a note saying how to compute it.
    parts : ConceptParts, optional
        Already gathered (:func:`prefaudit.report.concepts.gather`; the CLI summarises the same
        parts in ``summary.json``); ``compute`` is then not used.

    Example
    -------
    >>> write_report(session, "report.html", top=10)    # doctest: +SKIP
    """
    results = session.results
    if results is None:
        raise ConfigError("The report needs results: call session.test() first.")
    if effect not in results.columns:
        raise ConfigError(f"effect={effect!r} is not a column of the results.")
    path = Path(path)
    more_c = top_features(results, "chosen", top, effect)
    more_r = top_features(results, "rejected", top, effect)
    if examples is None:
        # What the person selected comes first: the report is about what they were looking at.
        top_ids = [*more_c["feature"].head(example_features), *more_r["feature"].head(example_features)]
        # A selected group has no per-feature snippets; its members show in the clusters section.
        selected = [f for f in session.selection if not ids.is_group(f)]
        example_ids = list(dict.fromkeys([*selected, *top_ids]))
    else:
        example_ids = [session.space.feature_id(f) for f in examples]
    cfg = session.config
    model = (
        "concepts only (no model)"
        if not session.uses_sae
        else f"model {cfg.get('model') or 'embedded default'}, SAE {cfg.get('sae') or 'embedded default'}"
    )
    parts = gather(session, compute) if parts is None else parts
    n_sig = int((results["q"] < ids.ALPHA).sum())
    meta = (
        f"{len(session.data):,} pairs · {len(results):,} features ({esc(model)}; pooling {esc(cfg.get('pooling'))}; "
        f"test {esc(results.attrs.get('test', ''))}) · {n_sig:,} with {SIGNIFICANT} · "
        f"written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}"
    )
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{esc(title)}</h1>
<p class="meta">{meta}</p>
{truncation_html(session)}
<h2>What this data teaches</h2>
{sentences_html(parts)}
{glossary_html()}
<h2>Concepts: clusters of co-firing features</h2>
{clusters_html(parts)}
<h2>How well the SAE reads this data</h2>
{fit_html(parts)}
<h2>Volcano</h2>
<p class="small">Each point is a feature: effect size ({esc(effect)}, chosen − rejected) against −log10 of the
Benjamini–Hochberg q. Blue: more in chosen responses, red: more in rejected ({SIGNIFICANT}).</p>
{volcano_html(session, effect)}
<h2>Features more present in chosen responses</h2>
{feature_table(session, more_c, effect)}
<h2>Features more present in rejected responses</h2>
{feature_table(session, more_r, effect)}
<h2>Prompt topics</h2>
{topics_html(parts)}
<h2>Drivers: the pairs that carry the signal</h2>
{drivers_html(session, parts)}
<h2>Examples</h2>
<p class="small">Top pairs of the strongest features; the feature's peak token (SAE) or first match (regex concept) is marked.</p>
{examples_html(session, example_ids, example_pairs) or "<p class='small'>No significant features.</p>"}
<h2>Decisions: weights, verdicts, notes</h2>
{decisions_html(session)}
</body></html>
"""
    path.write_text(doc, encoding="utf-8")
    return path
