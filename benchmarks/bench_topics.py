"""Benchmark prompt topics and ``test(by="topic")`` on an SAE-sized synthetic audit.

    .venv/bin/python benchmarks/bench_topics.py [--pairs 10000] [--features 4096] [--active 256]
                                                [--repeats 1] [--json]

Section ``topics``. The case: ``--pairs`` synthetic pairs whose prompts come from 8 planted
topics (6 of 12 topic words plus 4 shared filler words each, seeded), and ``--features`` SAE-like
pooled features per response: about ``--active`` active features per response (popularity
log-normal, as SAE firing rates are; chosen and rejected drawn independently, log-normal
values, CSR float32), plus one planted feature per topic that chosen responses of that topic
carry (+1.0 in 30 % of its pairs). It is a concepts-off session with the features set as
``session.encoded`` (as ``tests/test_views_volcano.py`` does), so no model is loaded.

Timed (best of ``--repeats``, each on a fresh session): ``session.topics()`` (TF-IDF, the
silhouette rule over k = 2 … 8, the final k-means, the labels) and ``session.test(by="topic")``
(paired_tests per topic with ``--n-boot`` replicates, test()'s default 1000; BH over all topic ×
feature tests; Kruskal–Wallis across topics). The per-topic bootstraps together cost about what
one plain ``session.test()`` costs (``--reference`` times it); ``--n-boot 0`` skips the CIs. Goal: together with the concept groups (someone else's section) < 10 s; this
section's own goal is reported against the same 10 s. Also printed: the topics found (how pure
they are against the planted ones) and how many planted features are found topic-specific (q <
0.05 in their topic and q_heterogeneity < 0.05). Exits 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prefaudit as pa
from prefaudit.features.encoded import EncodedFeatures, SidePooled

N_TOPICS = 8
GOAL_SECONDS = 10.0
FILLER = [
    "please",
    "tell",
    "me",
    "about",
    "the",
    "best",
    "way",
    "how",
    "can",
    "you",
    "help",
    "with",
    "this",
    "thing",
]


def topic_words(n_topics: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return [["".join(rng.choice(letters, 6)) for _ in range(12)] for _ in range(n_topics)]


def make_case(n_pairs: int, n_features: int, active: int, seed: int = 0):
    """(pairs, encoded, planted topic of each pair, planted feature of each topic)."""
    rng = np.random.default_rng(seed)
    vocab = topic_words(N_TOPICS, seed)
    topic = rng.integers(0, N_TOPICS, n_pairs)
    prompts = [
        " ".join([*rng.choice(vocab[t], 6, replace=False), *rng.choice(FILLER, 4, replace=False)])
        for t in topic
    ]
    rows = [{"prompt": p, "chosen": "yes", "rejected": "no"} for p in prompts]
    popularity = rng.lognormal(0.0, 1.0, n_features)
    popularity /= popularity.sum()
    planted = rng.choice(n_features, N_TOPICS, replace=False)

    def one_side(boost: bool) -> SidePooled:
        cols = rng.choice(n_features, size=(n_pairs, active), p=popularity)
        vals = rng.lognormal(0.0, 0.75, size=cols.shape).astype(np.float32)
        indptr = np.arange(0, cols.size + 1, active)
        m = sp.csr_matrix((vals.ravel(), cols.ravel(), indptr), shape=(n_pairs, n_features))
        m.sum_duplicates()
        if boost:
            hit = rng.random(n_pairs) < 0.3
            rows_ = np.flatnonzero(hit)
            extra = sp.csr_matrix(
                (np.ones(rows_.size, np.float32), (rows_, planted[topic[rows_]])), shape=m.shape
            )
            m = (m + extra).tocsr()
        z = np.zeros(m.nnz, np.int32)
        n_tok = rng.integers(20, 200, n_pairs).astype(np.int32)
        return SidePooled(m, z, z, np.zeros((n_pairs, 4), np.float32), n_tok, np.zeros(n_pairs, bool))

    encoded = EncodedFeatures(one_side(True), one_side(False), "max")
    return rows, encoded, topic, planted


def new_session(rows, encoded) -> pa.AuditSession:
    session = pa.AuditSession(pa.load_pairs(rows), sae="synthetic", concepts=False, cache_dir=False)
    session.encoded = encoded
    return session


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--features", type=int, default=4096)
    ap.add_argument("--active", type=int, default=256)
    ap.add_argument("--n-boot", type=int, default=1000, help="test(by='topic', n_boot=...): test()'s default")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--reference", action="store_true", help="also time the plain session.test() once")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    rows, encoded, truth, planted = make_case(args.pairs, args.features, args.active)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    import sklearn.cluster  # noqa: F401  (the first import of scikit-learn, timed apart)

    import_s = time.perf_counter() - t0

    best: dict[str, float] = {}
    for _ in range(max(args.repeats, 1)):
        session = new_session(rows, encoded)
        _ = session.matrix  # the pooled matrix is built once per session, as after encode()
        t0 = time.perf_counter()
        table = session.topics()
        t_topics = time.perf_counter() - t0
        t0 = time.perf_counter()
        long = session.test(by="topic", n_boot=args.n_boot)
        t_test = time.perf_counter() - t0
        for key, value in (("topics_s", t_topics), ("test_by_topic_s", t_test)):
            best[key] = min(best.get(key, np.inf), value)
    total = best["topics_s"] + best["test_by_topic_s"]
    reference_s = None
    if args.reference:
        t0 = time.perf_counter()
        session.test(n_boot=args.n_boot)
        reference_s = round(time.perf_counter() - t0, 2)

    found = table["topic"].to_numpy()
    purity = sum(np.bincount(truth[found == t]).max() for t in np.unique(found)) / len(found)
    labels = session.topic_labels()
    hits = 0
    for t in range(N_TOPICS):
        # the found topic holding most of planted topic t
        ft = int(np.bincount(found[truth == t]).argmax())
        row = long[(long["topic"] == ft) & (long["feature"] == f"sae:{planted[t]}")].iloc[0]
        hits += bool(row["q"] < 0.05 and row["q_heterogeneity"] < 0.05)
    delta_nnz = int(session.matrix.delta.nnz)
    report = {
        "section": "topics",
        "pairs": args.pairs,
        "features": args.features,
        "active_per_response": args.active,
        "delta_nnz": delta_nnz,
        "build_case_s": round(build_s, 2),
        "sklearn_import_s": round(import_s, 2),
        "topics_s": round(best["topics_s"], 2),
        "test_by_topic_s": round(best["test_by_topic_s"], 2),
        "n_boot": args.n_boot,
        "plain_test_s": reference_s,
        "total_s": round(total, 2),
        "goal_s": GOAL_SECONDS,
        "n_topics": int(labels.shape[0]),
        "rule": labels.attrs["rule"],
        "purity": round(float(purity), 4),
        "planted_found": f"{hits}/{N_TOPICS}",
        "rows": len(long),
        "load": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"topics: {args.pairs:,} pairs × {args.features:,} features, Δ nnz {delta_nnz:,}")
        print(
            f"  topics()            {report['topics_s']:6.2f} s  ({report['n_topics']} topics; {report['rule']})"
        )
        print(
            f"  test(by='topic')    {report['test_by_topic_s']:6.2f} s  ({len(long):,} rows, n_boot={args.n_boot})"
        )
        if reference_s is not None:
            print(f"  plain test()        {reference_s:6.2f} s  (for scale: the same bootstrap work, once)")
        print(f"  together            {report['total_s']:6.2f} s  (goal < {GOAL_SECONDS:.0f} s with groups)")
        print(
            f"  purity vs planted   {report['purity']:.3f}; planted topic-specific features found {hits}/{N_TOPICS}"
        )
        print(f"  scikit-learn import {report['sklearn_import_s']:.2f} s (once per process, not counted)")
        print(f"  load average        {report['load']:.2f}")
    return 0 if total < GOAL_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
