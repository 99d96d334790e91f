"""Standalone HTML report of an audit: opens offline, loads nothing from the network.

Contents: what was audited, the volcano (a static plotly figure with plotly.js inlined), the
strongest features in both directions, example snippets (top pairs of the top features with the
peak token marked), and the person's decisions (weights with their predicted effect, verdicts,
notes). All dataset text is escaped with :func:`html.escape`.

Example
-------
>>> session.test()                               # doctest: +SKIP
>>> session.report("audit.html")                 # doctest: +SKIP
PosixPath('audit.html')
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigError

SNIPPET_CHARS = 320  # characters of context kept around a marked token

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
"""


def _e(text: Any) -> str:
    return html.escape("" if text is None else str(text))


def _num(x: Any, spec: str = ".3f") -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(x):
        return "–"
    if spec == "q":
        return f"{x:.2e}"
    return format(x, spec)


def _top_features(results: pd.DataFrame, direction: str, n: int, effect: str) -> pd.DataFrame:
    sub = results[(results["direction"] == direction) & (results["q"] < 0.05)]
    return sub.reindex(sub[effect].abs().sort_values(ascending=False).index).head(n)


def _feature_table(session: Any, rows: pd.DataFrame, effect: str) -> str:
    if rows.empty:
        return "<p class='small'>None with q &lt; 0.05.</p>"
    head = "<tr><th>feature</th><th>label</th><th>d_z</th><th>rank-biserial</th><th>mean Δ [95% CI]</th><th>q</th><th>n active</th><th>verdict</th><th>weight</th></tr>"
    body = []
    for r in rows.itertuples(index=False):
        f = r.feature
        body.append(
            f"<tr><td><code>{_e(f)}</code></td><td>{_e(session.label(f))}</td>"
            f"<td class='num'>{_num(r.d_z, '+.2f')}</td><td class='num'>{_num(r.rank_biserial, '+.2f')}</td>"
            f"<td class='num'>{_num(r.delta_mean, '+.3g')} [{_num(r.ci_low, '.3g')}, {_num(r.ci_high, '.3g')}]</td>"
            f"<td class='num'>{_num(r.q, 'q')}</td><td class='num'>{int(r.n_active)}</td>"
            f"<td>{_e(session.verdicts.get(f, ''))}</td><td class='num'>{_num(session.weights.get(f), '+.2f')}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _marked_snippet(session: Any, fid: str, position: int, side: str, text: str) -> str:
    """Escaped snippet of ``text`` around the feature's peak (SAE) or first match (regex concept)."""
    start = end = None
    if fid.startswith("sae:"):
        tokens, acts = session.token_activations(position, fid)[side]
        acts = np.asarray(acts)
        if len(tokens) and acts.max() > 0:
            k = int(np.argmax(acts))
            start = len("".join(tokens[:k]))
            end = start + len(tokens[k])
            if text[start:end] != tokens[k]:  # decoded pieces do not line up with the text
                start = end = None
    else:
        from .views.drilldown import concept_regex

        rx = concept_regex(session, fid)
        m = rx.search(text) if rx is not None else None
        if m is not None and m.end() > m.start():
            start, end = m.start(), m.end()
    if start is None:
        cut = text[:SNIPPET_CHARS]
        return _e(cut) + ("…" if len(text) > SNIPPET_CHARS else "")
    lo, hi = max(0, start - SNIPPET_CHARS // 2), min(len(text), end + SNIPPET_CHARS // 2)
    return (
        ("…" if lo > 0 else "")
        + _e(text[lo:start])
        + f"<mark>{_e(text[start:end])}</mark>"
        + _e(text[end:hi])
        + ("…" if hi < len(text) else "")
    )


def _examples(session: Any, features: list[str], n_pairs: int) -> str:
    out = []
    for fid in features:
        row = session.results.loc[session.results["feature"] == fid].iloc[0]
        by = "chosen" if row["direction"] == "chosen" else "rejected"
        top = session.top_pairs(fid, by=by, n=n_pairs)
        out.append(
            f"<h3><code>{_e(fid)}</code> {_e(session.label(fid))} <span class='small'>(top pairs by {by} value)</span></h3>"
        )
        for p in top.itertuples(index=False):
            prompt = " / ".join(
                f"{m.get('role', '')}: {m.get('content', '')}" for m in session.data.messages(int(p.position))
            )
            prompt = prompt[:SNIPPET_CHARS] + ("…" if len(prompt) > SNIPPET_CHARS else "")
            sides = "".join(
                f"<div class='{side}'><b>{side}</b> <span class='small'>pooled {_num(getattr(p, side), '.3g')}</span>"
                f"<div class='text'>{_marked_snippet(session, fid, int(p.position), side, str(getattr(p, side + '_text')))}</div></div>"
                for side in ("chosen", "rejected")
            )
            out.append(
                f"<div class='example'><div class='small'>pair {_e(p.pair_id)} · Δ = {_num(p.delta, '+.3g')}</div>"
                f"<div class='prompt'>{_e(prompt)}</div><div class='sides'>{sides}</div></div>"
            )
    return "".join(out)


def _decisions(session: Any) -> str:
    ids = list(dict.fromkeys([*session.weights, *session.verdicts, *session.notes]))
    if not ids:
        return "<p class='small'>No weights, verdicts or notes yet.</p>"
    pred = session.predict(features=ids).set_index("feature")
    n_dom, n = int(pred.attrs["n_dominated"]), len(pred.attrs["margins"])
    head = "<tr><th>feature</th><th>label</th><th>weight</th><th>verdict</th><th>predicted signal before → after (sd units)</th><th>note</th></tr>"
    body = "".join(
        f"<tr><td><code>{_e(f)}</code></td><td>{_e(session.label(f))}</td><td class='num'>{_num(session.weights.get(f, 0.0), '+.2f')}</td>"
        f"<td>{_e(session.verdicts.get(f, ''))}</td>"
        f"<td class='num'>{_num(pred.loc[f, 'signal_before_z'], '+.2f')} → {_num(pred.loc[f, 'signal_after_z'], '+.2f')}</td>"
        f"<td>{_e(session.notes.get(f, ''))}</td></tr>"
        for f in ids
    )
    return (
        f"<table>{head}{body}</table><p class='small'>{n_dom} of {n} pairs have |margin| ≥ "
        f"{_num(pred.attrs['threshold'], 'g')}: for them the shaping, not the preference label, sets the gradient weight.</p>"
    )


def _volcano_html(session: Any, effect: str) -> str:
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    from .views.volcano import volcano_figure

    fig = volcano_figure(session, effect)
    div = pio.to_html(fig, include_plotlyjs=False, full_html=False, config={"displaylogo": False})
    # plotly.js inline: the report must open without a network (no CDN).
    return f"<script>{get_plotlyjs()}</script>{div}"


def write_report(
    session: Any,
    path: str | Path,
    *,
    top: int = 15,
    example_features: int = 3,
    example_pairs: int = 2,
    effect: str = "d_z",
    examples: Sequence[int | str] | None = None,
    title: str = "prefaudit report",
) -> Path:
    """Write a standalone HTML report of ``session`` to ``path``; returns the path.

    Parameters
    ----------
    session : AuditSession
        Must have results (``session.test()``).
    top : int
        Features listed per direction (q < 0.05, strongest |effect| first).
    example_features, example_pairs : int
        Example snippets: the top pairs of this many top features per direction.
    effect : str
        Effect column of the volcano's x axis and of the ranking.
    examples : sequence of feature ids, optional
        Show snippets for these features instead of the session's selection followed by the top ones.
    title : str

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
    more_c = _top_features(results, "chosen", top, effect)
    more_r = _top_features(results, "rejected", top, effect)
    if examples is None:
        # What the person selected comes first: the report is about what they were looking at.
        top_ids = [*more_c["feature"].head(example_features), *more_r["feature"].head(example_features)]
        example_ids = list(dict.fromkeys([*session.selection, *top_ids]))
    else:
        example_ids = [session.feature_id(f) for f in examples]
    cfg = session.config
    model = (
        "concepts only (no model)"
        if not session.uses_sae
        else f"model {cfg.get('model') or 'embedded default'}, SAE {cfg.get('sae') or 'embedded default'}"
    )
    n_sig = int((results["q"] < 0.05).sum())
    meta = (
        f"{len(session.data):,} pairs · {len(results):,} features ({_e(model)}; pooling {_e(cfg.get('pooling'))}; "
        f"test {_e(results.attrs.get('test', ''))}) · {n_sig:,} with q &lt; 0.05 · "
        f"written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}"
    )
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p class="meta">{meta}</p>
<h2>Volcano</h2>
<p class="small">Each point is a feature: effect size ({_e(effect)}, chosen − rejected) against −log10 of the
Benjamini–Hochberg q. Blue: more in chosen responses, red: more in rejected (q &lt; 0.05).</p>
{_volcano_html(session, effect)}
<h2>Features more present in chosen responses</h2>
{_feature_table(session, more_c, effect)}
<h2>Features more present in rejected responses</h2>
{_feature_table(session, more_r, effect)}
<h2>Examples</h2>
<p class="small">Top pairs of the strongest features; the feature's peak token (SAE) or first match (regex concept) is marked.</p>
{_examples(session, example_ids, example_pairs) or "<p class='small'>No significant features.</p>"}
<h2>Decisions: weights, verdicts, notes</h2>
{_decisions(session)}
</body></html>
"""
    path.write_text(doc, encoding="utf-8")
    return path
