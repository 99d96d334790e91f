"""Feature groups (the co-firing clusters) on the demo set, and the time of ``compute_groups`` at 10,000 pairs × 4,096 features.

    .venv/bin/python benchmarks/bench_groups.py [--skip-demo] [--skip-synthetic]

Sections (``main()`` runs them in turn; each prints its own figures, no timed assertions):

* **demo** — ``AuditSession(load_demo_pairs())`` with the embedded model and SAE (encode cached
  under the prefaudit cache root, as ``prefaudit demo`` leaves it), ``test()``, then
  ``groups()`` (timed). Prints: the number of groups (multi-member / singletons / unclustered
  features); how many groups cover 90% of the significant SAE features (target ≤ 60); for each
  planted bias (flattery, markdown, url, and the topic-conditional reference) the best-matching
  group (:func:`prefaudit.demo.recovery.best_group`: the largest r of its per-response score
  with the ground truth ``chosen_<bias>`` / ``rejected_<bias>``), its rank by |d_z| (target ≤ 10)
  and the r of its per-pair Δ score with the ground-truth Δ (target ≥ 0.5); the prompt topics,
  the topic holding the requests for resources, and whether the ``citation`` concept and the
  reference's group are significant there only (target: heterogeneity p < 0.01); the top 10
  groups by |d_z| with labels and badges.
* **synthetic** — 10,000 pairs × 4,096 features (64 planted co-activating blocks of 48 features
  plus 1,024 independent ones, ~20% dense like the demo's pooled codes), the full grouping
  (:func:`prefaudit.audit.groups.compute_groups`: co-firing clusters, scores, the paper's
  statistics, labels through :func:`prefaudit.features.groups.peak_reader` with a toy tokenizer,
  aligned concepts, paired tests, explained-by), timed (target < 10 s).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefaudit import ids
from prefaudit.audit.groups import compute_groups

ALPHA = 0.05


def groups_covering(table, significant: set[str], share: float = 0.9) -> tuple[int, int]:
    """Fewest groups whose members include ``share`` of the ``significant`` SAE features.

    Returns ``(n_groups, n_significant_unclustered)``; ``n_groups`` is −1 when the clustered
    significant features alone fall short of the share.
    """
    counts = sorted((sum(m in significant for m in ms) for ms in table["members"]), reverse=True)
    need = share * len(significant)
    covered = np.cumsum(counts)
    reached = np.flatnonzero(covered >= need)
    n_uncl = len(significant & set(table.attrs["unclustered"]))
    return (int(reached[0]) + 1 if len(reached) else -1), n_uncl


# ---------------------------------------------------------------------- demo
def demo_section() -> None:
    import prefaudit as pa
    from prefaudit.demo.design import PLANTED, TOPIC_PLANTED
    from prefaudit.demo.recovery import best_group

    print("== demo: embedded SmolLM2 + SAE on the demo pairs")
    session = pa.AuditSession(pa.load_demo_pairs())
    t0 = time.perf_counter()
    session.encode(progress=False)
    t1 = time.perf_counter()
    res = session.test()
    t2, c2 = time.perf_counter(), time.process_time()
    table = session.groups()
    t3, c3 = time.perf_counter(), time.process_time()
    print(
        f"encode {t1 - t0:.1f} s · test {t2 - t1:.1f} s · groups() {t3 - t2:.1f} s wall, "
        f"{c3 - c2:.1f} s CPU (all threads)"
    )

    sizes = table["n_members"].to_numpy()
    print(
        f"groups: {len(table)} (each ≥ {table.attrs['min_size']} features); unclustered features: "
        f"{table.attrs['n_unclustered']} {table.attrs['unclustered_by_reason']} "
        f"(active in ≥ {table.attrs['min_active']} of {table.attrs['n_rows']} responses to be linked)"
    )
    print(f"largest groups: {sorted(sizes.tolist(), reverse=True)[:10]}")
    sae = res[res["source"] == "sae"]
    sig = set(sae.loc[sae["q"] < ALPHA, "feature"])
    n_cover, n_uncl = groups_covering(table, sig)
    print(
        f"significant SAE features: {len(sig)} of {len(sae)}; groups covering 90% of them: "
        f"{n_cover if n_cover > 0 else 'not reachable'} (target ≤ 60); significant but unclustered: {n_uncl}"
    )
    clustered = sorted(sig - set(table.attrs["unclustered"]), key=lambda f: ids.sae_index(f))
    cols = [ids.sae_index(f) for f in clustered]
    x = sp.vstack([session.encoded.chosen.values, session.encoded.rejected.values]).tocsc()[:, cols]
    r = np.corrcoef(x.toarray(), rowvar=False)[np.triu_indices(len(cols), 1)]
    print(
        f"why: pairwise r over responses among the {len(cols)} clustered significant features: "
        f"median {np.median(r):.3f}, 90th percentile {np.percentile(r, 90):.3f}, r > 0.5 in {np.mean(r > 0.5):.2%}"
    )
    sig_groups = table[table["q"] < ALPHA]
    print(
        f"groups with q < {ALPHA}: {len(sig_groups)}; with q_ctrl < {ALPHA}: {(table['q_ctrl'] < ALPHA).sum()}"
    )

    order = table["d_z"].abs().sort_values(ascending=False, na_position="last").index
    rank = {g: r + 1 for r, g in enumerate(table.loc[order, "group"])}
    order_ctrl = table["d_z_controlled"].abs().sort_values(ascending=False, na_position="last").index
    rank_ctrl = {g: r + 1 for r, g in enumerate(table.loc[order_ctrl, "group"])}
    print("\nplanted biases: best-matching group (max r of the per-response score with the truth)")
    by_group = table.set_index("group")
    for bias in (*PLANTED, *TOPIC_PLANTED):
        m = best_group(session, bias)
        row = by_group.loc[m["group"]]
        print(
            f"  {bias:9s} {m['group']:>10s} r(resp)={m['r_response']:.2f} rank={rank[m['group']]:>4d} (target ≤ 10; "
            f"by |d_z_ctrl|: {rank_ctrl[m['group']]}) "
            f"r(Δ, truth Δ)={m['r_delta']:.2f} (target ≥ 0.5) n={row['n_members']} d_z={row['d_z']:+.2f} "
            f"d_z_ctrl={row['d_z_controlled']:+.2f} label={row['label']!r}"
        )
    topic_section(session, table)

    print("\ntop 10 groups by |d_z|:")
    for g in table.loc[order[:10]].itertuples():
        al = ", ".join(f"{ids.concept_name(c)} {r:+.2f}" for c, r in g.aligned)
        print(
            f"  {g.group:>10s} n={g.n_members:<4d} d_z={g.d_z:+.2f} q={g.q:.1e} d_z_ctrl={g.d_z_controlled:+.2f} "
            f"{g.badge:<8s} [{al}] {g.label!r}"
        )


def topic_section(session, table) -> None:
    """The topic-conditional reference: the topic the clustering gives its prompts, and whether
    the citation concept and the best-matching group are significant there only."""
    from prefaudit.demo.recovery import best_group, planted_topic, topic_specificity
    from prefaudit.report.concepts import group_topic_tests

    t0 = time.perf_counter()
    session.topics()
    long = session.test(by="topic")
    t1 = time.perf_counter()
    where = planted_topic(session.topics.assignment(), session.data.df["asks_for_resources"])
    labels = session.topics.labels()
    print(
        f"\ntopics: {labels.attrs.get('rule', '')} ({t1 - t0:.1f} s with test(by='topic')); the requests for "
        f"resources: topic {where['topic']} {labels['label'].iloc[where['topic']]!r}, {where['n_asks']} of its "
        f"{where['n_pairs']} pairs (purity {where['purity']:.2f}, recall {where['recall']:.2f})"
    )
    by_topic = group_topic_tests(
        session, table, session.topics.assignment(), list(labels["label"]), "wilcoxon"
    )
    group = best_group(session, "reference")["group"]
    for name, long_table in (("concept:citation", long), (group, by_topic)):
        r = topic_specificity(long_table, name, where["topic"])
        print(
            f"  {name:>16s}: in its topic d_z={r['d_z']:+.2f} q={r['q']:.1e}; smallest q elsewhere "
            f"{r['q_other_min']:.2f} (topic {r['q_other_topic']}); p_heterogeneity={r['p_heterogeneity']:.1e} "
            f"(target < 0.01); specific: {r['specific']}"
        )


# ---------------------------------------------------------------------- synthetic
def synthetic_case(n_pairs: int = 10_000, d: int = 4096, seed: int = 0) -> dict:
    """Pooled codes with 64 planted blocks of 48 co-activating features + 1,024 independent ones."""
    rng = np.random.default_rng(seed)
    n_blocks, size, length = 64, 48, 64
    sides = []
    shift = np.zeros(n_blocks)
    shift[:8] = 0.15  # eight blocks fire more often on chosen
    for s in (1.0, -1.0):
        on = rng.random((n_pairs, n_blocks)) < 0.2 + s * shift / 2
        factor = rng.exponential(size=(n_pairs, n_blocks)) * on
        cols, rows, vals = [], [], []
        for b in range(n_blocks):
            r = np.flatnonzero(factor[:, b])
            for f in range(b * size, (b + 1) * size):
                keep = r[rng.random(len(r)) < 0.9]
                rows.append(keep)
                cols.append(np.full(len(keep), f))
                vals.append(factor[keep, b] * rng.uniform(0.5, 1.5) + 0.2 * rng.random(len(keep)))
        loners = sp.random(n_pairs, d - n_blocks * size, density=0.1, random_state=rng, format="coo")
        rows.append(loners.row)
        cols.append(loners.col + n_blocks * size)
        vals.append(loners.data)
        v = sp.csr_matrix(
            (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_pairs, d),
        )
        v.sort_indices()
        tokens = rng.integers(0, 500, size=(n_pairs, length))
        row_of = np.repeat(np.arange(n_pairs), np.diff(v.indptr))
        pos = rng.integers(0, length, size=v.nnz)
        sides.append(
            (SimpleNamespace(values=v, top_pos=pos, top_token=tokens[row_of, pos]), tokens, v.getnnz(axis=1))
        )
    texts = [" ".join(map(str, t)) for _, tokens, _ in sides for t in tokens]
    concepts = tuple(rng.normal(size=(n_pairs, 13)) for _ in range(2))
    lengths = tuple(rng.integers(20, 300, size=n_pairs).astype(float) for _ in range(2))
    return {
        "sides": (sides[0][0], sides[1][0]),
        "texts": texts,
        "concepts": concepts,
        "lengths": lengths,
        "density": float(np.mean([s[2].mean() for s in sides]) / d),
    }


def synthetic_section(n_pairs: int = 10_000, d: int = 4096) -> None:
    print(f"\n== synthetic: {n_pairs:,} pairs × {d:,} features")
    case = synthetic_case(n_pairs, d)
    t0, c0 = time.perf_counter(), time.process_time()
    from prefaudit.features.groups import peak_reader

    read = peak_reader(
        case["sides"],
        case["texts"],
        lambda s: [int(w) for w in s.split()],
        lambda toks: [f" t{t}" for t in toks],
    )
    groups, _, _, table, _ = compute_groups(
        case["sides"],
        read,
        case["concepts"],
        [ids.concept_id(f"c{j}") for j in range(13)],
        case["lengths"],
    )
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    sizes = table["n_members"].to_numpy()
    planted = sum(
        any(np.array_equal(m, np.arange(b * 48, (b + 1) * 48)) for m in groups.members) for b in range(64)
    )
    print(
        f"density {case['density']:.1%}; groups: {len(table)} ({(sizes > 1).sum()} multi-member), "
        f"planted blocks recovered exactly: {planted}/64, unclustered: {table.attrs['n_unclustered']}"
    )
    print(
        f"groups (cluster + scores + labels + aligned + tests + explained-by): {elapsed:.1f} s wall "
        f"(target < 10 s), {cpu:.1f} s CPU (all threads)"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--skip-synthetic", action="store_true")
    args = p.parse_args()
    if not args.skip_demo:
        demo_section()
    if not args.skip_synthetic:
        synthetic_section()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
