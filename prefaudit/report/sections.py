"""The sections of the HTML report: feature tables, example snippets, decisions, the volcano.

Each function returns an HTML fragment; every piece of dataset text goes through :func:`esc`.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import ids
from ..views.figures import concept_regex, volcano_figure

if TYPE_CHECKING:
    from ..audit.protocol import AuditState

SNIPPET_CHARS = 320  # characters of context kept around a marked token
#: The significance threshold as it reads in the report (``"q &lt; 0.05"``).
SIGNIFICANT = html.escape(f"q < {ids.ALPHA}")


def esc(text: Any) -> str:
    return html.escape("" if text is None else str(text))


def num(x: Any, spec: str = ".3f") -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "–"
    if math.isinf(x):  # a constant Δ's d_z: infinite, not missing
        return "+∞" if x > 0 else "−∞"
    if not math.isfinite(x):
        return "–"
    if spec == "q":
        return f"{x:.2e}"
    return format(x, spec)


def top_features(results: pd.DataFrame, direction: str, n: int, effect: str) -> pd.DataFrame:
    """Significant features of one direction, strongest |effect| first."""
    sub = results[(results["direction"] == direction) & (results["q"] < ids.ALPHA)]
    return sub.reindex(sub[effect].abs().sort_values(ascending=False).index).head(n)


def feature_table(session: AuditState, rows: pd.DataFrame, effect: str) -> str:
    if rows.empty:
        return f"<p class='small'>None with {SIGNIFICANT}.</p>"
    head = "<tr><th>feature</th><th>label</th><th>d_z</th><th>rank-biserial</th><th>mean Δ [95% CI]</th><th>q</th><th>n active</th><th>verdict</th><th>weight</th></tr>"
    body = []
    for r in rows.itertuples(index=False):
        f = r.feature
        body.append(
            f"<tr><td><code>{esc(f)}</code></td><td>{esc(session.label(f))}</td>"
            f"<td class='num'>{num(r.d_z, '+.2f')}</td><td class='num'>{num(r.rank_biserial, '+.2f')}</td>"
            f"<td class='num'>{num(r.delta_mean, '+.3g')} [{num(r.ci_low, '.3g')}, {num(r.ci_high, '.3g')}]</td>"
            f"<td class='num'>{num(r.q, 'q')}</td><td class='num'>{int(r.n_active)}</td>"
            f"<td>{esc(session.verdicts.get(f, ''))}</td><td class='num'>{num(session.weights.get(f), '+.2f')}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def marked_snippet(session: AuditState, fid: str, position: int, side: str, text: str) -> str:
    """Escaped snippet of ``text`` around the feature's peak (SAE) or first match (regex concept)."""
    start = end = None
    if ids.is_sae(fid):
        tokens, acts = session.space.token_activations(position, fid)[side]
        acts = np.asarray(acts)
        if len(tokens) and acts.max() > 0:
            k = int(np.argmax(acts))
            start = len("".join(tokens[:k]))
            end = start + len(tokens[k])
            if text[start:end] != tokens[k]:  # decoded pieces do not line up with the text
                start = end = None
    else:
        rx = concept_regex(session, fid)
        m = rx.search(text) if rx is not None else None
        if m is not None and m.end() > m.start():
            start, end = m.start(), m.end()
    if start is None:
        cut = text[:SNIPPET_CHARS]
        return esc(cut) + ("…" if len(text) > SNIPPET_CHARS else "")
    lo, hi = max(0, start - SNIPPET_CHARS // 2), min(len(text), end + SNIPPET_CHARS // 2)
    return (
        ("…" if lo > 0 else "")
        + esc(text[lo:start])
        + f"<mark>{esc(text[start:end])}</mark>"
        + esc(text[end:hi])
        + ("…" if hi < len(text) else "")
    )


def examples_html(session: AuditState, features: list[str], n_pairs: int) -> str:
    """The top pairs of each feature, its peak token or first match marked."""
    out = []
    for fid in features:
        row = session.results.loc[session.results["feature"] == fid].iloc[0]
        by = "chosen" if row["direction"] == "chosen" else "rejected"
        top = session.space.top_pairs(fid, by=by, n=n_pairs)
        out.append(
            f"<h3><code>{esc(fid)}</code> {esc(session.label(fid))} <span class='small'>(top pairs by {by} value)</span></h3>"
        )
        for p in top.itertuples(index=False):
            prompt = " / ".join(
                f"{m.get('role', '')}: {m.get('content', '')}" for m in session.data.messages(int(p.position))
            )
            prompt = prompt[:SNIPPET_CHARS] + ("…" if len(prompt) > SNIPPET_CHARS else "")
            sides = "".join(
                f"<div class='{side}'><b>{side}</b> <span class='small'>pooled {num(getattr(p, side), '.3g')}</span>"
                f"<div class='text'>{marked_snippet(session, fid, int(p.position), side, str(getattr(p, side + '_text')))}</div></div>"
                for side in ("chosen", "rejected")
            )
            out.append(
                f"<div class='example'><div class='small'>pair {esc(p.pair_id)} · Δ = {num(p.delta, '+.3g')}</div>"
                f"<div class='prompt'>{esc(prompt)}</div><div class='sides'>{sides}</div></div>"
            )
    return "".join(out)


def decisions_html(session: AuditState) -> str:
    """Weights (with their predicted effect), verdicts and notes."""
    fids = list(dict.fromkeys([*session.weights, *session.verdicts, *session.notes]))
    if not fids:
        return "<p class='small'>No weights, verdicts or notes yet.</p>"
    preview = session.shaping.preview(features=fids)
    pred = preview.table.set_index("feature")
    n_dom, n = preview.n_dominated, len(preview.margins)
    head = "<tr><th>feature</th><th>label</th><th>weight</th><th>verdict</th><th>predicted signal before → after (sd units)</th><th>note</th></tr>"
    body = "".join(
        f"<tr><td><code>{esc(f)}</code></td><td>{esc(session.label(f))}</td><td class='num'>{num(session.weights.get(f, 0.0), '+.2f')}</td>"
        f"<td>{esc(session.verdicts.get(f, ''))}</td>"
        f"<td class='num'>{num(pred.loc[f, 'signal_before_z'], '+.2f')} → {num(pred.loc[f, 'signal_after_z'], '+.2f')}</td>"
        f"<td>{esc(session.notes.get(f, ''))}</td></tr>"
        for f in fids
    )
    return (
        f"<table>{head}{body}</table><p class='small'>{n_dom} of {n} pairs have margin ≤ −"
        f"{num(preview.threshold, 'g')}: for them the shaping, not the preference label, sets the gradient weight.</p>"
    )


#: Cut pairs listed by id in the report, per kind (prompt, chosen, rejected); the rest are counted.
CUT_IDS_SHOWN = 20


def truncation_html(session: AuditState) -> str:
    """What the token window cut: how many prompts and responses, and which pairs (by ``pair_id``)."""
    t = session.space.truncation()
    lines = [f"Token window: {esc(t.sentence())}."]
    if t.note and t.note != t.sentence():
        lines.append(f"<span class='small'>{esc(t.note)}.</span>")
    cut = []
    for kind, pair_ids in t.pair_ids().items():
        if pair_ids:
            shown = ", ".join(esc(i) for i in pair_ids[:CUT_IDS_SHOWN])
            more = f" and {len(pair_ids) - CUT_IDS_SHOWN:,} more" if len(pair_ids) > CUT_IDS_SHOWN else ""
            cut.append(f"{esc(kind)} {shown}{more}")
    if cut:
        lines.append(f"<span class='small'>Cut, by pair_id: {'; '.join(cut)}.</span>")
    res = session.results
    controlled = res is not None and "p_len_ctrl" in res and bool(res["p_len_ctrl"].notna().any())
    if t.n_responses_cut and controlled:
        lines.append(
            "<span class='small'>The length control regresses on whole response lengths (tokens before the cut); "
            "the features saw only the tokens read.</span>"
        )
    return f"<p class='meta'>{' '.join(lines)}</p>"


def volcano_html(session: AuditState, effect: str) -> str:
    """The volcano as a static plotly figure, with plotly.js inlined."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    fig = volcano_figure(session, effect)
    div = pio.to_html(fig, include_plotlyjs=False, full_html=False, config={"displaylogo": False})
    # plotly.js inline: the report must open without a network (no CDN).
    return f"<script>{get_plotlyjs()}</script>{div}"
