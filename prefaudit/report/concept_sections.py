"""The report's sections beyond single features: sentences, clusters, the SAE's fit, topics, drivers.

Each function takes the :class:`~.concepts.ConceptParts` gathered for the report and returns an
HTML fragment; every piece of dataset text (labels, prompts, responses, topic words) goes through
:func:`~.sections.esc`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from .. import ids
from .concepts import DRIVER_PAIRS, TOP_GROUPS, TOP_TOPIC_SPECIFIC, ConceptParts, strongest, topic_specific
from .sections import SIGNIFICANT, esc, num

if TYPE_CHECKING:
    from ..audit.protocol import AuditState

DRIVER_CHARS = 240  # characters of each response shown in the drivers' tables
MEMBERS_SHOWN = 8  # member ids listed per group; the rest are counted


def _skipped(note: str) -> str:
    return f"<p class='small skipped'>{esc(note)}</p>"


def fit_html(parts: ConceptParts) -> str:
    """The SAE's reconstruction of this data's responses, with a warning below EV 0.7."""
    f = parts.fit
    if f is None:
        return _skipped(parts.fit_note)
    line = (
        f"<p class='fit'>Explained variance <b>{num(f.explained_variance, '.3f')}</b> · "
        f"L0 {num(f.l0, '.1f')} active latents per token · dead {num(100 * f.dead_fraction, '.1f')} % "
        f"of latents (never fire in the sample) · MSE per token {num(f.mse_per_token, '.3g')} · "
        f"{f.n_tokens:,} response tokens of {f.n_responses} sampled responses (seed {f.seed}), read "
        "after their prompts in the audit's window.</p>"
    )
    warn = f"<div class='warning' role='alert'>⚠ Low fit: {esc(f.warning)}</div>" if f.warning else ""
    return line + warn


def _members(members: list[str]) -> str:
    shown = ", ".join(f"<code>{esc(m)}</code>" for m in members[:MEMBERS_SHOWN])
    more = len(members) - MEMBERS_SHOWN
    return shown + (f" and {more:,} more" if more > 0 else "")


def sentences_html(parts: ConceptParts) -> str:
    """What a person reads first: plain sentences from the numbers, each linked to its cluster's row."""
    if not parts.sentences:
        return _skipped(parts.groups_note or "Nothing gathered to say in words.")
    items = "".join(
        f"<li>{esc(text)}" + (f" <a href='#{esc(g)}'><code>{esc(g)}</code></a>" if g else "") + "</li>"
        for text, g in parts.sentences
    )
    return f"<ul class='sentences'>{items}</ul>"


def _pct(k: Any, n: int) -> str:
    return f"{100 * int(k) / n:.0f} %" if n else "–"


