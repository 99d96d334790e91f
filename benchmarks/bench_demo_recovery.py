"""Does the audit recover the demo set's planted biases? Ranks, d_z and q per planted concept.

    .venv/bin/python benchmarks/bench_demo_recovery.py [--limit N] [--ev-pairs 100] [--sae DIR]

``--sae DIR`` audits with another SAE, e.g. a recipe variant built by
``python -m prefaudit.build.sae_training --out DIR --seed 1 --flattery demo``.

Runs the audit of the embedded demo set with the real SmolLM2-135M-Instruct and the shipped SAE
(the encode is cached under the prefaudit cache root, shared with ``prefaudit demo``), then prints:

* for each planted concept (flattery, markdown, invented URL): its built-in text concepts' d_z
  and q, and the best SAE feature that *belongs* to it (peak token inside the planted span in
  most of its strongest responses; :mod:`prefaudit.demo.recovery`) with its rank among SAE
  features by |d_z|, d_z and q;
* the null check (labels swapped at random per pair): how many SAE features reach q < 0.05;
* ``--clusters``: the issue-20 targets of the co-firing clusters (``session.groups()``, labels
  from the stored peaks): per planted element, the best of the top 10 clusters by |d_z| (its
  per-pair Δ r with the ground truth, rank, badge, label and the label's words of the planted
  text; :func:`prefaudit.demo.recovery.cluster_targets`), how many clusters by q hold 90% of the
  significant SAE features, the time of ``groups()``, the time of the same labels read through
  the model (``model_reader``), and the null's significant clusters. ``--clusters-only`` skips
  the rest;
* the SAE's metrics recorded at training (held-out EV, L0, dead fraction) and re-measured here
  on the demo responses' activations (topics the SAE never saw).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefaudit import AuditSession
from prefaudit.build.sae_training import evaluate_sae
from prefaudit.demo import load_demo_pairs
from prefaudit.demo.recovery import cluster_targets, recovery_table, swap_encoded


def clusters_section(session: AuditSession, null_session: AuditSession) -> None:
    """The cluster targets, the two label readers' times and the null's clusters (printed)."""
    from prefaudit.features import groups as fg
    from prefaudit.features.labels import concept_contexts

    t0 = time.perf_counter()
    table = session.groups()
    t1 = time.perf_counter()
    print(
        f"\nclusters: {len(table)} groups in {t1 - t0:.1f} s (labels read from stored peaks), "
        f"{table.attrs['n_unclustered']} features unclustered {table.attrs['unclustered_by_reason']}"
    )
    out = cluster_targets(session)
    for r in out["concepts"].to_dict("records"):
        print(
            f"  {r['concept']:<9} {r['group']} rank {r['rank']} r_delta {r['r_delta']:+.2f} d_z {r.get('d_z', np.nan):+.2f} "
            f"badge {r.get('badge')} n={r.get('n_members')} label '{r['label']}' planted words {r.get('planted_words_in_label')} "
            f"{'MATCHED' if r.get('matched') else 'not matched'}"
        )
    print(
        f"  significant SAE features {out['n_significant_sae']}, in clusters {out['n_in_groups']}; "
        f"clusters by q holding 90% of them: {out['n_for_90']}; significant clusters {out['n_significant_groups']}"
    )
    top = table.reindex(table["d_z"].abs().sort_values(ascending=False).index).head(10)
    print("  top 10 clusters by |d_z|:")
    for r in top.itertuples():
        print(
            f"    {r.group:<9} n={r.n_members:<4} d_z={r.d_z:+.2f} q={r.q:.1e} q_ctrl={r.q_ctrl:.1e} {r.badge:<8} {r.label}"
        )
    df = session.data.df
    texts = df["chosen"].tolist() + df["rejected"].tolist()
    read = fg.model_reader(session.backbone, session.sae, session.data.messages, texts)
    chosen, rejected = session.groups.score_matrices()
    import scipy.sparse as sp

    members = [[int(f.split(":")[1]) for f in m] for m in table["members"]]
    scale = fg.response_scale(session.encoded.chosen.values, session.encoded.rejected.values)
    t2 = time.perf_counter()
    ctx = concept_contexts(
        sp.vstack([chosen, rejected]),
        members,
        read,
        weights=np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0),
    )
    t3 = time.perf_counter()
    rows = len({c.row for x in ctx for c in x.top})
    print(
        f"  labels read through the model instead: {t3 - t2:.1f} s for {len(ctx)} clusters ({rows} top responses)"
    )
    for r, c in zip(top.itertuples(), [ctx[int(g.split(":")[1])] for g in top["group"]], strict=True):
        print(f"    {r.group:<9} model-read label: {c.label}")
    t4 = time.perf_counter()
    nt = null_session.groups()
    print(
        f"  null: {len(nt)} clusters ({time.perf_counter() - t4:.1f} s), {(nt['q'] < 0.05).sum()} with q < 0.05, "
        f"{(nt['q_fire'] < 0.05).sum()} with q_fire < 0.05, badges {nt['badge'].value_counts().to_dict()}"
    )


def demo_ev(session: AuditSession, n_pairs: int) -> dict[str, float]:
    """EV/L0/dead of the SAE on the activations of the first ``n_pairs`` pairs' responses."""
    import torch

    df = session.data.df.head(n_pairs)
    msgs = [session.data.messages(i) for i in range(len(df))] * 2
    texts = df["chosen"].tolist() + df["rejected"].tolist()
    acts = []
    for start in range(0, len(texts), 16):
        acts += session.backbone.read_responses(msgs[start : start + 16], texts[start : start + 16])
    return evaluate_sae(session.sae.sae, torch.cat(acts))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=None)
    p.add_argument(
        "--ev-pairs", type=int, default=100, help="pairs whose activations re-measure EV (0: skip)"
    )
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--clusters", action="store_true", help="also the issue-20 cluster targets")
    p.add_argument("--clusters-only", action="store_true", help="only the cluster targets")
    p.add_argument(
        "--sae",
        default=None,
        help="an SAE directory to audit with instead of the shipped one (e.g. a recipe variant)",
    )
    args = p.parse_args()

    pairs = load_demo_pairs(limit=args.limit)
    session = AuditSession(pairs, sae=args.sae)
    t0 = time.perf_counter()
    session.encode(progress=False)
    t1 = time.perf_counter()
    res = session.test()
    t2 = time.perf_counter()
    print(
        f"demo audit: {len(pairs)} pairs, encode {t1 - t0:.0f} s (cache: {session.cache_dir}), test {t2 - t1:.1f} s"
    )

    if args.clusters or args.clusters_only:
        null = load_demo_pairs(limit=args.limit, null=True)
        ns = AuditSession(null, concepts=False, cache_dir=False)
        ns.encoded = swap_encoded(session.encoded, null.df["swapped"].to_numpy())
        clusters_section(session, ns)
        if args.clusters_only:
            return 0
    table = recovery_table(session, top=args.top)
    print("\nplanted concept recovery (rank among SAE features by |d_z|):")
    for row in table.to_dict("records"):
        concepts = "  ".join(
            f"{k[:-4]} d_z={row[k]:+.2f} q={row[k[:-4] + '_q']:.1e}"
            for k in row
            if k.endswith("_d_z") and row[k] == row[k]  # a row holds only its own concepts' columns
        )
        print(f"  {row['concept']:<9} text: {concepts}")
        if row["feature"] is None:
            print("            SAE: no significant feature whose peaks fall in the planted spans")
        else:
            print(
                f"            SAE: {row['feature']} rank {row['best_rank']} d_z={row['d_z']:+.2f} q={row['q']:.1e} "
                f"peak-in-span {100 * row['peak_in_span']:.0f}%  label '{row['label']}'  "
                f"{'RECOVERED' if row['recovered'] else 'not in top ' + str(args.top)}"
            )
    sae = res[res["source"] == "sae"]
    top = sae.reindex(sae["d_z"].abs().sort_values(ascending=False).index).head(10)
    print("\ntop 10 SAE features by |d_z|:")
    for r in top.itertuples():
        print(f"  {r.feature:<9} d_z={r.d_z:+.2f} q={r.q:.1e}  {r.label}")
    print(f"SAE features with q < 0.05: {(sae['q'] < 0.05).sum()} of {len(sae)}")

    null = load_demo_pairs(limit=args.limit, null=True)
    ns = AuditSession(null, concepts=False, cache_dir=False)
    ns.encoded = swap_encoded(session.encoded, null.df["swapped"].to_numpy())
    nres = ns.test()
    print(
        f"\nnull (labels swapped at random in {int(null.df['swapped'].sum())} pairs): "
        f"{(nres['q'] < 0.05).sum()} SAE features with q < 0.05; min q {nres['q'].min():.2f}"
    )

    meta = session.sae.metadata.get("prefaudit", {})
    m = meta.get("metrics", {})
    held = m.get("heldout", {})
    print(
        f"\nSAE (recorded at training): d_sae {session.sae.d_sae}, held-out EV {held.get('explained_variance', np.nan):.3f}, "
        f"L0 {held.get('l0', np.nan):.1f}, dead {100 * held.get('dead_fraction', np.nan):.1f}%; "
        f"{meta.get('corpus', {}).get('n_train_tokens', '?')} training tokens; "
        f"generate {m.get('generate_s', '?')} s, read {m.get('read_s', '?')} s, train {m.get('train_s', '?')} s"
    )
    if args.ev_pairs:
        d = demo_ev(session, args.ev_pairs)
        print(
            f"SAE on {d['n_tokens']} demo response tokens ({args.ev_pairs} pairs, unseen topics): "
            f"EV {d['explained_variance']:.3f}, L0 {d['l0']:.1f}, never firing {100 * d['dead_fraction']:.1f}%"
        )
    return 0 if table["recovered"].all() and (nres["q"] >= 0.05).all() else 1


if __name__ == "__main__":
    sys.exit(main())
