"""Did the audit recover what was planted? The operational definitions used by tests and benchmarks.

An SAE feature **belongs to** a planted concept when, among the responses where it fires most
strongly (its ``n_top`` largest pooled values over both sides), the token at which it peaked
(``SidePooled.top_pos``, aligned with ``values.data``) lies inside that concept's planted
character span in at least ``min_fraction`` of them. A token lies inside a span when their
character ranges overlap (tokens often carry a leading space or newline).

The **topic-conditional** bias (:data:`~prefaudit.demo.design.TOPIC_PLANTED`, planted only on
the prompts that ask for resources) is judged within the prompt topics the audit found: its
*planted topic* is the topic holding most of those prompts (:func:`planted_topic`), and
:func:`topic_specificity` reads one feature's or group's rows of a ``test(by="topic")``-style
long table — significant in the planted topic, in no other, and heterogeneity p.

A planted concept is **recovered** when some feature that belongs to it is significant
(``q < alpha``) in the planted direction and ranks among the top ``top`` SAE features by ``|d_z|``.

Example
-------
>>> rows = recovery_table(session, pairs)   # doctest: +SKIP
>>> rows.set_index("concept").loc["flattery", "best_rank"] <= 20   # doctest: +SKIP
True
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import ids
from .design import CONCEPT_OF, PLANTED, TOPIC_PLANTED

if TYPE_CHECKING:
    from ..audit.protocol import AuditState

SIDES = ("chosen", "rejected")


def token_offsets(tokenizer: Any, text: str, max_tokens: int) -> list[tuple[int, int]]:
    """Character range of each response token, tokenised as :meth:`Backbone.response_ids` does."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [tuple(o) for o in enc["offset_mapping"][:max_tokens]]


