"""What the report and ``summary.json`` say beyond single features: sentences, clusters, topics, drivers, the SAE's fit.

The clusters (``session.groups()``: co-firing clusters with ids ``group:N``) lead: a few plain
sentences from their numbers (:mod:`prefaudit.features.sentences`), then the strongest clusters.

:func:`gather` asks the session for each part. A part the session has not computed yet is
computed when ``compute`` names it (the session caches it, so the CLI's summary reads the same
values afterwards), and otherwise left out with a note that says why and how to get it.
:func:`concept_summary` turns the parts into plain JSON; the HTML is :mod:`.concept_sections`.

Topic-specific effects: a feature or group is *flagged* when its Δ differs across topics
(``q_heterogeneity`` < α: Kruskal–Wallis across topics, BH across features; groups: across
groups) **and** it is significant (q < α) in at least one topic but not in all of them.

Example
-------
>>> parts = gather(session, compute=())          # doctest: +SKIP
>>> concept_summary(parts)["fit"]                # doctest: +SKIP
{'explained_variance': 0.84, 'l0': 32.0, ...}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import ids
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..audit.protocol import AuditState

#: What :func:`gather` may compute when the session has not: ``groups``, ``topics`` (clustering
#: and ``test(by="topic")``) and ``fit`` (``sae_fit()``, which reads responses through the model).
PARTS: tuple[str, ...] = ("groups", "topics", "fit")
TOP_GROUPS = 10  # groups listed, strongest |d_z| first
TOP_TOPIC_SPECIFIC = 15  # topic-specific features and groups listed (each kind)
DRIVER_FEATURES, DRIVER_GROUPS, DRIVER_PAIRS = 3, 2, 5
#: Bootstrap draws of the groups' per-topic tests: only p, q and d_z are used there, not the CI.
GROUP_TOPIC_BOOT = 100


@dataclass
class ConceptParts:
    """The parts of the report beyond features; ``*_note`` says why a part is missing."""

    fit: Any = None
    fit_note: str = ""
    groups: pd.DataFrame | None = None
    groups_note: str = ""
    topics: pd.DataFrame | None = None  # session.topics.labels()
    topic_rule: str = ""
    by_topic: pd.DataFrame | None = None  # features: session.topics.results("topic")
    groups_by_topic: pd.DataFrame | None = None  # groups: the same test on group scores
    topics_note: str = ""
    drivers: list[pd.DataFrame] = field(default_factory=list)
    drivers_note: str = ""
    #: What a person reads first: (sentence, group id or None), the strongest clusters each way,
    #: then the SAE's fit and the topics (:func:`overview`).
    sentences: list[tuple[str, str | None]] = field(default_factory=list)
    #: One sentence per cluster: ``group``, ``lean``, ``sentence`` (None without clusters).
    cluster_sentences: pd.DataFrame | None = None
    #: Group id → the label shown: a person's label where set, else the distinctive contexts'.
    cluster_labels: dict[str, str] = field(default_factory=dict)


#: What each computed part does, in words for a progress line.
STAGES = {
    "fit": "measuring the SAE's fit on sampled responses",
    "groups": "clustering features by co-firing and reading their labels",
    "topics": "clustering prompts into topics and testing within each",
    "drivers": "ranking the pairs that drive the strongest signals",
}


def gather(
    session: AuditState,
    compute: Iterable[str] = PARTS,
    stage: Callable[[str], AbstractContextManager[Any]] | None = None,
) -> ConceptParts:
    """Collect groups, topics, drivers and the fit of ``session`` (computing the parts in ``compute``).

    ``stage(what)`` wraps each part that is computed (a context manager, e.g. one that prints what
    runs and how long it took): these take seconds to minutes, and nobody should wait in silence.
    """
    compute = tuple(compute)
    unknown = sorted(set(compute) - set(PARTS))
    if unknown:
        raise ConfigError(f"compute={unknown}: choose among {', '.join(PARTS)}.")
    parts = ConceptParts()
    for name, part in (("fit", _gather_fit), ("groups", _gather_groups), ("topics", _gather_topics)):
        with stage(STAGES[name]) if stage and name in compute else nullcontext():
            part(session, parts, name in compute)
    with stage(STAGES["drivers"]) if stage and compute else nullcontext():
        _gather_drivers(session, parts)
    overview(session, parts)
    return parts


def overview(session: AuditState, parts: ConceptParts) -> list[tuple[str, str | None]]:
    """Fill ``parts.sentences`` and ``parts.cluster_sentences`` from the gathered parts; returns the sentences.

    The strongest significant clusters leaning each way (:func:`~prefaudit.features.sentences.overview_sentences`,
    labelled as :meth:`~prefaudit.audit.groups.Groups.label` says: a person's label first), then
    how well the SAE fits and how clearly the prompts separate, where those were gathered.
    """
    from ..features.sentences import cluster_sentences, fit_sentence, overview_sentences, topics_sentence

    out: list[tuple[str, str | None]] = []
    g = parts.groups
    if g is not None and len(g):
        table = g.rename(columns={"group": "cluster"})  # the sentences read a cluster table
        labels = [session.groups.label(k) for k in g["group"]]
        parts.cluster_labels = dict(zip(g["group"], labels, strict=True))
        lc, lr = session.space.lengths()
        varies = bool(np.ptp(np.asarray(lc, float) - np.asarray(lr, float)) > 0)
        per = cluster_sentences(table, labels, length_controlled=varies)
        parts.cluster_sentences = per.rename(columns={"cluster": "group"})
        out += overview_sentences(per, table)
    elif g is not None:
        out.append(("No SAE features fire together often enough to form a cluster here.", None))
    if parts.fit is not None:
        out.append((fit_sentence(parts.fit.explained_variance, parts.fit.l0), None))
    if parts.topics is not None:
        k = len(parts.topics)
        out.append((topics_sentence(k, parts.topics.attrs.get("silhouette", {}).get(k)), None))
    parts.sentences = out
    return out


def fit_line(session: AuditState) -> str | None:
    """One line on the SAE's fit for the session's repr: the measured fit, or how to measure it."""
    if not session.uses_sae:
        return None
    fit = session.lens_fit.measured()
    if fit is None:
        return "SAE fit: not measured yet (session.sae_fit() reads 128 sampled responses)"
    return f"{fit}"


def repr_html(session: AuditState) -> str:
    """The session's notebook repr: its one-line summary and the fit (cached only), a low fit in red."""
    import html

    head = html.escape(repr(session).split("\n", 1)[0])
    if not session.uses_sae:
        return f"<div><code>{head}</code></div>"
    fit = session.lens_fit.measured()
    if fit is None:
        body = "SAE fit: not measured yet — <code>session.sae_fit()</code> reads 128 sampled responses."
    else:
        body = html.escape(str(fit).split("\n", 1)[0])
        if fit.warning:
            body += f"<div style='color:#b00020;font-weight:600'>⚠ {html.escape(fit.warning)}</div>"
    return f"<div><code>{head}</code><div style='font-size:12px'>{body}</div></div>"


# ---------------------------------------------------------------------- parts
def _gather_fit(session: AuditState, parts: ConceptParts, compute: bool) -> None:
    if not session.uses_sae:
        parts.fit_note = "Concepts-only audit: there is no SAE whose fit could be measured."
        return
    parts.fit = session.lens_fit.measured()
    if parts.fit is None and compute:
        parts.fit = session.sae_fit()
    if parts.fit is None:
        parts.fit_note = (
            "Not measured: session.sae_fit() reads 128 sampled responses through the model and reports it."
        )


def _gather_groups(session: AuditState, parts: ConceptParts, compute: bool) -> None:
    if not session.uses_sae:
        parts.groups_note = "Concepts-only audit: groups cluster SAE features, and there are none."
        return
    parts.groups = session.groups() if compute else session.groups.computed()
    if parts.groups is None:
        parts.groups_note = "Not computed: session.groups() clusters the SAE features into groups."


def _gather_topics(session: AuditState, parts: ConceptParts, compute: bool) -> None:
    long = session.topics.results("topic")
    if long is None and not compute:
        parts.topics_note = (
            "Not computed: session.topics() clusters the prompts, session.test(by='topic') tests each topic."
        )
        return
    labels = session.topics.labels()
    parts.topics, parts.topic_rule = labels, str(labels.attrs.get("rule", ""))
    if long is None:
        if len(labels) < 2:
            parts.topics_note = f"One topic only ({parts.topic_rule}): nothing to compare across topics."
            return
        test = session.results.attrs.get("test", "wilcoxon") if session.results is not None else "wilcoxon"
        long = session.topics.test(test=test)
    parts.by_topic = long
    if parts.groups is not None and len(parts.groups):
        parts.groups_by_topic = group_topic_tests(
            session, parts.groups, session.topics.assignment(), list(labels["label"]), long.attrs.get("test")
        )


def _gather_drivers(session: AuditState, parts: ConceptParts) -> None:
    res = session.results
    picks: list[str] = []
    if res is not None:
        picks += strongest(res[res["q"] < ids.ALPHA], DRIVER_FEATURES)["feature"].tolist()
    if parts.groups is not None:
        picks += strongest(parts.groups[parts.groups["q"] < ids.ALPHA], DRIVER_GROUPS)["group"].tolist()
    parts.drivers = [session.drivers(f, top_k=DRIVER_PAIRS) for f in picks]
    if not picks:
        parts.drivers_note = f"No feature or group with q < {ids.ALPHA}: no signal to attribute to pairs."


def strongest(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` rows of largest |d_z| (ties in table order)."""
    return table.reindex(table["d_z"].abs().sort_values(ascending=False, kind="stable").index).head(n)


# ---------------------------------------------------------------------- groups across topics
def group_topic_tests(
    session: AuditState,
    groups: pd.DataFrame,
    assignment: np.ndarray,
    topic_labels: list[str],
    test: str | None,
) -> pd.DataFrame:
    """The groups tested within each topic, as ``test(by="topic")`` tests features.

    One row per topic × group: ``topic, topic_label`` and :func:`prefaudit.stats.paired_tests` of
    the group scores on that topic's pairs; ``q`` is BH over all topic × group tests (untested:
    q = 1), ``p_heterogeneity`` Kruskal–Wallis of the group's Δ across topics, ``q_heterogeneity``
    its BH over the groups whose Δ varies.
    """
    from ..audit.topics import tests_within

    gids = groups["group"].tolist()
    columns = [ids.parse(g)[1] for g in gids]
    chosen, rejected = (m[:, columns].toarray() for m in session.groups.score_matrices())
    lc, lr = session.space.lengths()
    return tests_within(
        chosen,
        rejected,
        chosen - rejected,
        assignment,
        topic_labels,
        "topic",
        lengths=(np.asarray(lc), np.asarray(lr)),
        test=test or "wilcoxon",
        n_boot=GROUP_TOPIC_BOOT,
        names=gids,
        source="group",
        labels=groups["label"].tolist(),
    )


def topic_specific(long: pd.DataFrame, alpha: float = ids.ALPHA) -> pd.DataFrame:
    """The flagged rows of a by-topic table, one per feature or group, most heterogeneous first.

    Columns: ``feature``, ``label``, ``p_heterogeneity``, ``q_heterogeneity``, ``significant_in``
    (topics with q < ``alpha``), ``d_z_by_topic`` ({topic: d_z}), ``q_by_topic`` and ``max_abs_d_z``.
    """
    cols = ["feature", "label", "p_heterogeneity", "q_heterogeneity", "significant_in"]
    cols += ["d_z_by_topic", "q_by_topic", "max_abs_d_z"]
    if long is None or long.empty:
        return pd.DataFrame(columns=cols)
    n_topics = long["topic"].nunique()
    # The filter is vectorised (thousands of features × topics); only the flagged few are looped.
    n_sig = (long["q"] < alpha).groupby(long["feature"], sort=False).sum()
    q_first = long.groupby("feature", sort=False)["q_heterogeneity"].first()
    keep = n_sig.index[(q_first.reindex(n_sig.index) < alpha) & (n_sig > 0) & (n_sig < n_topics)]
    rows = []
    for fid, sub in long[long["feature"].isin(keep)].groupby("feature", sort=False):
        q_het = float(sub["q_heterogeneity"].iloc[0])
        sig = sub.loc[sub["q"] < alpha, "topic"].astype(int).tolist()
        rows.append(
            {
                "feature": fid,
                "label": str(sub["label"].iloc[0]),
                "p_heterogeneity": float(sub["p_heterogeneity"].iloc[0]),
                "q_heterogeneity": q_het,
                "significant_in": sig,
                "d_z_by_topic": dict(zip(sub["topic"].astype(int), sub["d_z"].astype(float), strict=True)),
                "q_by_topic": dict(zip(sub["topic"].astype(int), sub["q"].astype(float), strict=True)),
                "max_abs_d_z": float(sub.loc[sub["q"] < alpha, "d_z"].abs().max()),
            }
        )
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["q_heterogeneity", "max_abs_d_z"], ascending=[True, False], kind="stable")


# ---------------------------------------------------------------------- summary.json
def lead_summary(parts: ConceptParts) -> dict[str, Any]:
    """What ``summary.json`` leads with, keys named for what they hold.

    ``sentences`` (``{"text", "group"}``, what a person reads first), ``clusters`` (counts and
    the strongest clusters with their label, size, effect, badge and sentence), then ``fit``,
    ``topics`` and ``drivers`` (as :func:`concept_summary` has them).
    """
    rest = concept_summary(parts)
    return {
        "sentences": [{"text": t, "group": g} for t, g in parts.sentences],
        "clusters": _clusters_summary(parts),
        "fit": rest["fit"],
        "topics": rest["topics"],
        "drivers": rest["drivers"],
    }


def _clusters_summary(parts: ConceptParts) -> dict[str, Any]:
    g = parts.groups
    if g is None:
        return {"skipped": parts.groups_note}
    per = parts.cluster_sentences
    sentence = {} if per is None else dict(zip(per["group"], per["sentence"], strict=True))
    keys = ("n_members", "d_z", "q", "badge", "fire_score", "fire_ci_low", "fire_ci_high", "n_chosen_only")
    keys += ("n_rejected_only", "n_both", "split_half", "d_z_controlled", "q_ctrl")
    return {
        "n_clusters": len(g),
        "n_significant": int((g["q"] < ids.ALPHA).sum()),
        "n_unclustered": int(g.attrs.get("n_unclustered", 0)),
        "unclustered_by_reason": dict(g.attrs.get("unclustered_by_reason", {})),
        "label_reader": g.attrs.get("label_reader"),
        "top": [
            {
                "group": r["group"],
                **_shown_label(parts, r),
                **{k: _plain(r[k]) for k in keys},
                "controlled_for": list(r["controlled_for"]),
                "sentence": sentence.get(r["group"], ""),
                "members": list(r["members"]),
            }
            for r in strongest(g, TOP_GROUPS).to_dict("records")
        ],
    }


def _shown_label(parts: ConceptParts, row: dict[str, Any]) -> dict[str, str]:
    shown = parts.cluster_labels.get(row["group"], row["label"])
    return {"label": shown, "label_kind": row["label_kind"] if shown == row["label"] else "set by a person"}


def _plain(x: Any) -> Any:
    if isinstance(x, (bool, np.bool_, str)):
        return bool(x) if isinstance(x, np.bool_) else x
    if isinstance(x, (int, np.integer)):
        return int(x)
    return _f(x)


def concept_summary(parts: ConceptParts) -> dict[str, Any]:
    """Plain-JSON summaries of the parts: ``summary.json``'s deprecated ``concepts`` key (one more release).

    Misnamed (it holds the fit, groups, topics and drivers, not the text concepts):
    :func:`lead_summary` carries the same under keys named for what they hold.
    """
    return {
        "fit": _fit_summary(parts),
        "groups": _groups_summary(parts),
        "topics": _topics_summary(parts),
        "drivers": [_driver_summary(d) for d in parts.drivers] or parts.drivers_note,
    }


def _fit_summary(parts: ConceptParts) -> dict[str, Any]:
    f = parts.fit
    if f is None:
        return {"skipped": parts.fit_note}
    keys = ("explained_variance", "l0", "dead_fraction", "mse_per_token", "n_tokens", "n_responses", "seed")
    return {**{k: getattr(f, k) for k in keys}, "warning": f.warning}


def _groups_summary(parts: ConceptParts) -> dict[str, Any]:
    g = parts.groups
    if g is None:
        return {"skipped": parts.groups_note}
    top = strongest(g, TOP_GROUPS)
    return {
        "n_groups": len(g),
        "n_significant": int((g["q"] < ids.ALPHA).sum()),
        "n_unclustered": int(g.attrs.get("n_unclustered", 0)),
        "top": [
            {
                "group": r.group,
                "label": r.label,
                "n_members": int(r.n_members),
                "members": list(r.members),
                "d_z": _f(r.d_z),
                "q": _f(r.q),
                "d_z_controlled": _f(r.d_z_controlled),
                "q_ctrl": _f(r.q_ctrl),
                "controlled_for": list(r.controlled_for),
            }
            for r in top.itertuples(index=False)
        ],
    }


def _topics_summary(parts: ConceptParts) -> dict[str, Any]:
    if parts.topics is None:
        return {"skipped": parts.topics_note}
    out: dict[str, Any] = {
        "rule": parts.topic_rule,
        "topics": [
            {"topic": int(r.topic), "label": r.label, "n_pairs": int(r.n_pairs)}
            for r in parts.topics.itertuples(index=False)
        ],
    }
    if parts.by_topic is None:
        out["skipped"] = parts.topics_note
        return out
    for key, long in (("features", parts.by_topic), ("groups", parts.groups_by_topic)):
        flagged = topic_specific(long)
        out[f"n_topic_specific_{key}"] = len(flagged) if long is not None else None
        out[f"topic_specific_{key}"] = [
            {
                "id": r.feature,
                "label": r.label,
                "q_heterogeneity": _f(r.q_heterogeneity),
                "significant_in": list(r.significant_in),
                "d_z_by_topic": {str(t): _f(v) for t, v in r.d_z_by_topic.items()},
            }
            for r in flagged.head(TOP_TOPIC_SPECIFIC).itertuples(index=False)
        ]
    return out


def _driver_summary(d: pd.DataFrame) -> dict[str, Any]:
    top = d.head(int(d.attrs["top_k"]))
    return {
        "feature": d.attrs["feature"],
        "signal_z": _f(d.attrs["signal_z"]),
        "signal_without_top_k_z": _f(d.attrs["signal_without_top_k_z"]),
        "top_k": int(d.attrs["top_k"]),
        "top_k_share": _f(top["share"].sum()) if len(top) else None,
        "top_pairs": [str(p) for p in top["pair_id"]],
    }


def _f(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None
