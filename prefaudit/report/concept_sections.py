"""The report's sections beyond single features: the SAE's fit, groups, topics, drivers.

Each function takes the :class:`~.concepts.ConceptParts` gathered for the report and returns an
HTML fragment; every piece of dataset text (labels, prompts, responses, topic words) goes through
:func:`~.sections.esc`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .. import ids
from .concepts import DRIVER_PAIRS, TOP_GROUPS, TOP_TOPIC_SPECIFIC, ConceptParts, strongest, topic_specific
from .sections import SIGNIFICANT, esc, num

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


def groups_html(parts: ConceptParts) -> str:
    """The strongest groups by |d_z|, with their members and the explained-by (controlled) effect."""
    g = parts.groups
    if g is None:
        return _skipped(parts.groups_note)
    n_sig = int((g["q"] < ids.ALPHA).sum())
    intro = (
        f"<p class='small'>{len(g):,} groups of co-activating SAE features, {n_sig:,} with {SIGNIFICANT}; "
        f"{int(g.attrs.get('n_unclustered', 0)):,} features are in no group (active in fewer than "
        f"{esc(g.attrs.get('min_active', '–'))} responses). A group's score is the mean of its members' "
        "standardised values. <i>d_z controlled</i>: the group's effect with Δ length and the strongest "
        "other groups (listed) regressed out, in sd units — what remains when they explain the rest.</p>"
    )
    if g.empty:
        return intro
    top = strongest(g, TOP_GROUPS)
    head = (
        "<tr><th>group</th><th>label</th><th>members</th><th>d_z</th><th>q</th><th>d_z controlled</th>"
        "<th>q controlled</th><th>controlled for</th><th>aligned concepts (r)</th></tr>"
    )
    body = []
    for r in top.itertuples(index=False):
        aligned = ", ".join(f"<code>{esc(c)}</code> {num(v, '+.2f')}" for c, v in (r.aligned or []))
        ctrl = ", ".join(f"<code>{esc(c)}</code>" for c in r.controlled_for)
        body.append(
            f"<tr><td><code>{esc(r.group)}</code></td><td>{esc(r.label)}</td>"
            f"<td>{int(r.n_members)}: {_members(list(r.members))}</td>"
            f"<td class='num'>{num(r.d_z, '+.2f')}</td><td class='num'>{num(r.q, 'q')}</td>"
            f"<td class='num'>{num(r.d_z_controlled, '+.2f')}</td><td class='num'>{num(r.q_ctrl, 'q')}</td>"
            f"<td>{ctrl}</td><td>{aligned}</td></tr>"
        )
    return f"{intro}<table class='groups'>{head}{''.join(body)}</table>"


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


def drivers_html(session: Any, parts: ConceptParts) -> str:
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
