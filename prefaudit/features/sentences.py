"""Plain sentences from the numbers: what a newcomer reads first about each concept (cluster).

Pure: a row of :attr:`prefaudit.features.cluster_stats.ClusterAudit.table` (and its label) in,
one sentence out; the CLI, the report and the app put them first and link each to its cluster.
Which numbers a sentence uses, and why:

* the direction and size are the cluster score's **d_z** and its **q** (BH across clusters) —
  the effect the audit tests; "more of" when q < ``alpha``, "no reliable difference" otherwise;
* how often is the paper's firing count: the share of pairs where the concept fires in the
  chosen response only and in the rejected only, and the net difference with its exact 95%
  interval (``fire_ci_low``/``fire_ci_high``) — in pairs and percent, units anyone reads;
* whether it survives the controls: ``q_ctrl`` of the explained-by model (length and the other
  strongest clusters held equal), said in words either way;
* ``badge == "both"`` and a split-half ✗ get a clause; the size ("groups 37 features") ends it.

>>> row = {"cluster": "cluster:0", "n_members": 37, "d_z": 0.41, "q": 0.0004, "n_chosen_only": 46,
...        "n_rejected_only": 12, "n_both": 10, "n_neither": 32, "fire_ci_low": 0.25,
...        "fire_ci_high": 0.43, "badge": "chosen", "split_half": True, "q_ctrl": 0.003,
...        "controlled_for": ["cluster:1", "cluster:2"]}
>>> print(cluster_sentence(row, label="markdown headings"))
Chosen responses have more “markdown headings” than rejected ones (d_z +0.41, q < 0.001): it fires in the chosen response only in 46% of pairs and in the rejected only in 12% (net +34 points, 95% CI +25 to +43). It survives the controls: with length and 2 other concepts held equal it stays significant (q 0.003). This concept groups 37 features.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from prefaudit.ids import ALPHA

#: Short explanations of the numbers, for tooltips and the report's glossary.
GLOSSARY: dict[str, str] = {
    "d_z": "effect size: the mean chosen − rejected difference divided by its standard deviation over "
    "pairs; ±0.2 is small, ±0.5 medium, ±0.8 large. Positive: chosen responses have more.",
    "q": "the p-value corrected for testing many features or concepts at once (Benjamini–Hochberg); "
    "below 0.05 counts as significant.",
    "q_ctrl": "q of the effect that remains when length and the strongest other concepts are held equal.",
    "EV": "explained variance: how much of the model's activations the SAE reconstructs on these "
    "responses (1 is perfect; below 0.7 its features miss much of what the model reads).",
    "L0": "how many SAE features are active on a token, on average.",
    "share": "a pair's share of the learning signal: positive pairs push the feature the way the "
    "data leans, negative ones against it.",
    "badge": "chosen / rejected: the concept fires in one side only in reliably more pairs (95% "
    "interval); both: it fires on both sides in most pairs where it fires; neither: no reliable pattern.",
    "split-half": "✓ when two random halves of the pairs lean the same way.",
}

# Kaufman & Rousseeuw's reading of an average silhouette.
_SILHOUETTE = ((0.7, "clearly"), (0.5, "reasonably well"), (0.25, "weakly"), (-math.inf, "hardly"))


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def fmt_q(q: float) -> str:
    """``q < 0.001`` or ``q 0.012`` (two significant digits)."""
    return "q < 0.001" if q < 0.001 else f"q {q:.2g}"


def _signed(x: float, digits: int = 2) -> str:
    return f"{x:+.{digits}f}"


def _pct(k: float, n: float) -> str:
    return f"{round(100 * k / n)}%" if n > 0 else "0%"


def cluster_sentence(
    row: Mapping[str, Any], *, label: str | None = None, alpha: float = ALPHA, length_controlled: bool = True
) -> str:
    """One plain sentence (a few clauses) about one cluster row; rules in the module docstring.

    ``label``: what the concept is called (its label or explanation; default "this concept").
    ``length_controlled``: whether the controlled model held length equal (lengths were given).
    """
    name = f"“{label.strip()}”" if label and label.strip() else "this concept"
    dz, q = _num(row.get("d_z")), _num(row.get("q"))
    counts = [_num(row.get(k, 0)) for k in ("n_chosen_only", "n_rejected_only", "n_both", "n_neither")]
    n_pairs = sum(c for c in counts if not math.isnan(c))
    n_c, n_r = counts[0], counts[1]
    significant = q < alpha and dz != 0 and not math.isnan(dz)
    stats = f"d_z {_signed(dz)}, {fmt_q(q)}" if not math.isnan(dz) else "not tested"
    if significant and dz > 0:
        head = f"Chosen responses have more {name} than rejected ones ({stats})"
    elif significant:
        head = f"Rejected responses have more {name} than chosen ones ({stats})"
    else:
        head = f"Chosen and rejected responses do not reliably differ in {name} ({stats})"
    fires = (
        f"it fires in the chosen response only in {_pct(n_c, n_pairs)} of pairs and in the rejected "
        f"only in {_pct(n_r, n_pairs)}"
    )
    lo, hi = _num(row.get("fire_ci_low")), _num(row.get("fire_ci_high"))
    if n_pairs > 0 and not (math.isnan(lo) or math.isnan(hi)):
        net = 100 * (n_c - n_r) / n_pairs
        fires += f" (net {net:+.0f} points, 95% CI {100 * lo:+.0f} to {100 * hi:+.0f})"
    parts = [f"{head}: {fires}."]
    if row.get("badge") == "both":
        parts.append(
            "It fires on both sides in most pairs where it fires: the prompts call for it, whichever answer."
        )
    if significant and row.get("split_half") is False:
        parts.append("Its lean did not hold in both random halves of the pairs.")
    q_ctrl = _num(row.get("q_ctrl"))
    if significant and not math.isnan(q_ctrl):
        others = len(row.get("controlled_for") or [])
        held = " and ".join(
            x
            for x in ("length" if length_controlled else "", f"{others} other concepts" if others else "")
            if x
        )
        held = held or "nothing"
        if q_ctrl < alpha:
            parts.append(
                f"It survives the controls: with {held} held equal it stays significant ({fmt_q(q_ctrl)})."
            )
        else:
            parts.append(
                f"It does not survive the controls: with {held} held equal it is no longer significant "
                f"({fmt_q(q_ctrl)}), so something else may explain it."
            )
    n = int(_num(row.get("n_members", 0)) or 0)
    parts.append(f"This concept groups {n} feature{'s' if n != 1 else ''}.")
    return " ".join(parts)


def cluster_sentences(
    table: pd.DataFrame,
    labels: Mapping[str, str] | Sequence[str] | None = None,
    *,
    alpha: float = ALPHA,
    length_controlled: bool = True,
) -> pd.DataFrame:
    """One row per cluster: ``cluster``, ``lean`` (chosen / rejected / none at ``alpha``), ``sentence``.

    ``labels``: by cluster id, or one per row in order.
    """
    ids = table["cluster"].astype(str).tolist()
    if labels is None:
        names = [None] * len(ids)
    elif isinstance(labels, Mapping):
        names = [labels.get(c) for c in ids]
    else:
        names = list(labels)
        if len(names) != len(ids):
            raise ValueError(f"{len(names)} labels for {len(ids)} clusters")
    rows = table.to_dict("records")
    lean = [
        ("chosen" if r["d_z"] > 0 else "rejected")
        if _num(r.get("q")) < alpha and _num(r.get("d_z")) != 0
        else "none"
        for r in rows
    ]
    sentences = [
        cluster_sentence(r, label=n, alpha=alpha, length_controlled=length_controlled)
        for r, n in zip(rows, names, strict=True)
    ]
    return pd.DataFrame({"cluster": ids, "lean": lean, "sentence": sentences})


def fit_sentence(explained_variance: float, l0: float, *, ev_warning: float = 0.7) -> str:
    """How well the lens (the SAE) fits these responses, in words."""
    ev = _num(explained_variance)
    text = (
        f"The SAE reconstructs the model's activations on these responses with explained variance "
        f"{ev:.2f} (1 is perfect), with about {_num(l0):.0f} features active per token."
    )
    if ev < ev_warning:
        text += f" That is below {ev_warning:g}: its features miss much of what the model reads here, so read them with care."
    return text


def topics_sentence(n_topics: int, silhouette: float | None) -> str:
    """How clearly the prompts separate into topics (silhouette read as Kaufman & Rousseeuw do)."""
    if n_topics <= 1 or silhouette is None or math.isnan(_num(silhouette)):
        return f"The prompts were put in {max(n_topics, 1)} topic{'s' if n_topics > 1 else ''}."
    word = next(w for t, w in _SILHOUETTE if silhouette > t)
    return f"The prompts fall into {n_topics} topics that separate {word} (silhouette {silhouette:.2f})."


def overview_sentences(
    sentences: pd.DataFrame, table: pd.DataFrame, *, n: int = 3
) -> list[tuple[str, str | None]]:
    """What a person reads first: ``(sentence, cluster id or None)``, strongest concepts first.

    The ``n`` significant clusters of largest |d_z| leaning to chosen, then to rejected (from
    :func:`cluster_sentences` and the same table), or one sentence saying there are none.
    """
    dz = pd.to_numeric(table["d_z"], errors="coerce").abs().to_numpy()
    order = sorted(range(len(table)), key=lambda j: (-(dz[j] if dz[j] == dz[j] else -1), j))
    out: list[tuple[str, str | None]] = []
    for lean in ("chosen", "rejected"):
        picked = [j for j in order if sentences["lean"].iloc[j] == lean][:n]
        if not picked:
            out.append((f"No concept is significantly more common in {lean} responses.", None))
        out += [(sentences["sentence"].iloc[j], sentences["cluster"].iloc[j]) for j in picked]
    return out
