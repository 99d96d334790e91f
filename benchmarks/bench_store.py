"""Benchmark the memory-mapped feature store against reading the .npz shards into RAM; and streaming.

    nice -n 10 .venv/bin/python benchmarks/bench_store.py [--pairs 260000] [--features 65536]
        [--active 64] [--d-model 576] [--shard-size 128] [--dir DIR] [--stats] [--stream-rows 50000]

Store part. Synthetic shards as ``encode_pairs`` writes them: ``--pairs`` pairs × ``--features``
SAE features, about ``--active`` active per response (feature popularity log-normal, as SAE
firing rates are), ``--d-model`` floats of mean activation per response, ``--shard-size`` pairs
per ``.npz`` shard. The shards are merged once into the store (timed). Then, each in a fresh
subprocess so that its peak RSS (``ru_maxrss``) is its own, side by side:

(a) npz: ``EncodedFeatures.concat`` of every shard loaded into RAM (what ``encode_pairs`` returns
    today), then the drill-down's top-10 pairs of one feature by Δ through ``FeatureMatrix.column``
    (the session's path: hstack with the concept columns, then CSC of the whole matrix);
(b) store: ``EncodedFeatures.open`` of the store (memory-mapped), then the same top-10 through
    ``SidePooled.column`` (reads one feature's entries from the column-major copy);
(c) store, session path: the same top-10 through ``FeatureMatrix.column`` on the mapped store,
    i.e. what the drill-down does until ``FeatureMatrix.column`` reads ``SidePooled.column``.
With ``--stats``: (d) ``paired_tests`` through ``FeatureMatrix`` on the mapped store (the session's
statistics path): its peak RSS against the size of Δ held dense.

Stream part (``--stream-rows`` N > 0): parquet files of N and 4N rows; ``stream_pairs`` read to the
end (chunks dropped as they come) against ``load_pairs``, each in a subprocess: peak RSS, and the
ratio 4N/N (flat for streaming, growing for the whole-file load).

Other processes slow every number (the 1-minute load average is printed); compare the ratios.
The page cache is warm (the files were just written): open times are those of a warm cache.
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
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from prefaudit.features.encoded import EncodedFeatures, SidePooled
from prefaudit.features.store import STORE_DIR, build_store

N_CONCEPTS = 20  # about the number of built-in text concepts a session adds as columns
TOP = 10


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_now() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


# ----------------------------------------------------------------------------------- the case
def make_shards(
    folder: Path, n_pairs: int, d_sae: int, active: int, d_model: int, shard_size: int
) -> list[Path]:
    rng = np.random.default_rng(0)
    popularity = rng.lognormal(0.0, 1.0, d_sae)
    cdf = np.cumsum(popularity / popularity.sum())

    def side(n: int) -> SidePooled:
        cols = np.minimum(np.searchsorted(cdf, rng.random((n, active))), d_sae - 1)
        cols.sort(axis=1)
        keep = np.ones_like(cols, dtype=bool)
        keep[:, 1:] = cols[:, 1:] != cols[:, :-1]  # a feature drawn twice: once
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(keep.sum(axis=1), out=indptr[1:])
        nnz = int(indptr[-1])
        values = sp.csr_matrix(
            (rng.lognormal(0.0, 0.75, nnz).astype(np.float32), cols[keep].astype(np.int32), indptr),
            shape=(n, d_sae),
        )
        n_tok = rng.integers(5, 256, n).astype(np.int32)
        return SidePooled(
            values=values,
            top_token=rng.integers(0, 49152, nnz).astype(np.int32),
            top_pos=rng.integers(0, 256, nnz).astype(np.int32),
            mean_act=rng.standard_normal((n, d_model), dtype=np.float32),
            n_tokens=n_tok,
            truncated=n_tok >= 255,
            full_length=n_tok,
        )

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s, lo in enumerate(range(0, n_pairs, shard_size)):
        n = min(shard_size, n_pairs - lo)
        enc = EncodedFeatures(
            chosen=side(n),
            rejected=side(n),
            pooling="max",
            prompt_length=rng.integers(1, 400, n).astype(np.int32),
            prompt_cut=np.zeros(n, dtype=bool),
        )
        paths.append(folder / f"shard-{s:05d}.npz")
        enc.save(paths[-1])
    return paths


def _feature(enc: EncodedFeatures) -> int:
    """A popular feature (the drill-down's usual focus), the same in every child."""
    return int(np.argmax(np.diff(enc.chosen.by_column.indptr))) if enc.chosen.by_column is not None else -1


# ----------------------------------------------------------------------------------- children
def child(mode: str, folder: Path, feature: int) -> dict:
    from prefaudit.features.matrix import FeatureMatrix

    out: dict = {"mode": mode, "rss_start": _rss_now()}
    t0 = time.perf_counter()
    if mode == "npz":
        shards = sorted(folder.glob("shard-*.npz"))
        enc = EncodedFeatures.concat([EncodedFeatures.load(p) for p in shards])
    else:
        enc = EncodedFeatures.open(folder / STORE_DIR)
    out["open_s"] = time.perf_counter() - t0
    out["rss_after_open"] = _rss_now()
    concepts = np.random.default_rng(1).random((enc.n_pairs, N_CONCEPTS))
    if mode == "stats":
        from prefaudit.stats import paired_tests

        t0 = time.perf_counter()
        m = FeatureMatrix.from_parts(enc, concepts, concepts[::-1].copy())
        table = paired_tests(m.chosen, m.rejected, lengths=enc.full_lengths())
        out["stats_s"] = time.perf_counter() - t0
        out["n_tested"] = int((table["n_nonzero"] > 0).sum())
        out["dense_delta_bytes"] = enc.n_pairs * m.shape[1] * 8
    else:
        t0 = time.perf_counter()
        if mode == "store":
            c, r = enc.chosen.column(feature), enc.rejected.column(feature)
        else:  # the session's drill-down path: FeatureMatrix over SAE + concept columns
            c, r = FeatureMatrix.from_parts(enc, concepts, concepts).column(feature)
        top = np.argsort(-(c - r), kind="stable")[:TOP]
        out["topk_s"] = time.perf_counter() - t0
        out["top"] = top.tolist()
    out["peak_rss"] = _peak_rss()
    return out


def run_child(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stream_child(mode: str, path: Path) -> dict:
    from prefaudit.pairs import load_pairs
    from prefaudit.pairs.stream import stream_pairs

    rss0, t0 = _rss_now(), time.perf_counter()
    if mode == "stream":
        stream = stream_pairs(path, batch_rows=5_000)
        kept = sum(len(chunk) for chunk in stream)  # each chunk is dropped once counted
        report = stream.report
    else:
        pairs = load_pairs(path)
        kept, report = len(pairs), pairs.report
    return {
        "mode": mode,
        "rows": report.n_read,
        "kept": kept,
        "rejected": len(report.rejected),
        "s": time.perf_counter() - t0,
        "rss_start": rss0,
        "peak_rss": _peak_rss(),
    }


def write_parquet(path: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    words = np.array(["the", "a", "model", "answer", "question", "helpful", "refuse", "sorry", "here", "is"])
    writer = None
    for lo in range(0, n, 10_000):
        k = min(10_000, n - lo)
        text = [" ".join(words[rng.integers(0, len(words), 120)]) for _ in range(k)]
        rejected = [t[::-1] if (lo + i) % 97 else t for i, t in enumerate(text)]  # some identical: rejected
        table = pa.table(
            {"prompt": [f"question {lo + i}" for i in range(k)], "chosen": text, "rejected": rejected}
        )
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=10_000)
    assert writer is not None
    writer.close()


# ----------------------------------------------------------------------------------- main
def _gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


def bench_store(a: argparse.Namespace, root: Path) -> None:
    folder = root / "encode"
    t0 = time.perf_counter()
    shards = make_shards(folder, a.pairs, a.features, a.active, a.d_model, a.shard_size)
    size = sum(p.stat().st_size for p in shards)
    print(f"wrote {len(shards)} shards ({_gb(size)}) in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    build = subprocess.run(
        [sys.executable, __file__, "--child", "build", str(folder), "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    built = json.loads(build.stdout.strip().splitlines()[-1])
    store_size = sum(p.stat().st_size for p in (folder / STORE_DIR).iterdir())
    print(
        f"merged into the store ({_gb(store_size)}, incl. the column-major copy) in "
        f"{time.perf_counter() - t0:.0f} s, peak RSS {_gb(built['peak_rss'])}"
    )
    feature = _feature(EncodedFeatures.open(folder / STORE_DIR))
    rows = {mode: run_child([mode, str(folder), str(feature)]) for mode in ("npz", "store", "session")}
    if rows["npz"]["top"] != rows["store"]["top"] or rows["npz"]["top"] != rows["session"]["top"]:
        raise SystemExit("the top pairs differ between the npz and the store reads")
    print(f"\n{'':34}{'npz in RAM':>14}{'store (mmap)':>14}{'store, session':>16}")
    for key, label in (("open_s", "open (s)"), ("topk_s", f"top-{TOP} pairs of feature {feature} (s)")):
        print(
            f"{label:34}"
            + "".join(f"{rows[m][key]:>{w}.3f}" for m, w in (("npz", 14), ("store", 14), ("session", 16)))
        )
    for key, label in (("rss_after_open", "RSS after open"), ("peak_rss", "peak RSS")):
        print(
            f"{label:34}"
            + "".join(f"{_gb(rows[m][key]):>{w}}" for m, w in (("npz", 14), ("store", 14), ("session", 16)))
        )
    n, s = rows["npz"], rows["store"]
    print(
        f"\nratios npz / store: open {n['open_s'] / s['open_s']:.0f}x, "
        f"RSS after open {(n['rss_after_open'] - n['rss_start']) / max(1, s['rss_after_open'] - s['rss_start']):.0f}x "
        f"(above the interpreter's own), peak RSS {n['peak_rss'] / s['peak_rss']:.1f}x, "
        f"top-{TOP} read {n['topk_s'] / s['topk_s']:.0f}x; "
        f"session path on the store / store column read: {rows['session']['topk_s'] / s['topk_s']:.0f}x slower"
    )
    if a.stats:
        st = run_child(["stats", str(folder), str(feature)])
        print(
            f"\npaired_tests through FeatureMatrix on the mapped store: {st['stats_s']:.0f} s, peak RSS "
            f"{_gb(st['peak_rss'])}; Δ held dense would be {_gb(st['dense_delta_bytes'])} "
            f"({st['dense_delta_bytes'] / st['peak_rss']:.1f}x the peak); {st['n_tested']} features tested"
        )


def bench_stream(a: argparse.Namespace, root: Path) -> None:
    sizes = (a.stream_rows, 4 * a.stream_rows)
    out = {}
    for n in sizes:
        path = root / f"pairs-{n}.parquet"
        write_parquet(path, n)
        for mode in ("stream", "load"):
            cmd = [sys.executable, __file__, "--stream-child", mode, str(path)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out[mode, n] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n{'':28}" + "".join(f"{f'{n:,} rows':>16}" for n in sizes) + f"{'ratio':>8}")
    for mode, label in (("stream", "stream_pairs peak RSS"), ("load", "load_pairs peak RSS")):
        small, big = out[mode, sizes[0]], out[mode, sizes[1]]
        cells = "".join(f"{_gb(out[mode, n]['peak_rss']):>16}" for n in sizes)
        print(f"{label:28}{cells}{big['peak_rss'] / small['peak_rss']:>7.2f}x")
    for n in sizes:
        s, w = out["stream", n], out["load", n]
        assert (s["rows"], s["kept"], s["rejected"]) == (w["rows"], w["kept"], w["rejected"])
        print(
            f"{n:,} rows: stream {s['s']:.1f} s, load {w['s']:.1f} s; kept {s['kept']:,}, rejected {s['rejected']:,}"
        )


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        mode, folder, feature = sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
        if mode == "build":
            build_store(sorted(folder.glob("shard-*.npz")), folder / STORE_DIR)
            print(json.dumps({"peak_rss": _peak_rss()}))
        else:
            print(json.dumps(child(mode, folder, feature)))
        return
    if sys.argv[1:2] == ["--stream-child"]:
        print(json.dumps(stream_child(sys.argv[2], Path(sys.argv[3]))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=260_000)
    p.add_argument("--features", type=int, default=65_536)
    p.add_argument("--active", type=int, default=64)
    p.add_argument("--d-model", type=int, default=576)
    p.add_argument("--shard-size", type=int, default=128)
    p.add_argument(
        "--dir", type=Path, default=None, help="where to write the case (default: a temporary folder)"
    )
    p.add_argument("--stats", action="store_true", help="also run paired_tests on the mapped store")
    p.add_argument("--stream-rows", type=int, default=50_000, help="0 skips the stream part")
    p.add_argument("--no-store", action="store_true", help="skip the store part")
    a = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        if not a.no_store:
            bench_store(a, Path(tmp))
        if a.stream_rows > 0:
            bench_stream(a, Path(tmp))


if __name__ == "__main__":
    main()
