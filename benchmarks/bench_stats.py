"""Benchmark prefaudit.stats.paired_tests at SAE scale: numba engine vs numpy engine vs scipy.

    nice -n 10 .venv/bin/python benchmarks/bench_stats.py [--repeats 3] [--loop-sample 300]
        [--pairs 260000] [--features 65536] [--active 64] [--loop-pairs 10000] [--no-numpy-large]

The cases: pairs × features, about ``--active`` active features per response (feature popularity
log-normal, as SAE firing rates are; chosen and rejected drawn independently, which maximises
the non-zero Δ), CSR float32, seeded; paired_tests with its defaults (Wilcoxon, n_boot=1000,
n_splits=20). Printed side by side, in one run:

(a) ``--loop-pairs`` (10,000) pairs: paired_tests with ``engine="numba"`` and with
    ``engine="numpy"`` (the previous implementation, kept as the fallback), interleaved, best of
    ``--repeats`` (after one warm-up call that loads the compiled kernel), against a per-feature
    ``scipy.stats.wilcoxon`` loop (timed on ``--loop-sample`` random tested features and
    extrapolated to all of them). Goal: numba ≥ 100× the loop.
(b) ``--pairs`` (260,000) pairs: one paired_tests call per engine, each in a fresh subprocess
    that builds the case, times the call (wall and CPU) and reports its own peak RSS
    (``ru_maxrss``). Goals: < 15 s and < 4 GB. The numba child also times the fused per-column
    pass alone (:func:`prefaudit.stats.fused.column_pass` on the same Δ and weights), states the
    bytes it moves — per non-zero Δ its value and row (12 B) and its pair's weight row
    (n_boot + 2·n_splits bytes, gathered from a matrix far larger than the caches) — and
    compares that rate with this machine's memory bandwidth, measured in the same process as the
    best of 3 ``numpy.copyto`` of a 512 MiB float64 array (bytes read + written per second).
(c) p equal to ``scipy.stats.wilcoxon`` on sampled tested columns, at both sizes (rel. < 1e-9),
    and the largest difference between the two engines' tables.

Other processes slow every number (the 1-min load average is printed; CPU seconds are printed
beside wall seconds); compare the ratios. Exits 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from prefaudit.stats import paired_tests
from prefaudit.stats.fused import column_pass
from prefaudit.stats.resampling import resampling_weights

N_BOOT = 1000
N_SPLITS = 20
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


def copy_bandwidth(n_bytes: int = 1 << 29, repeats: int = 3) -> float:
    """Best of ``repeats`` numpy.copyto of an n_bytes float64 array: bytes read + written per second."""
    src = np.ones(n_bytes // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch the pages first
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best


def child(args: argparse.Namespace) -> None:
    """Build the large case, run one engine once, report time, RSS and the scipy check."""
    chosen, rejected = make_case(args.pairs, args.features, args.active)
    paired_tests(chosen[:50], rejected[:50], n_boot=10, engine=args.child)  # loads the compiled kernel
    with open("/proc/self/statm") as statm:  # Linux: resident pages now
        before = float(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    start, cpu = time.perf_counter(), time.process_time()
    table = paired_tests(chosen, rejected, n_boot=N_BOOT, engine=args.child)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    _, n_tested, worst = scipy_check(chosen, rejected, table, args.large_sample, timed=False)
    if args.table:
        table.to_pickle(args.table)
    report = {"wall": wall, "cpu": cpu, "before": before, "peak": peak, "worst": worst, "n_tested": n_tested}
    report["nnz"] = int(table["n_nonzero"].sum())
    if args.child == "numba":  # the fused pass alone, its bytes, and the memory bandwidth
        delta = sp.csc_array(chosen.astype(np.float64) - rejected.astype(np.float64))
        delta.sum_duplicates()
        delta.eliminate_zeros()
        del chosen, rejected
        weights = resampling_weights(
            delta.shape[0],
            n_boot=N_BOOT,
            boot_rng=np.random.default_rng(0),
            n_splits=N_SPLITS,
            split_rng=np.random.default_rng(1),
        )
        start, cpu = time.perf_counter(), time.process_time()
        column_pass(delta, weights, n_boot=N_BOOT, n_splits=N_SPLITS, alpha=0.05)
        report["pass_wall"], report["pass_cpu"] = time.perf_counter() - start, time.process_time() - cpu
        report["pass_bytes"] = delta.nnz * (12 + weights.shape[1]) + weights.nbytes
        del weights, delta
        report["bandwidth"] = copy_bandwidth()
    print(json.dumps(report))


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
    parser.add_argument("--no-numpy-large", action="store_true", help="skip the numpy engine in (b)")
    parser.add_argument("--child", choices=["numba", "numpy"], help=argparse.SUPPRESS)
    parser.add_argument("--table", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    load_before = os.getloadavg()[0]
    chosen, rejected = make_case(args.loop_pairs, args.features, args.active)
    paired_tests(chosen[:50], rejected[:50], n_boot=10, engine="numba")  # loads the compiled kernel
    times: dict[str, list[float]] = {"numba": [], "numpy": []}
    cpu_times: dict[str, list[float]] = {"numba": [], "numpy": []}
    tables = {}
    for _ in range(args.repeats):  # interleaved, so both see the same load
        for which in ("numba", "numpy"):
            start, cpu = time.perf_counter(), time.process_time()
            tables[which] = paired_tests(chosen, rejected, n_boot=N_BOOT, engine=which)
            times[which].append(time.perf_counter() - start)
            cpu_times[which].append(time.process_time() - cpu)
    best, best_numpy = min(times["numba"]), min(times["numpy"])
    per_feature, n_tested, worst = scipy_check(
        chosen, rejected, tables["numba"], args.loop_sample, timed=True
    )
    loop_total = per_feature * n_tested
    speedup = loop_total / best
    small_diff = table_difference(tables["numba"], tables["numpy"])

    with tempfile.TemporaryDirectory() as tmp:
        large = run_child(args, "numba", os.path.join(tmp, "numba.pkl"))
        numpy_large = None
        if not args.no_numpy_large:
            numpy_large = run_child(args, "numpy", os.path.join(tmp, "numpy.pkl"))
            large_diff = table_difference(
                *[pd.read_pickle(os.path.join(tmp, f"{w}.pkl")) for w in ("numba", "numpy")]
            )

    print(
        f"prefaudit.stats.paired_tests, {args.features:,} features, ≈{args.active} active per response, "
        f"CSR float32, Wilcoxon, n_boot={N_BOOT}, n_splits={N_SPLITS}"
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
        f"{int(tables['numba']['n_nonzero'].sum()):,} / {n_tested:,}",
    )
    row(f"    numba engine, best of {args.repeats}", f"{best:.2f} s")
    row("      all runs: wall | CPU (all threads), s", runs("numba"))
    row(f"    numpy engine, best of {args.repeats}", f"{best_numpy:.2f} s")
    row("      all runs: wall | CPU (all threads), s", runs("numpy"))
    cpu_ratio = min(cpu_times["numpy"]) / min(cpu_times["numba"])
    row("    numpy / numba", f"{best_numpy / best:.1f}× (CPU {cpu_ratio:.1f}×)")
    row(f"    scipy.wilcoxon loop (est., {per_feature * 1e3:.2f} ms × {n_tested:,})", f"{loop_total:.0f} s")
    row(
        "    numba speed-up over the scipy loop",
        f"{speedup:.0f}×",
        f"≥ {GOAL_SPEEDUP:g}×",
        speedup >= GOAL_SPEEDUP,
    )
    row("    numpy speed-up over the scipy loop", f"{loop_total / best_numpy:.0f}×")
    row("    max rel. table difference numba vs numpy", small_diff)
    row(f"(b) {args.pairs:,} pairs: non-zero Δ / tested", f"{large['nnz']:,} / {large['n_tested']:,}")
    row(
        "    numba engine (fresh process, wall)",
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
    rate = large["pass_bytes"] / large["pass_wall"]
    row("    fused pass alone: wall | CPU", f"{large['pass_wall']:.2f} s | {large['pass_cpu']:.2f} s")
    row("      bytes moved per pass", f"{large['pass_bytes'] / 1e9:.1f} GB")
    row("      rate | copy bandwidth", f"{rate / 1e9:.1f} | {large['bandwidth'] / 1e9:.1f} GB/s")
    row("      share of the bandwidth", f"{rate / large['bandwidth']:.0%}")
    if numpy_large is not None:
        row("    numpy engine (fresh process, wall)", f"{numpy_large['wall']:.2f} s")
        row(
            "      CPU, all threads | peak RSS",
            f"{numpy_large['cpu']:.2f} s | {numpy_large['peak'] / 1e9:.2f} GB",
        )
        ratio = f"{numpy_large['wall'] / large['wall']:.1f}× (CPU {numpy_large['cpu'] / large['cpu']:.1f}×)"
        row("    numpy / numba, (b)", ratio)
        row("    max rel. table difference numba vs numpy, (b)", large_diff)
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
