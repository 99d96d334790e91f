"""Feature clusters (co-firing MI graph + Louvain): time and memory at scale, and the demo's concepts.

    .venv/bin/python benchmarks/bench_clusters.py [--big] [--skip-demo] [--skip-synthetic] [--json PATH]

Sections (no timed assertions; each prints its figures, ``--json`` writes them all):

* **synthetic** — pooled codes of 10,000 pairs × 4,096 features (``--big``: also 260,000 ×
  65,536), ~64 active features per response: half the features in planted co-firing blocks of
  16 (about two concepts per response, a member fires in 80% of its concept's responses; the
  first 1/16 of the blocks lean to chosen), the other half independent noise. Each step runs in
  its own child process, its peak RSS counted from the inputs loaded: :func:`cofiring_clusters` (target: < 5 s at
  4,096, < 60 s at 65,536), today's :func:`prefaudit.features.groups.cluster_features` on the
  same data (the ratio), and the cluster table (:func:`cluster_table`: scores, paired tests,
  explained-by). Prints the adjusted Rand index against the planted blocks.
* **demo** — the embedded SmolLM2 + SAE on the 640 demo pairs (encode cached under the prefaudit
  cache root, as ``prefaudit demo`` leaves it), ``test()``, then :func:`audit_clusters` with its
  defaults (fixed before the demo was looked at). For each planted concept (flattery, markdown,
  url, reference): the cluster whose per-response score correlates most with the ground truth
  ``chosen_<c>``/``rejected_<c>``, its rank by |d_z| (target ≤ 10) and the r of its per-pair Δ
  with the truth's Δ (target ≥ 0.5), plus the best Δ r among the top 10 clusters; how many
  clusters, taken in order of q, hold 90% of the significant SAE features (target ≤ 60); the
  number of clusters; the null demo (labels swapped at random per pair, as
  ``prefaudit demo --null``): clusters with q < 0.05 (target 0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefaudit.features.cluster_stats import audit_clusters, cluster_table
from prefaudit.features.clusters import cofiring_clusters

ALPHA = 0.05
SIZES = {"small": (10_000, 4_096), "big": (260_000, 65_536)}
CHILD_MEMORY = 10 << 30  # address-space cap of a child: today's grouping at 65,536 must fail, not swap


# ---------------------------------------------------------------------- synthetic
def synthetic_pairs(
    n_pairs: int,
    n_features: int,
    *,
    active: int = 64,
    block: int = 16,
    per_response: float = 2.0,
    seed: int = 0,
) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """Pooled chosen, rejected (pairs × features) and the planted block of each feature (−1: noise)."""
    rng = np.random.default_rng(seed)
    n_blocks = n_features // (2 * block)
    n_noise = active - per_response * block * 0.8
    lean = np.zeros(n_blocks)
    lean[: max(1, n_blocks // 16)] = 0.5
    sides = []
    for sign in (1.0, -1.0):
        # Block b is on at rate per_response·(1 ± lean_b)/n_blocks: the others the same on both sides.
        rate = 1 + sign * lean
        rows = np.repeat(np.arange(n_pairs), rng.poisson(per_response * rate.mean(), size=n_pairs))
        p = rate / rate.sum()
        blocks = rng.choice(n_blocks, size=len(rows), p=p)
        r_blk = np.repeat(rows, block)
        f_blk = (blocks[:, None] * block + np.arange(block)).ravel()
        keep = rng.random(len(r_blk)) < 0.8
        r_noise = np.repeat(np.arange(n_pairs), rng.poisson(n_noise, size=n_pairs))
        f_noise = rng.integers(0, n_features, size=len(r_noise))
        r, f = np.r_[r_blk[keep], r_noise], np.r_[f_blk[keep], f_noise]
        x = sp.csr_matrix(
            (rng.exponential(size=len(r)).astype(np.float32) + 0.01, (r, f)), shape=(n_pairs, n_features)
        )
        x.sum_duplicates()
        sides.append(x)
    planted = np.full(n_features, -1)
    planted[: n_blocks * block] = np.repeat(np.arange(n_blocks), block)
    return sides[0], sides[1], planted


def _rss_gb(field: str = "VmHWM") -> float:
    """Peak RSS since the last :func:`_reset_peak` (``VmRSS``: the current RSS), GB."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split(f"{field}:")[1].split()[0]) / 1e6  # kB
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _reset_peak() -> None:
    """Start the peak RSS afresh (Linux: "5" to clear_refs), so a step's peak is its own, not the load's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def child(mode: str, path: str) -> dict:
    """One measured step on the saved inputs; returns its figures (run in a fresh process)."""
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    d = np.load(path)
    c = sp.csr_matrix((d["c_data"], d["c_indices"], d["c_indptr"]), shape=tuple(d["shape"]))
    r = sp.csr_matrix((d["r_data"], d["r_indices"], d["r_indptr"]), shape=tuple(d["shape"]))
    _reset_peak()
    loaded = _rss_gb("VmRSS")
    out: dict = {"mode": mode}
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        if mode == "clusters":
            from sklearn.metrics import adjusted_rand_score

            res = cofiring_clusters(c, r)
            planted = d["planted"]
            out.update(
                n_clusters=res.n_clusters,
                n_edges=res.n_edges,
                unclustered={k: len(v) for k, v in res.unclustered.items()},
                ari=float(adjusted_rand_score(planted[planted >= 0], res.membership[planted >= 0])),
                noise_clustered=int((res.membership[planted < 0] >= 0).sum()),
            )
        elif mode == "groups":
            from prefaudit.features import groups as fg

            g = fg.cluster_features(sp.vstack([c, r], format="csr"))
            out.update(n_groups=g.n_groups, n_unclustered=len(g.unclustered))
        else:  # table: clustering untimed, then the table
            clusters = cofiring_clusters(c, r)
            t0, c0 = time.perf_counter(), time.process_time()
            t = cluster_table(c, r, clusters).table
            lean = set(range(len(d["planted"]) // 32 // 16))  # the planted leaning blocks
            k_lean = {int(clusters.membership[b * 16]) for b in lean} - {-1}
            sig = set(np.flatnonzero(t["q"].to_numpy() < ALPHA).tolist())
            out.update(n_significant=len(sig), lean_found=len(sig & k_lean), n_lean=len(lean))
    except MemoryError as exc:
        out["error"] = f"MemoryError ({exc or 'allocation refused'})"
    out.update(
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - c0,
        peak_rss_gb=_rss_gb(),
        inputs_rss_gb=loaded,
    )
    return out


def run_child(mode: str, path: str, timeout: int = 900) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--data", path]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"mode": mode, "error": f"timed out after {timeout} s"}
    lines = [s for s in done.stdout.splitlines() if s.startswith("{")]
    if not lines:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return {"mode": mode, "error": tail[0][:200]}
    return json.loads(lines[-1])


def synthetic_section(size: str) -> dict:
    n_pairs, d = SIZES[size]
    print(f"\n== synthetic: {n_pairs:,} pairs × {d:,} features")
    c, r, planted = synthetic_pairs(n_pairs, d)
    print(f"active per response: {(c.getnnz() + r.getnnz()) / (2 * n_pairs):.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "inputs.npz")
        np.savez(
            path,
            shape=np.array(c.shape),
            planted=planted,
            **{
                f"{s}_{k}": getattr(m, k)
                for s, m in (("c", c), ("r", r))
                for k in ("data", "indices", "indptr")
            },
        )
        steps = {mode: run_child(mode, path) for mode in ("clusters", "groups", "table")}
    for mode, m in steps.items():
        extra = {
            k: v
            for k, v in m.items()
            if k not in ("mode", "seconds", "cpu_seconds", "peak_rss_gb", "inputs_rss_gb")
        }
        if "seconds" in m:
            print(
                f"  {mode:8s} {m['seconds']:7.1f} s wall, {m['cpu_seconds']:7.1f} s CPU, peak RSS "
                f"{m['peak_rss_gb']:.2f} GB (with the inputs loaded: {m['inputs_rss_gb']:.2f} GB)  {extra}"
            )
        else:
            print(f"  {mode:8s} {m}")
    a, b = steps["clusters"], steps["groups"]
    target = 5 if size == "small" else 60
    if "error" not in a and "error" not in b:
        print(
            f"  clusters / today's grouping: {a['seconds'] / b['seconds']:.2f}× the time, "
            f"{a['peak_rss_gb'] / b['peak_rss_gb']:.2f}× the peak RSS"
        )
    print(f"  target: clustering < {target} s → {'met' if a.get('seconds', np.inf) < target else 'MISSED'}")
    return {"n_pairs": n_pairs, "n_features": d, **steps}


# ---------------------------------------------------------------------- demo
def coverage_by_q(table, significant: set[int], share: float = 0.9) -> tuple[int, int, float]:
    """Clusters taken in order of q (ties: larger |d_z|) until they hold ``share`` of ``significant``.

    Returns (clusters needed or −1, significant features in any cluster, the share they make).
    """
    order = np.lexsort((-table["d_z"].abs().fillna(0).to_numpy(), table["q"].fillna(1).to_numpy()))
    counts = np.array([sum(f in significant for f in table["members"].iloc[k]) for k in order])
    covered = np.cumsum(counts)
    reached = np.flatnonzero(covered >= share * len(significant))
    total = int(covered[-1]) if len(covered) else 0
    return (int(reached[0]) + 1 if len(reached) else -1), total, total / max(len(significant), 1)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")


def demo_section() -> dict:
    import prefaudit as pa
    from prefaudit import ids
    from prefaudit.demo.design import PLANTED, TOPIC_PLANTED
    from prefaudit.demo.recovery import swap_encoded

    print("\n== demo: embedded SmolLM2 + SAE on the demo pairs")
    session = pa.AuditSession(pa.load_demo_pairs())
    session.encode(progress=False)
    res = session.test()
    c, r = session.encoded.chosen.values, session.encoded.rejected.values
    lengths = session.space.lengths()
    t0 = time.perf_counter()
    audit = audit_clusters(c, r, lengths=lengths)
    elapsed = time.perf_counter() - t0
    t, cl = audit.table, audit.clusters
    sizes = t["n_members"].to_numpy()
    out: dict = {"seconds": elapsed, "n_clusters": len(t), "n_edges": cl.n_edges}
    out["unclustered"] = {k: len(v) for k, v in cl.unclustered.items()}
    print(
        f"audit_clusters: {elapsed:.1f} s; {len(t)} clusters (sizes: largest {sorted(sizes.tolist())[::-1][:8]}, "
        f"median {int(np.median(sizes)) if len(sizes) else 0}); {cl.n_edges} edges; unclustered {out['unclustered']}"
    )
    sae = res[res["source"] == "sae"]
    sig = {ids.sae_index(f) for f in sae.loc[sae["q"] < ALPHA, "feature"]}
    n_cover, n_in, frac = coverage_by_q(t, sig)
    sig_clusters = int((t["q"] < ALPHA).sum())
    out.update(
        n_significant_features=len(sig),
        clusters_for_90pct=n_cover,
        significant_in_clusters=n_in,
        n_significant_clusters=sig_clusters,
        badges=t["badge"].value_counts().to_dict(),
    )
    print(
        f"significant SAE features: {len(sig)}; in clusters: {n_in} ({frac:.0%}); clusters (by q) holding 90% "
        f"of them: {n_cover if n_cover > 0 else 'not reachable'} (target ≤ 60); clusters with q < {ALPHA}: "
        f"{sig_clusters}; badges {out['badges']}"
    )
    rank = np.empty(len(t), dtype=np.int64)
    rank[np.lexsort((np.arange(len(t)), -t["d_z"].abs().fillna(0).to_numpy()))] = np.arange(1, len(t) + 1)
    sc, sr = audit.chosen_scores.toarray(), audit.rejected_scores.toarray()
    both, delta = np.vstack([sc, sr]), sc - sr
    df = session.data.df
    top10 = np.flatnonzero(rank <= 10)
    print("\nplanted concepts: best-matching cluster (max r of its per-response score with the truth)")
    out["planted"] = {}
    for bias in (*PLANTED, *TOPIC_PLANTED):
        tc, tr = df[f"chosen_{bias}"].to_numpy(float), df[f"rejected_{bias}"].to_numpy(float)
        truth = np.r_[tc, tr]
        rs = np.array([_corr(both[:, k], truth) for k in range(len(t))])
        k = int(np.nanargmax(rs))
        dr = np.array([_corr(delta[:, j], tc - tr) for j in range(len(t))])
        best10 = int(top10[np.nanargmax(dr[top10])]) if len(top10) else -1
        row = t.iloc[k]
        m = {
            "cluster": row["cluster"],
            "r_response": float(rs[k]),
            "rank": int(rank[k]),
            "r_delta": float(dr[k]),
            "n_members": int(row["n_members"]),
            "d_z": float(row["d_z"]),
            "q": float(row["q"]),
            "badge": row["badge"],
            "best_top10_cluster": t["cluster"].iloc[best10],
            "best_top10_r_delta": float(dr[best10]),
        }
        met = m["rank"] <= 10 and m["r_delta"] >= 0.5
        out["planted"][bias] = {**m, "target_met": bool(met)}
        print(
            f"  {bias:9s} {m['cluster']:>11s} r(resp)={m['r_response']:.2f} rank={m['rank']:>3d} (≤ 10) "
            f"r(Δ, truth Δ)={m['r_delta']:.2f} (≥ 0.5) n={m['n_members']} d_z={m['d_z']:+.2f} q={m['q']:.1e} "
            f"badge={m['badge']}; best Δ r in the top 10: {m['best_top10_r_delta']:.2f} "
            f"({m['best_top10_cluster']})  {'met' if met else 'MISSED'}"
        )
    print("\ntop 10 clusters by |d_z|:")
    for k in top10[np.argsort(rank[top10])]:
        row = t.iloc[k]
        first = ", ".join(str(f) for f in row["members"][:6])
        print(
            f"  {row['cluster']:>11s} n={row['n_members']:<4d} d_z={row['d_z']:+.2f} q={row['q']:.1e} "
            f"fire={row['fire_score']:+.3f} [{row['fire_ci_low']:+.3f}, {row['fire_ci_high']:+.3f}] "
            f"{row['badge']:8s} split-half {'✓' if row['split_half'] else '✗'} "
            f"d_z_ctrl={row['d_z_controlled']:+.2f} members {first}{' …' if row['n_members'] > 6 else ''}"
        )
    null = pa.load_demo_pairs(null=True)
    swapped = swap_encoded(session.encoded, null.df["swapped"].to_numpy())
    nt = audit_clusters(swapped.chosen.values, swapped.rejected.values, lengths=lengths).table
    out["null"] = {
        "n_swapped": int(null.df["swapped"].sum()),
        "n_q": int((nt["q"] < ALPHA).sum()),
        "n_q_fire": int((nt["q_fire"] < ALPHA).sum()),
        "min_q": float(nt["q"].min()),
        "badges": nt["badge"].value_counts().to_dict(),
    }
    print(
        f"\nnull (labels swapped at random in {out['null']['n_swapped']} pairs): clusters with q < {ALPHA}: "
        f"{out['null']['n_q']} (target 0), with q_fire < {ALPHA}: {out['null']['n_q_fire']}; min q "
        f"{out['null']['min_q']:.2f}; badges {out['null']['badges']}"
    )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--big", action="store_true", help="also 260,000 pairs × 65,536 features")
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data)))
        return 0
    figures: dict = {}
    if not args.skip_synthetic:
        for size in ("small", "big") if args.big else ("small",):
            figures[f"synthetic_{size}"] = synthetic_section(size)
    if not args.skip_demo:
        figures["demo"] = demo_section()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