def clusters_html(parts: ConceptParts) -> str:
    """The strongest clusters by |d_z|: label, size, effect, badge, how often each side alone fires, controls."""
    g = parts.groups
    if g is None:
        return _skipped(parts.groups_note)
    n_sig = int((g["q"] < ids.ALPHA).sum())
    by_reason = g.attrs.get("unclustered_by_reason", {})
    reasons = ", ".join(f"{esc(r.replace('_', ' '))} {n:,}" for r, n in by_reason.items() if n)
    intro = (
        f"<p class='small'>{len(g):,} clusters of SAE features that fire together in the same responses "
        f"(mutual information of co-firing, Louvain communities), {n_sig:,} with {SIGNIFICANT}; "
        f"{int(g.attrs.get('n_unclustered', 0)):,} features are in no cluster ({reasons or 'none'}; "
        f"clusters need {esc(g.attrs.get('min_size', '–'))} features). A cluster's <i>score</i> is the mean of "
        "its members' standardised values; <i>chosen only / rejected only</i>: the pairs where it fires "
        "(score above its 90th percentile) in that response alone; the <i>badge</i> says which side it "
        "reliably leans to (95% interval), <i>split half</i> ✓ when two random halves agree. "
        "<i>q controlled</i>: its effect with Δ length and the 5 strongest other clusters held equal. "
        "Labels are the n-grams distinctive of each cluster's strongest contexts; they never enter a statistic.</p>"
    )
    if g.empty:
        return intro
    top = strongest(g, TOP_GROUPS)
    n_pairs = int(g["n_pairs"].iloc[0])
    head = (
        "<tr><th>cluster</th><th>label</th><th>features</th><th>d_z</th><th>q</th><th>badge</th>"
        "<th>chosen only</th><th>rejected only</th><th>split half</th><th>q controlled</th>"
        "<th>aligned concepts (r)</th><th>members</th></tr>"
    )
    body = []
    for r in top.itertuples(index=False):
        aligned = ", ".join(f"<code>{esc(c)}</code> {num(v, '+.2f')}" for c, v in (r.aligned or []))
        body.append(
            f"<tr id='{esc(r.group)}'><td><code>{esc(r.group)}</code></td>"
            f"<td>{esc(parts.cluster_labels.get(r.group, r.label))}</td>"
            f"<td class='num'>{int(r.n_members):,}</td>"
            f"<td class='num'>{num(r.d_z, '+.2f')}</td><td class='num'>{num(r.q, 'q')}</td>"
            f"<td>{esc(r.badge)}</td><td class='num'>{_pct(r.n_chosen_only, n_pairs)}</td>"
            f"<td class='num'>{_pct(r.n_rejected_only, n_pairs)}</td><td>{'✓' if r.split_half else '✗'}</td>"
            f"<td class='num'>{num(r.q_ctrl, 'q')}</td><td>{aligned}</td>"
            f"<td>{_members(list(r.members))}</td></tr>"
        )
    return f"{intro}<table class='groups'>{head}{''.join(body)}</table>"


def glossary_html() -> str:
    """The numbers of the report in words (:data:`prefaudit.features.sentences.GLOSSARY`)."""
    from ..features.sentences import GLOSSARY

    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in GLOSSARY.items())
    return f"<details class='glossary'><summary>What the numbers mean</summary><dl>{items}</dl></details>"


def topics_html(parts: ConceptParts) -> str:
    """Topic labels and sizes, then the features and groups whose effect lives in some topics only."""
    if parts.topics is None:
        return _skipped(parts.topics_note)
    t = parts.topics
    rows = "".join(
        f"<tr><td class='num'>{int(r.topic)}</td><td>{esc(r.label)}</td><td class='num'>{int(r.n_pairs):,}</td>"
        f"<td>{esc(', '.join(map(str, r.terms)))}</td></tr>"
        for r in t.itertuples(index=False)
    )
    out = (
        f"<p class='small'>Prompts clustered by their user turns (TF-IDF, k-means): {esc(parts.topic_rule)}.</p>"
        f"<table class='topics'><tr><th>topic</th><th>label</th><th>pairs</th><th>distinctive words</th></tr>{rows}</table>"
    )
    if parts.by_topic is None:
        return out + _skipped(parts.topics_note)
    labels = dict(zip(t["topic"].astype(int), t["label"].astype(str), strict=True))
    out += (
        "<h3>Topic-specific effects</h3><p class='small'>Flagged: the Δ differs across topics "
        f"(Kruskal–Wallis, q_heterogeneity &lt; {ids.ALPHA}) and the effect is significant ({SIGNIFICANT}, BH "
        "over every topic × feature test) in some topics but not in all. Per topic: d_z, bold where "
        "significant.</p>"
    )
    for kind, long in (("features", parts.by_topic), ("groups", parts.groups_by_topic)):
        if long is None:
            continue
        out += _topic_specific_table(kind, topic_specific(long), labels)
    return out