def _entries(side: Any, feature: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, pooled values and peak positions of one feature's non-zero entries on one side."""
    v = side.values
    rows = np.repeat(np.arange(v.shape[0]), np.diff(v.indptr))
    hit = v.indices == feature
    return rows[hit], v.data[hit], side.top_pos[hit]


def peak_span_fraction(
    encoded: Any,
    df: pd.DataFrame,
    tokenizer: Any,
    feature: int,
    concept: str,
    *,
    n_top: int = 20,
    max_tokens: int = 256,
) -> tuple[float, int]:
    """Fraction of the feature's ``n_top`` strongest responses whose peak token is in a ``concept`` span.

    Returns ``(fraction, n)`` where ``n`` is how many responses were examined (fewer than
    ``n_top`` when the feature rarely fires).
    """
    hits = []
    for side in SIDES:
        rows, vals, pos = _entries(encoded.side(side), feature)
        hits += [(float(val), side, int(r), int(p)) for r, val, p in zip(rows, vals, pos, strict=True)]
    hits.sort(key=lambda h: -h[0])
    top = hits[:n_top]
    inside = 0
    for _, side, r, p in top:
        text = df[side].iloc[r]
        offsets = token_offsets(tokenizer, text, max_tokens)
        a, b = offsets[p]
        spans = df[f"{side}_spans"].iloc[r].get(concept, [])
        inside += any(a < e and s < b for s, e in spans)
    return (inside / len(top) if top else 0.0), len(top)


def recovery_table(
    session: AuditState,
    *,
    concepts: Sequence[str] = PLANTED,
    top: int = 20,
    alpha: float = 0.05,
    n_top: int = 20,
    min_fraction: float = 0.5,
    search: int = 200,
) -> pd.DataFrame:
    """One row per planted concept: its text concepts' d_z/q and the best SAE feature that belongs to it.

    ``session`` is an encoded and tested :class:`~prefaudit.session.AuditSession` on demo pairs.
    SAE features are examined in order of ``|d_z|`` among those with ``q < alpha`` and positive
    d_z (the planted direction), up to ``search`` of them.
    """
    res = session.results
    df = session.data.df
    sae = res[res["source"] == "sae"].copy()
    sae["abs_dz"] = sae["d_z"].abs()
    sae = sae.sort_values("abs_dz", ascending=False).reset_index(drop=True)
    sae["rank"] = np.arange(1, len(sae) + 1)
    candidates = sae[(sae["q"] < alpha) & (sae["d_z"] > 0)].head(search)
    tok = session.backbone.tokenizer
    max_tokens = session.backbone.max_response_tokens
    concept_rows = res.set_index("feature")
    out = []
    for concept in concepts:
        row: dict[str, Any] = {"concept": concept}
        for name in CONCEPT_OF[concept]:
            c = concept_rows.loc[f"concept:{name}"]
            row[f"{name}_d_z"], row[f"{name}_q"] = float(c["d_z"]), float(c["q"])
        best = None
        for cand in candidates.itertuples():
            f = int(str(cand.feature).split(":")[1])
            frac, n = peak_span_fraction(
                session.encoded, df, tok, f, concept, n_top=n_top, max_tokens=max_tokens
            )
            if frac >= min_fraction and n >= min(n_top, 5):
                best = (cand, frac)
                break
        if best is not None:
            cand, frac = best
            row.update(
                feature=cand.feature,
                label=cand.label,
                best_rank=int(cand.rank),
                d_z=float(cand.d_z),
                q=float(cand.q),
                peak_in_span=frac,
            )
        else:
            row.update(feature=None, label="", best_rank=None, d_z=np.nan, q=np.nan, peak_in_span=np.nan)
        row["recovered"] = best is not None and row["best_rank"] <= top
        out.append(row)
    return pd.DataFrame(out)


def best_group(session: AuditState, bias: str) -> dict[str, Any]:
    """The feature group whose per-response score correlates most with a planted element's truth.

    Truth per response: ``chosen_<bias>`` / ``rejected_<bias>`` of the demo pairs. Returns
    ``group``, ``r_response`` (that largest Pearson r over the 2n responses) and ``r_delta`` (r
    of the group's per-pair Δ score with the ground-truth Δ).
    """
    df = session.data.df
    truth = np.r_[df[f"chosen_{bias}"].to_numpy(float), df[f"rejected_{bias}"].to_numpy(float)]
    chosen, rejected = (m.toarray() for m in session.groups.score_matrices())  # column k: group:k
    scores = np.vstack([chosen, rejected])
    rs = np.array([_corr(scores[:, k], truth) for k in range(scores.shape[1])])
    if not np.isfinite(rs).any():
        raise ValueError(f"no group score varies with the planted {bias!r}")
    k = int(np.nanargmax(rs))
    dtruth = df[f"chosen_{bias}"].to_numpy(float) - df[f"rejected_{bias}"].to_numpy(float)
    return {
        "group": ids.group_id(k),
        "r_response": float(rs[k]),
        "r_delta": _corr(chosen[:, k] - rejected[:, k], dtruth),
    }


#: Every planted element the cluster targets are judged on: the three planted everywhere and the topic-conditional one.
ALL_PLANTED: tuple[str, ...] = (*PLANTED, *TOPIC_PLANTED)
_LABEL_WORD = re.compile(r"[^\W\d_]{3,}")  # a word of three or more letters


def planted_words(df: pd.DataFrame, bias: str) -> set[str]:
    """The words (≥ 3 letters, lower-cased) inside ``bias``'s planted character spans, either side."""
    words: set[str] = set()
    for side in SIDES:
        for text, spans in zip(df[side], df[f"{side}_spans"], strict=True):
            for a, b in spans.get(bias, []):
                words.update(w.lower() for w in _LABEL_WORD.findall(text[a:b]))
    return words


def cluster_targets(session: AuditState, *, top: int = 10, alpha: float = 0.05) -> dict[str, Any]:
    """The issue's targets for the demo's clusters (``session.groups()``), measured, not judged.

    For each planted element (:data:`ALL_PLANTED`), among the ``top`` groups by |d_z|: the one
    whose per-pair Δ score correlates most with the ground-truth Δ (``chosen_<b>`` −
    ``rejected_<b>``), its rank, r, label and the label's words that are words of the planted
    text (:func:`planted_words`; ``matched``: r ≥ 0.5 and at least one such word). Then
    ``n_for_90``: how many groups, taken in order of q, hold 90% of the significant SAE features
    (``session.results``, q < ``alpha``; None when all groups together hold fewer), and
    ``n_significant_groups``.
    """
    df = session.data.df
    table = session.groups()
    order = table["d_z"].abs().sort_values(ascending=False, kind="stable").index[:top]
    chosen, rejected = (m.toarray() for m in session.groups.score_matrices())
    rows = []
    for bias in ALL_PLANTED:
        truth = df[f"chosen_{bias}"].to_numpy(float) - df[f"rejected_{bias}"].to_numpy(float)
        rs = {int(k): _corr(chosen[:, k] - rejected[:, k], truth) for k in order}
        best = max(rs, key=lambda k: -np.inf if not np.isfinite(rs[k]) else rs[k]) if rs else None
        words = planted_words(df, bias)
        if best is None:
            rows.append({"concept": bias, "group": None, "rank": None, "r_delta": np.nan, "label": ""})
            continue
        label = str(table.at[best, "label"])
        shared = sorted({w.lower() for w in _LABEL_WORD.findall(label)} & words)
        rows.append(
            {
                "concept": bias,
                "group": table.at[best, "group"],
                "rank": int(list(order).index(best)) + 1,
                "r_delta": rs[best],
                "d_z": float(table.at[best, "d_z"]),
                "q": float(table.at[best, "q"]),
                "badge": table.at[best, "badge"],
                "n_members": int(table.at[best, "n_members"]),
                "label": label,
                "planted_words_in_label": shared,
                "matched": bool(rs[best] >= 0.5 and shared),
            }
        )
    res = session.results
    sig = set(res.loc[(res["q"] < alpha) & (res["source"] == "sae"), "feature"])
    covered, n_for_90 = 0, None
    for j, members in enumerate(table.sort_values("q", kind="stable")["members"], start=1):
        covered += len(sig.intersection(members))
        if sig and covered >= 0.9 * len(sig):
            n_for_90 = j
            break
    return {
        "concepts": pd.DataFrame(rows),
        "n_groups": len(table),
        "n_significant_groups": int((table["q"] < alpha).sum()),
        "n_significant_sae": len(sig),
        "n_in_groups": len(sig.intersection(f for m in table["members"] for f in m)),
        "n_for_90": n_for_90,
    }


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def planted_topic(assignment: Sequence[int], asks: Sequence[bool]) -> dict[str, Any]:
    """The topic holding most of the pairs whose prompt asks for resources, and how cleanly.

    Returns ``topic``, ``n_pairs`` (in that topic), ``n_asks`` (of them, asking for resources),
    ``purity`` (``n_asks / n_pairs``) and ``recall`` (``n_asks`` / all pairs asking).
    """
    assignment = np.asarray(assignment, dtype=np.int64)
    asks = np.asarray(asks, dtype=bool)
    if not asks.any():
        raise ValueError("no pair asks for resources: the topic-conditional bias is not in these pairs")
    counts = np.bincount(assignment[asks], minlength=int(assignment.max()) + 1)
    topic = int(np.argmax(counts))
    n_pairs = int((assignment == topic).sum())
    return {
        "topic": topic,
        "n_pairs": n_pairs,
        "n_asks": int(counts[topic]),
        "purity": float(counts[topic] / n_pairs),
        "recall": float(counts[topic] / asks.sum()),
    }


def topic_specificity(long: pd.DataFrame, name: str, topic: int, *, alpha: float = 0.05) -> dict[str, Any]:
    """Is ``name`` significant in ``topic`` only? Read from a long per-topic table.

    ``long`` has one row per topic × feature (``test(by="topic")``) or topic × group (the
    report's ``group_topic_tests``); both name the feature or group in their ``feature`` column. Returns the planted topic's ``d_z`` and
    ``q``, the smallest ``q`` in any other topic (``q_other_min``, with its topic), ``p_heterogeneity``
    and ``specific``: ``q < alpha`` in the planted topic and ``q >= alpha`` in every other.
    """
    rows = long[long["feature"] == name]
    if rows.empty:
        raise KeyError(f"{name!r} is not in the table's feature column")
    here = rows[rows["topic"] == topic]
    if here.empty:
        raise KeyError(f"topic {topic} has no row for {name!r}")
    other = rows[rows["topic"] != topic]
    i_min = other["q"].idxmin() if len(other) else None
    q_here = float(here["q"].iloc[0])
    q_other = float(other["q"].min()) if len(other) else float("nan")
    return {
        "feature": name,
        "topic": int(topic),
        "d_z": float(here["d_z"].iloc[0]),
        "q": q_here,
        "q_other_min": q_other,
        "q_other_topic": None if i_min is None else int(other.loc[i_min, "topic"]),
        "p_heterogeneity": float(rows["p_heterogeneity"].iloc[0]),
        "specific": bool(q_here < alpha and not (q_other < alpha)),
    }


def swap_encoded(encoded: Any, mask: Sequence[bool]) -> Any:
    """Pooled features with chosen and rejected exchanged in the pairs where ``mask`` is true.

    Each response is read after its own prompt whichever side it is on, so swapping the labels
    of a pair swaps its pooled rows exactly: the null check needs no second model pass.
    """
    import scipy.sparse as sp

    from ..features.encoded import EncodedFeatures, SidePooled

    mask = np.asarray(mask, dtype=bool)
    a, b = encoded.chosen, encoded.rejected

    def pick(first: Any, second: Any) -> Any:
        parts = {k: [] for k in ("data", "indices", "top_pos", "top_token")}
        indptr = [0]
        for i, use_second in enumerate(mask):
            src = second if use_second else first
            lo, hi = src.values.indptr[i], src.values.indptr[i + 1]
            parts["data"].append(src.values.data[lo:hi])
            parts["indices"].append(src.values.indices[lo:hi])
            parts["top_pos"].append(src.top_pos[lo:hi])
            parts["top_token"].append(src.top_token[lo:hi])
            indptr.append(indptr[-1] + hi - lo)
        rows = np.where(mask, 1, 0)
        return SidePooled(
            values=sp.csr_matrix(
                (np.concatenate(parts["data"]), np.concatenate(parts["indices"]), np.asarray(indptr)),
                shape=first.values.shape,
            ),
            top_token=np.concatenate(parts["top_token"]),
            top_pos=np.concatenate(parts["top_pos"]),
            mean_act=np.where(rows[:, None] == 1, second.mean_act, first.mean_act),
            n_tokens=np.where(mask, second.n_tokens, first.n_tokens),
            truncated=np.where(mask, second.truncated, first.truncated),
        )

    return EncodedFeatures(
        chosen=pick(a, b), rejected=pick(b, a), pooling=encoded.pooling, meta=dict(encoded.meta)
    )
