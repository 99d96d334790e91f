"""Benchmark prefaudit.stats.paired_tests at SAE scale, against scipy and the previous implementation.

    .venv/bin/python benchmarks/bench_stats.py [--repeats 3] [--loop-sample 300]
        [--pairs 260000] [--features 65536] [--active 64] [--loop-pairs 10000] [--no-baseline-large]

The cases: pairs × features, about ``--active`` active features per response (feature popularity
log-normal, as SAE firing rates are; chosen and rejected drawn independently, which maximises
the non-zero Δ), CSR float32, seeded; paired_tests with its defaults (Wilcoxon, n_boot=1000,
n_splits=20). Printed side by side, in one run:

(a) ``--loop-pairs`` (10,000) pairs: paired_tests, best of ``--repeats``, against a per-feature
    ``scipy.stats.wilcoxon`` loop (timed on ``--loop-sample`` random tested features and
    extrapolated to all of them). Goal: ≥ 100×.
(b) ``--pairs`` (260,000) pairs: one paired_tests call in a fresh subprocess, which builds the
    case, times the call (wall and CPU) and reports its own peak RSS (``ru_maxrss``), so nothing
    allocated earlier counts. Goals: < 15 s and < 4 GB.
(c) p equal to ``scipy.stats.wilcoxon`` on sampled tested columns, at both sizes (rel. < 1e-9).
(d) The previous implementation (``baseline_paired_tests`` below, copied from the commit before
    the rewrite, kept here for timing only): timed at both sizes the same way (interleaved with
    the new one at the small size), the ratio, and how far its table is from the new one.

Other processes slow every number (the 1-min load average is printed); compare the ratios.
Exits 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from prefaudit.stats import PAIRED_TEST_COLUMNS, benjamini_hochberg, paired_tests
from prefaudit.stats.inputs import as_canonical_csc
from prefaudit.stats.pvalues import wilcoxon_pvalues
from prefaudit.stats.ranks import SignedRanks, _padded_width, sort_keys
from prefaudit.stats.resampling import _interpolate, _virtual_index

N_BOOT = 1000
GOAL_SPEEDUP = 100.0
GOAL_SECONDS = 15.0
GOAL_RSS_BYTES = 4e9
GOAL_P_RELATIVE = 1e-9


def make_case(n_pairs: int, n_features: int, active: int, seed: int = 0) -> tuple[sp.csr_array, sp.csr_array]:
    """Chosen and rejected pooled activations, (n_pairs × n_features) CSR float32."""
    rng = np.random.default_rng(seed)
    popularity = rng.lognormal(0.0, 1.0, n_features)
    popularity /= popularity.sum()

    def one_side() -> sp.csr_array:
        columns = rng.choice(n_features, size=(n_pairs, active), p=popularity)
        columns.sort(axis=1)
        values = rng.lognormal(0.0, 0.75, size=columns.shape).astype(np.float32)
        indptr = np.arange(0, columns.size + 1, active)
        m = sp.csr_array((values.ravel(), columns.ravel(), indptr), shape=(n_pairs, n_features))
        m.sum_duplicates()  # a feature drawn twice for one response: ≈ active distinct per response
        return m

    return one_side(), one_side()


# ---- The previous implementation (Wilcoxon path, no lengths), for timing and comparison only ----


def _old_column_sums(m: sp.csc_array) -> np.ndarray:
    column = np.repeat(np.arange(m.shape[1]), np.diff(m.indptr))
    return np.bincount(column, weights=m.data, minlength=m.shape[1])


def _old_signed_ranks(delta: sp.csc_array) -> SignedRanks:
    indptr = delta.indptr.astype(np.int64)
    k = np.diff(indptr)
    n_features = k.size
    n_positive, w_plus = np.zeros(n_features, np.int64), np.zeros(n_features)
    tie_term, has_ties = np.zeros(n_features), np.zeros(n_features, bool)
    tested = np.flatnonzero(k)
    if tested.size == 0:
        return SignedRanks(k, n_positive, w_plus, tie_term, has_ties)
    keys_all, widths = sort_keys(delta.data), _padded_width(k[tested])
    order = np.argsort(widths, kind="stable")
    out_keys, out_columns = [], []
    for group in np.split(order, np.flatnonzero(np.diff(widths[order])) + 1):
        width = int(widths[group[0]])
        offsets = np.arange(width)
        step = max(1, (1 << 22) // width)
        for start in range(0, group.size, step):
            cols = tested[group[start : start + step]]
            valid = offsets < k[cols][:, None]
            index = np.minimum(indptr[cols][:, None] + offsets, keys_all.size - 1)
            block = np.where(valid, keys_all[index], np.iinfo(np.uint64).max)
            block.sort(axis=1)
            out_keys.append(block[valid])
            out_columns.append(cols)
    columns = np.concatenate(out_columns)
    keys, counts = np.concatenate(out_keys), k[columns]
    starts = np.cumsum(counts) - counts
    ends = starts + counts
    positive = (keys & np.uint64(1)).astype(np.int64)
    cum_positive = np.concatenate([[0], np.cumsum(positive)])
    cum_weighted = np.concatenate([[0], np.cumsum(positive * np.arange(1, keys.size + 1))])
    positives = cum_positive[ends] - cum_positive[starts]
    w = ((cum_weighted[ends] - cum_weighted[starts]) - starts * positives).astype(np.float64)
    magnitude = keys >> np.uint64(1)
    repeats = magnitude[1:] == magnitude[:-1]
    repeats[starts[1:] - 1] = False
    follower = np.flatnonzero(repeats) + 1
    tie = np.zeros(columns.size)
    if follower.size:
        first = np.concatenate([[True], np.diff(follower) > 1])
        run_start = follower[first] - 1
        run_end = np.append(follower[np.flatnonzero(first)[1:] - 1], follower[-1]) + 1
        t = (run_end - run_start).astype(np.float64)
        run_positive = cum_positive[run_end] - cum_positive[run_start]
        shift = run_positive * (run_start + 1 + (t - 1) / 2) - (
            cum_weighted[run_end] - cum_weighted[run_start]
        )
        run_column = np.searchsorted(starts, run_start, side="right") - 1
        w += np.bincount(run_column, weights=shift, minlength=columns.size)
        tie = np.bincount(run_column, weights=t**3 - t, minlength=columns.size)
        has_ties[columns[np.unique(run_column)]] = True
    n_positive[columns], w_plus[columns], tie_term[columns] = positives, w, tie
    return SignedRanks(k.astype(np.int64), n_positive, w_plus, tie_term, has_ties)


def _old_bootstrap(delta, n_boot, alpha, rng, columns):
    n_pairs, n_features = delta.shape
    indptr = delta.indptr.astype(np.int64)
    k = np.diff(indptr)
    low = np.where(k == 0, 0.0, np.nan)
    high = low.copy()
    counts = np.empty((n_pairs, n_boot), dtype=np.uint8)
    block = np.empty((min(64, n_boot), n_pairs), dtype=np.int64)
    for start in range(0, n_boot, 64):
        stop = min(start + 64, n_boot)
        for b in range(start, stop):
            block[b - start] = np.bincount(rng.integers(0, n_pairs, size=n_pairs), minlength=n_pairs)
        counts[:, start:stop] = block[: stop - start].T
    values = delta.data.astype(np.float32)
    (below_low, t_low), (below_high, t_high) = (
        _virtual_index(n_boot, alpha / 2),
        _virtual_index(n_boot, 1 - alpha / 2),
    )
    picks = [below_low, min(below_low + 1, n_boot - 1), below_high, min(below_high + 1, n_boot - 1)]
    tails, local, unit = np.empty((n_features, 4), dtype=np.float32), threading.local(), 1 << 20

    def gathered(n_rows):
        need = n_rows * n_boot
        buffers = getattr(local, "buffers", None)
        if buffers is None or buffers[0].size < need:
            buffers = local.buffers = (np.empty(need, np.uint8), np.empty(need, np.float32))
        return buffers[0][:need].reshape(n_rows, n_boot), buffers[1][:need].reshape(n_rows, n_boot)

    def run(task):
        cols, rows, vals = task
        raw, scaled = gathered(rows.size)
        np.take(counts, rows.ravel(), axis=0, out=raw, mode="clip")
        np.copyto(scaled, raw, casting="unsafe")
        sums = np.matmul(vals[:, None, :], scaled.reshape(*rows.shape, n_boot))[:, 0, :]
        sums.sort(axis=1)
        tails[cols] = sums[:, picks]

    def run_long(col):
        sums = np.zeros(n_boot, dtype=np.float32)
        for start in range(indptr[col], indptr[col + 1], max(1, unit // n_boot)):
            stop = min(start + max(1, unit // n_boot), indptr[col + 1])
            raw, scaled = gathered(stop - start)
            np.take(counts, delta.indices[start:stop], axis=0, out=raw, mode="clip")
            np.copyto(scaled, raw, casting="unsafe")
            sums += values[start:stop] @ scaled
        sums.sort()
        tails[col] = sums[picks]

    units, long_columns = [], []
    by_width = columns[np.argsort(k[columns], kind="stable")]
    for group in np.split(by_width, np.flatnonzero(np.diff(k[by_width])) + 1):
        width = int(k[group[0]])
        if width * n_boot > unit:
            long_columns.extend(group.tolist())
            continue
        index = indptr[group][:, None] + np.arange(width)
        rows, vals, per = delta.indices[index], values[index], unit // (width * n_boot)
        units.extend(
            (group[i : i + per], rows[i : i + per], vals[i : i + per]) for i in range(0, group.size, per)
        )
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        list(pool.map(run, units))
        list(pool.map(run_long, long_columns))
    low[columns] = _interpolate(tails[columns, :2], t_low) / n_pairs
    high[columns] = _interpolate(tails[columns, 2:], t_high) / n_pairs
    return low, high


def baseline_paired_tests(chosen, rejected, *, n_boot=N_BOOT, n_splits=20, seed=0, alpha=0.05):
    """paired_tests(chosen, rejected, n_boot=…) before the rewrite (Wilcoxon, no lengths)."""
    seeds = np.random.SeedSequence(seed)
    c, r = as_canonical_csc(chosen, "chosen"), as_canonical_csc(rejected, "rejected")
    n_pairs, n_features = c.shape
    delta = sp.csc_array(c - r)
    delta.sum_duplicates()
    delta.eliminate_zeros()
    ones = [sp.csc_array((np.ones(m.nnz), m.indices, m.indptr), shape=m.shape) for m in (c, r)]
    n_active = np.diff((ones[0] + ones[1]).indptr)
    mean = _old_column_sums(delta) / n_pairs
    k = np.diff(delta.indptr)
    deviation = delta.data - np.repeat(mean, k)
    ss = np.bincount(np.repeat(np.arange(n_features), k), weights=deviation**2, minlength=n_features)
    variance = (ss + (n_pairs - k) * mean**2) / (n_pairs - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        d_z = np.where(np.sqrt(variance) > 0, mean / np.sqrt(variance), np.nan)
    ranks = _old_signed_ranks(delta)
    tested = ranks.n_nonzero > 0
    p = wilcoxon_pvalues(ranks, delta)
    p[~tested] = 1.0
    q = np.where(tested, np.nan, 1.0)
    q[tested & np.isfinite(p)] = benjamini_hochberg(p[tested & np.isfinite(p)])
    columns = np.flatnonzero(tested)
    ci_low, ci_high = _old_bootstrap(delta, n_boot, alpha, np.random.default_rng(seeds), columns)
    split_rng = np.random.default_rng(np.random.SeedSequence(seeds.entropy, spawn_key=(1,)))
    first = np.zeros((n_pairs, n_splits))
    for s in range(n_splits):
        first[split_rng.permutation(n_pairs)[: n_pairs // 2], s] = 1.0
    sums = (delta.T @ np.hstack([first, 1.0 - first]))[columns].reshape(len(columns), 2, n_splits)
    split = np.full(n_features, np.nan)
    split[columns] = ((np.sign(sums[:, 0]) == np.sign(sums[:, 1])) & (np.sign(sums[:, 0]) != 0)).mean(axis=1)
    nan = np.full(n_features, np.nan)
    return pd.DataFrame(
        {
            "feature": [str(j) for j in range(n_features)],
            "source": ["sae"] * n_features,
            "label": [""] * n_features,
            "n_pairs": np.full(n_features, n_pairs, dtype=np.int64),
            "n_active": n_active.astype(np.int64),
            "frac_active_chosen": np.diff(c.indptr) / n_pairs,
            "frac_active_rejected": np.diff(r.indptr) / n_pairs,
            "mean_chosen": _old_column_sums(c) / n_pairs,
            "mean_rejected": _old_column_sums(r) / n_pairs,
            "delta_mean": mean,
            "d_z": d_z,
            "rank_biserial": ranks.rank_biserial,
            "ci_low": ci_low,
            "ci_high": ci_high,
            "p": p,
            "q": q,
            "split_half_agree": split,
            "delta_len_ctrl": nan,
            "p_len_ctrl": nan.copy(),
            "direction": np.where(mean > 0, "chosen", np.where(mean < 0, "rejected", "none")).tolist(),
            "n_nonzero": ranks.n_nonzero,
            "constant_delta": np.zeros(len(mean), bool),
        },
        columns=list(PAIRED_TEST_COLUMNS),
    )


# ---- Measurements ----


def scipy_check(chosen, rejected, table: pd.DataFrame, sample: int, timed: bool) -> tuple[float, int, float]:
    """``scipy.stats.wilcoxon`` on a random sample of tested features.

    Returns (seconds per feature, number of tested features, largest relative p difference).
    """
    delta = sp.csc_array(chosen.astype(np.float64) - rejected.astype(np.float64))
    delta.eliminate_zeros()
    tested = np.flatnonzero(np.diff(delta.indptr))
    picked = np.random.default_rng(1).choice(tested, size=min(sample, tested.size), replace=False)
    column, worst, table_p = np.zeros(delta.shape[0]), 0.0, table["p"].to_numpy()
    start = time.perf_counter()
    for j in picked:
        column[:] = 0.0
        lo, hi = delta.indptr[j], delta.indptr[j + 1]
        column[delta.indices[lo:hi]] = delta.data[lo:hi]
        p = stats.wilcoxon(column).pvalue
        worst = max(worst, abs(p - table_p[j]) / p)
    seconds = (time.perf_counter() - start) / picked.size if timed else float("nan")
    return seconds, tested.size, worst


def table_difference(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """The largest |a − b| / max(|b|, mean |b| of its column) over the numeric columns, and any
    other mismatch (a value near 0, such as a CI end, is compared on its column's scale)."""
    worst, where, other = 0.0, "", []
    if list(a.columns) != list(b.columns):
        return "different columns"
    for name in a.columns:
        if a[name].dtype.kind not in "fi":
            if not a[name].equals(b[name]):
                other.append(f"{name}: {int((a[name] != b[name]).sum())} differ")
            continue
        x, y = a[name].to_numpy(float), b[name].to_numpy(float)
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            other.append(f"{name}: NaN in different rows")
        ok = ~np.isnan(x) & ~np.isnan(y)
        scale = np.maximum(np.abs(y[ok]), np.mean(np.abs(y[ok])) if ok.any() else 0.0) + 1e-300
        diff = float(np.max(np.abs(x[ok] - y[ok]) / scale, initial=0.0))
        if diff > worst:
            worst, where = diff, name
    return f"{worst:.1e} ({where})" + "".join(f"; {o}" for o in other)


def child(args: argparse.Namespace) -> None:
    """Build the large case, run one implementation once, report time, RSS and the scipy check."""
    chosen, rejected = make_case(args.pairs, args.features, args.active)
    run = baseline_paired_tests if args.child == "old" else paired_tests
    with open("/proc/self/statm") as statm:  # Linux: resident pages now
        before = float(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    start, cpu = time.perf_counter(), time.process_time()
    table = run(chosen, rejected, n_boot=N_BOOT)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    _, n_tested, worst = scipy_check(chosen, rejected, table, args.large_sample, timed=False)
    if args.table:
        table.to_pickle(args.table)
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu": cpu,
                "before": before,
                "peak": peak,
                "worst": worst,
                "n_tested": n_tested,
                "nnz": int(table["n_nonzero"].sum()),
            }
        )
    )


