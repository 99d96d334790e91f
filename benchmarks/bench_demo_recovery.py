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
from prefaudit.demo.recovery import recovery_table, swap_encoded


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
    print(f"\nnull (labels swapped at random in {int(null.df['swapped'].sum())} pairs): "
          f"{(nres['q'] < 0.05).sum()} SAE features with q < 0.05; min q {nres['q'].min():.2f}")  # fmt: skip

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