def _topic_specific_table(kind: str, flagged: pd.DataFrame, labels: dict[int, str]) -> str:
    if flagged.empty:
        return f"<p class='small'>No topic-specific {kind}.</p>"
    shown = flagged.head(TOP_TOPIC_SPECIFIC)
    more = f", the {len(shown)} most heterogeneous listed" if len(flagged) > len(shown) else ""
    topics = sorted(labels)
    head = "".join(f"<th title='{esc(labels[k])}'>topic {k}</th>" for k in topics)
    body = []
    for r in shown.itertuples(index=False):
        cells = "".join(
            "<td class='num'>"
            + (
                f"<b>{num(r.d_z_by_topic.get(k), '+.2f')}</b>"
                if k in r.significant_in
                else num(r.d_z_by_topic.get(k), "+.2f")
            )
            + "</td>"
            for k in topics
        )
        sig = "; ".join(f"{k} ({esc(labels[k])})" for k in r.significant_in)
        body.append(
            f"<tr><td><code>{esc(r.feature)}</code></td><td>{esc(r.label)}</td>"
            f"<td class='num'>{num(r.q_heterogeneity, 'q')}</td>{cells}<td>{sig}</td></tr>"
        )
    return (
        f"<p><b>{len(flagged):,} topic-specific {kind}</b>{more}.</p><table class='topic-specific'>"
        f"<tr><th>{kind[:-1]}</th><th>label</th><th>q_heterogeneity</th>{head}<th>significant in</th></tr>"
        f"{''.join(body)}</table>"
    )


def _cut(text: Any) -> str:
    s = str(text)
    return esc(s[:DRIVER_CHARS]) + ("…" if len(s) > DRIVER_CHARS else "")


def drivers_html(session: AuditState, parts: ConceptParts) -> str:
    """For the strongest features and groups: the pairs carrying most of the predicted learning signal."""
    if not parts.drivers:
        return _skipped(parts.drivers_note)
    out = [
        "<p class='small'>A pair's share of a feature's predicted learning signal is gᵢΔᵢ / Σⱼ gⱼΔⱼ "
        "(gᵢ: its DPO gradient weight under the current weights). When a few pairs carry most of the "
        f"share, a handful of examples, not the data set, teach the feature. The top {DRIVER_PAIRS} "
        f"pairs of each; responses cut at {DRIVER_CHARS} characters.</p>"
    ]
    df = session.data.df
    for d in parts.drivers:
        fid, k = d.attrs["feature"], int(d.attrs["top_k"])
        top = d.head(k)
        label = session.label(fid) if not ids.is_group(fid) else _group_label(parts, fid)
        out.append(
            f"<h3 class='driver'><code>{esc(fid)}</code> {esc(label)}</h3><p class='small'>predicted signal "
            f"{num(d.attrs['signal_z'], '+.2f')} sd; without its top {k} pairs "
            f"{num(d.attrs['signal_without_top_k_z'], '+.2f')} sd; the top {k} carry "
            f"{num(100 * top['share'].sum(), '.0f')} % of it.</p>"
        )
        rows = "".join(
            f"<tr><td><code>{esc(r.pair_id)}</code></td><td class='num'>{num(r.delta, '+.3g')}</td>"
            f"<td class='num'>{num(100 * r.share, '.1f')} %</td>"
            f"<td class='text'>{_cut(df['chosen'].iloc[int(r.position)])}</td>"
            f"<td class='text'>{_cut(df['rejected'].iloc[int(r.position)])}</td></tr>"
            for r in top.itertuples(index=False)
        )
        out.append(
            "<table class='drivers'><tr><th>pair</th><th>Δ</th><th>share</th><th>chosen</th><th>rejected</th></tr>"
            f"{rows}</table>"
        )
    return "".join(out)


def _group_label(parts: ConceptParts, gid: str) -> str:
    g = parts.groups
    if g is None:
        return ""
    hit = g.loc[g["group"] == gid, "label"]
    return str(hit.iloc[0]) if len(hit) else ""