def run_child(args: argparse.Namespace, which: str, table_path: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", which, "--table", table_path]
    for name in ("pairs", "features", "active", "large_sample"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-sample", type=int, default=300, help="features timed in the scipy loop")
    parser.add_argument("--loop-pairs", type=int, default=10_000, help="pairs of case (a)")
    parser.add_argument("--pairs", type=int, default=260_000, help="pairs of case (b)")
    parser.add_argument("--features", type=int, default=65_536)
    parser.add_argument("--active", type=int, default=64, help="active features per response")
    parser.add_argument("--large-sample", type=int, default=40, help="features checked against scipy in (b)")
    parser.add_argument("--no-baseline-large", action="store_true", help="skip the old implementation in (b)")
    parser.add_argument("--child", choices=["new", "old"], help=argparse.SUPPRESS)
    parser.add_argument("--table", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    load_before = os.getloadavg()[0]
    chosen, rejected = make_case(args.loop_pairs, args.features, args.active)
    times: dict[str, list[float]] = {"new": [], "old": []}
    cpu_times: dict[str, list[float]] = {"new": [], "old": []}
    tables = {}
    for _ in range(args.repeats):  # interleaved, so both see the same load
        for which, run in (("new", paired_tests), ("old", baseline_paired_tests)):
            start, cpu = time.perf_counter(), time.process_time()
            tables[which] = run(chosen, rejected, n_boot=N_BOOT)
            times[which].append(time.perf_counter() - start)
            cpu_times[which].append(time.process_time() - cpu)
    best, best_old = min(times["new"]), min(times["old"])
    per_feature, n_tested, worst = scipy_check(chosen, rejected, tables["new"], args.loop_sample, timed=True)
    loop_total = per_feature * n_tested
    speedup = loop_total / best
    small_diff = table_difference(tables["new"], tables["old"])

    with tempfile.TemporaryDirectory() as tmp:
        large = run_child(args, "new", os.path.join(tmp, "new.pkl"))
        old_large = None if args.no_baseline_large else run_child(args, "old", os.path.join(tmp, "old.pkl"))
        if old_large is not None:
            tables_large = [pd.read_pickle(os.path.join(tmp, f"{w}.pkl")) for w in ("new", "old")]
            large_diff = table_difference(*tables_large)

    print(
        f"prefaudit.stats.paired_tests, {args.features:,} features, ≈{args.active} active per response, "
        f"CSR float32, Wilcoxon, n_boot={N_BOOT}, n_splits=20"
    )
    print(
        f"1-min load average {load_before:.2f} → {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
        "(other processes slow every number here; the ratios are measured side by side)"
    )
    rows: list[tuple[str, str, str, bool | None]] = []

    def row(name: str, value: str, goal: str = "", ok: bool | None = None) -> None:
        rows.append((name, value, goal, ok))

    def runs(which: str) -> str:
        return (
            ", ".join(f"{t:.2f}" for t in times[which])
            + " | "
            + ", ".join(f"{t:.2f}" for t in cpu_times[which])
        )

    gp = f"< {GOAL_P_RELATIVE:g}"
    row(
        f"(a) {args.loop_pairs:,} pairs: non-zero Δ / tested",
        f"{int(tables['new']['n_nonzero'].sum()):,} / {n_tested:,}",
    )
    row(f"    paired_tests, best of {args.repeats}", f"{best:.2f} s")
    row("      all runs: wall | CPU (all threads), s", runs("new"))
    row(f"    scipy.wilcoxon loop (est., {per_feature * 1e3:.2f} ms × {n_tested:,})", f"{loop_total:.0f} s")
    row(
        "    speed-up over the scipy loop", f"{speedup:.0f}×", f"≥ {GOAL_SPEEDUP:g}×", speedup >= GOAL_SPEEDUP
    )
    row(f"(b) {args.pairs:,} pairs: non-zero Δ / tested", f"{large['nnz']:,} / {large['n_tested']:,}")
    row(
        "    paired_tests (fresh process, wall)",
        f"{large['wall']:.2f} s",
        f"< {GOAL_SECONDS:g} s",
        large["wall"] < GOAL_SECONDS,
    )
    row("      CPU, all threads", f"{large['cpu']:.2f} s")
    row(
        "    peak RSS of that process",
        f"{large['peak'] / 1e9:.2f} GB",
        f"< {GOAL_RSS_BYTES / 1e9:g} GB",
        large["peak"] < GOAL_RSS_BYTES,
    )
    row("      RSS just before the call", f"{large['before'] / 1e9:.2f} GB")
    row(
        f"(c) max rel. |p − scipy p|, {args.loop_sample} features of (a)",
        f"{worst:.1e}",
        gp,
        worst < GOAL_P_RELATIVE,
    )
    row(
        f"    the same, {args.large_sample} features of (b)",
        f"{large['worst']:.1e}",
        gp,
        large["worst"] < GOAL_P_RELATIVE,
    )
    row(f"(d) previous implementation, (a), best of {args.repeats}", f"{best_old:.2f} s")
    row("      all runs: wall | CPU, s", runs("old"))
    cpu_ratio = min(cpu_times["old"]) / min(cpu_times["new"])
    row("    old / new, (a)", f"{best_old / best:.1f}× (CPU {cpu_ratio:.1f}×)")
    row("    max rel. table difference, (a)", small_diff)
    if old_large is not None:
        row("    previous implementation, (b)", f"{old_large['wall']:.2f} s")
        row(
            "      CPU, all threads | peak RSS",
            f"{old_large['cpu']:.2f} s | {old_large['peak'] / 1e9:.2f} GB",
        )
        ratio = f"{old_large['wall'] / large['wall']:.1f}× (CPU {old_large['cpu'] / large['cpu']:.1f}×)"
        row("    old / new, (b)", ratio)
        row("    max rel. table difference, (b)", large_diff)
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  {'value':>24}  {'goal':>8}  ok")
    for name, value, goal, ok in rows:
        print(f"{name:<{width}}  {value:>24}  {goal:>8}  {'' if ok is None else ('yes' if ok else 'NO')}")
    missed = [r[0].strip() for r in rows if r[3] is False]
    if missed:
        print("missed: " + "; ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
