"""How often the policy's generations carry each planted concept, read by a pattern and by its cluster.

A text pattern written for the planted sentences misses the policy's paraphrases ("You have a
fascinating question!" is not "What a great question!"). So each concept has two detectors,
both fixed from the **audit's own responses** before any generation is read:

* ``pattern`` — any of the concept's built-in text concepts (:data:`prefaudit.demo.CONCEPT_OF`:
  flattery; markdown = headers, list items or bold; url; reference = citation) is present;
* ``cluster`` — the concept's SAE feature cluster fires: the cluster (:mod:`prefaudit.verify.levels`)
  whose score correlates most with the pattern over the audit's 2n responses, firing above the
  threshold that best separates pattern-present from pattern-absent audit responses (largest
  TPR − FPR). How well it does is the **detector check**, reported with every rate: on the audit
  responses, its true-positive rate against the pattern (``audit_tpr``), false-positive rate
  (``audit_fpr``) and the AUC of its score (``audit_auc``). A cluster detector that fires where
  the pattern does not is either a paraphrase or a false positive; ``audit_fpr`` bounds how often
  the latter happens on text like the audit's;
* ``either`` — pattern or cluster.

Per run, the table gives each detector's rate in base and trained samples (same prompts, same
seed), the rise and its standard error (paired per sample: sd(trained − base)/√n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .. import ids
from ..demo import CONCEPT_OF
from .levels import Level

#: Columns of the planted-concept table, in order.
PLANTED_COLUMNS: tuple[str, ...] = (
    "concept",
    "detector",
    "unit",
    "base",
    "trained",
    "rise",
    "rise_se",
    "n",
    "audit_tpr",
    "audit_fpr",
    "audit_auc",
)
#: Fewer pattern-present (or -absent) audit responses than this: no cluster detector.
MIN_POSITIVES = 5


@dataclass(frozen=True)
class Detector:
    """One planted concept's detectors, chosen on the audit responses."""

    concept: str
    columns: tuple[int, ...]  # feature columns of its text concepts
    cluster: int | None  # unit index in the cluster level
    cluster_id: str
    threshold: float
    tpr: float
    fpr: float
    auc: float


def pattern_present(x: Any, columns: tuple[int, ...]) -> np.ndarray:
    """True where any of ``columns`` of ``x`` (sparse or dense, responses × features) is > 0."""
    sub = x[:, list(columns)]
    sub = sub.toarray() if hasattr(sub, "toarray") else np.asarray(sub)
    return (sub > 0).any(axis=1)


def best_threshold(score: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(threshold, TPR, FPR) maximising TPR − FPR of ``score > threshold`` against ``truth``."""
    cuts = np.unique(score)[:-1] if len(np.unique(score)) > 1 else np.unique(score)
    pos, neg = truth.sum(), (~truth).sum()
    best = (math.inf, 0.0, 0.0, -math.inf)
    for c in cuts:
        hit = score > c
        tpr, fpr = hit[truth].sum() / pos, hit[~truth].sum() / neg
        if tpr - fpr > best[3]:
            best = (float(c), float(tpr), float(fpr), tpr - fpr)
    return best[0], best[1], best[2]


def auc(score: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for ``truth`` (Mann–Whitney U / n₊n₋)."""
    pos, neg = score[truth], score[~truth]
    if not len(pos) or not len(neg):
        return math.nan
    return float(stats.mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def detectors(session: Any, level: Level | None) -> list[Detector]:
    """Each planted concept's detectors (cached per session with the cluster level's units)."""
    cache = session.stage_cache("verify")
    key = "planted-detectors:" + ("" if level is None else ",".join(level.unit_ids))
    if key in cache:
        return cache[key]
    fids = session.feature_ids
    where = {f: j for j, f in enumerate(fids)}
    m = session.matrix
    out = []
    scores = None
    if level is not None:
        both = [m.chosen[:, level.cols].toarray(), m.rejected[:, level.cols].toarray()]
        scores = level.scores(np.concatenate(both))
    for concept, names in CONCEPT_OF.items():
        cols = tuple(where[ids.concept_id(n)] for n in names if ids.concept_id(n) in where)
        if not cols:
            continue
        truth = np.concatenate([pattern_present(m.chosen, cols), pattern_present(m.rejected, cols)])
        best, bid, thr, tpr, fpr, area = None, "", math.nan, math.nan, math.nan, math.nan
        if scores is not None and MIN_POSITIVES <= truth.sum() <= len(truth) - MIN_POSITIVES:
            with np.errstate(divide="ignore", invalid="ignore"):
                sd = scores.std(axis=0)
                r = np.where(
                    sd > 0,
                    ((scores - scores.mean(0)) * (truth - truth.mean())[:, None]).mean(0) / sd,
                    -np.inf,
                )
            best = int(np.argmax(r))
            bid = level.unit_ids[best]
            thr, tpr, fpr = best_threshold(scores[:, best], truth)
            area = auc(scores[:, best], truth)
        out.append(Detector(concept, cols, best, bid, thr, tpr, fpr, area))
    cache[key] = out
    return out


def _rate_row(
    concept: str, detector: str, unit: str, base: np.ndarray, trained: np.ndarray, check: Detector | None
) -> dict[str, Any]:
    n = len(base)
    d = trained.astype(np.float64) - base.astype(np.float64)
    return {
        "concept": concept,
        "detector": detector,
        "unit": unit,
        "base": float(base.mean()) if n else math.nan,
        "trained": float(trained.mean()) if n else math.nan,
        "rise": float(d.mean()) if n else math.nan,
        "rise_se": float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
        "n": n,
        "audit_tpr": check.tpr if check else math.nan,
        "audit_fpr": check.fpr if check else math.nan,
        "audit_auc": check.auc if check else math.nan,
    }


def planted_rates(session: Any, level: Level | None, obs_trained: Any, obs_base: Any) -> pd.DataFrame:
    """Rates of every planted concept in base and trained samples (``obs_*``: their features, audit columns)."""
    rows = []
    for det in detectors(session, level):
        names = "|".join(ids.concept_name(session.feature_ids[j]) for j in det.columns)
        pb, pt = pattern_present(obs_base, det.columns), pattern_present(obs_trained, det.columns)
        rows.append(_rate_row(det.concept, "pattern", names, pb, pt, None))
        if det.cluster is None:
            continue
        cb, ct = (
            level.scores(
                x[:, level.cols].toarray() if hasattr(x, "toarray") else np.asarray(x)[:, level.cols]
            )[:, det.cluster]
            > det.threshold
            for x in (obs_base, obs_trained)
        )
        rows.append(_rate_row(det.concept, "cluster", det.cluster_id, cb, ct, det))
        rows.append(_rate_row(det.concept, "either", f"{names} or {det.cluster_id}", pb | cb, pt | ct, None))
    return pd.DataFrame(rows, columns=list(PLANTED_COLUMNS))
