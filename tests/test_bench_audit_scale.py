"""benchmarks/bench_audit_scale.py at a tiny size: every stage runs, and the figures are well formed.

No timings are asserted (speed is the benchmark's business, docs/SCALE.md); these check that the
run covers every stage a person touches, records a failing or overlong stage and carries on, and
builds the case it claims (HH texts repeated, ≈ ``active`` latents per response in the store).
"""

from __future__ import annotations

import json
import math
import mmap
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _scale_data as data  # noqa: E402
import bench_audit_scale as bench  # noqa: E402


def _mapped(a: np.ndarray) -> bool:
    """Whether ``a`` is a view of a memory-mapped file (not a copy in RAM)."""
    while a is not None and not isinstance(a, mmap.mmap):
        a = getattr(a, "base", None)
    return isinstance(a, mmap.mmap)


def test_hh_rows_repeat_the_kept_rows_in_order(hh_path: Path) -> None:
    import gzip

    import prefaudit as pa

    with gzip.open(hh_path, "rt", encoding="utf-8") as fh:
        slice_rows = [json.loads(line) for line in fh if line.strip()]
    dropped = {r.index for r in pa.load_pairs(slice_rows).report.rejected}
    kept = [r for i, r in enumerate(slice_rows) if i not in dropped]
    rows = data.hh_rows(2 * len(kept) + 7, hh_path)
    assert rows == kept + kept + kept[:7]
    assert not pa.load_pairs(rows).report.rejected  # every row is a pair the audit keeps


def test_the_store_holds_about_active_latents_per_response(tmp_path: Path) -> None:
    from prefaudit.features.encoded import EncodedFeatures

    n, d, active = 300, 2_048, 64
    tokens = (np.full(n, 30, np.int32), np.arange(1, n + 1, dtype=np.int32))
    enc = EncodedFeatures.open(
        data.write_feature_store(tmp_path, tokens, d, active=active, d_model=8, vocab=50)
    )
    assert (enc.n_pairs, enc.d_sae) == (n, d)
    per_response = np.diff(enc.chosen.values.indptr)
    assert 0.8 * active < per_response.mean() < 1.2 * active
    assert _mapped(enc.chosen.values.data)  # the mapped store, not RAM
    assert enc.rejected.top_token.max() < 50
    rows = np.repeat(np.arange(n), np.diff(enc.rejected.values.indptr))
    assert (enc.rejected.top_pos < tokens[1][rows]).all()  # a peak lies inside its response


def test_a_failing_or_overlong_stage_is_recorded_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(ctx: SimpleNamespace) -> str:
        raise ValueError("no such feature")

    def slow(ctx: SimpleNamespace) -> str:
        time.sleep(5)
        return "finished"

    stages = [("first", lambda ctx: "a"), ("boom", boom), ("slow", slow), ("after", lambda ctx: "b")]
    monkeypatch.setattr(bench, "STAGES", stages)
    records = tmp_path / "records.jsonl"
    args = bench.parse(["--stage-limit", "1"])
    case = {"model": None, "sae_dir": "sae", "store": "store", "out": str(tmp_path)}
    bench.run_session(args, case, 1, records)  # from the second stage: "first" is skipped
    ends = [r for r in map(json.loads, records.read_text().splitlines()) if r["event"] == "end"]
    assert [(r["stage"], r["status"]) for r in ends] == [
        ("boom", "failed"),
        ("slow", "failed"),
        ("after", "ok"),
    ]
    assert ends[0]["note"] == "ValueError: no such feature"
    assert ends[1]["note"] == "ran past 1 s" and ends[1]["seconds"] < 5
    assert ends[2]["note"] == "b" and ends[2]["peak_rss_gb"] > 0


def test_stages_after_a_failed_prerequisite_say_why_they_did_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(ctx: SimpleNamespace) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(bench, "STAGES", [("load pairs", boom), ("test()", lambda ctx: "ran")])
    records = tmp_path / "records.jsonl"
    bench.run_session(bench.parse([]), {"model": None, "sae_dir": "s", "store": "s", "out": "o"}, 0, records)
    ends = [r for r in map(json.loads, records.read_text().splitlines()) if r["event"] == "end"]
    assert [(r["status"], r["note"]) for r in ends] == [
        ("failed", "OSError: disk full"),
        ("failed", "not run: load pairs failed"),
    ]


def _run(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "scale.json"
    argv = ["--pairs", "40", "--features", "256", "--active", "40", "--model", "tiny", "--json", str(out)]
    assert bench.main([*argv, "--dir", str(tmp_path), *extra]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow  # loads sae_lens and trl and runs the real plan and report: minutes under load
def test_a_tiny_run_covers_every_stage_and_writes_the_figures(hh_path: Path, tmp_path: Path) -> None:
    from prefaudit.features.concepts import builtin_concepts

    result = _run(tmp_path, "--no-browser")
    assert [r["stage"] for r in result["stages"]] == [name for name, _ in bench.STAGES]
    failed = {r["stage"]: r["note"] for r in result["stages"] if r["status"] != "ok"}
    assert not failed
    for r in result["stages"]:
        assert set(r) >= {"stage", "seconds", "peak_rss_gb"}
        assert 0 <= r["seconds"] < math.inf and 0 < r["peak_rss_gb"] < math.inf
        assert r["peak_rss_gb"] >= r["rss_after_gb"] - 1e-3  # a stage's peak covers what it holds after
    assert result["peak_rss_gb"] == max(r["peak_rss_gb"] for r in result["stages"])
    assert (result["n_pairs"], result["n_features"]) == (40, 256)
    notes = {r["stage"]: r["note"] for r in result["stages"]}
    assert notes["load pairs"] == "40 pairs kept of 40 rows"
    assert notes["load()"] == "40 pairs, results equal in length"
    assert notes["test()"].startswith(f"{256 + len(builtin_concepts())} features")


@pytest.mark.browser
def test_the_dashboard_of_a_tiny_run_renders_in_chromium(hh_path: Path, tmp_path: Path) -> None:
    # In a process of its own: the benchmark drives Chromium with Playwright's sync API, which refuses
    # to start inside the event loop the test session's Playwright keeps running (browser tests).
    out = tmp_path / "scale.json"
    argv = ["--pairs", "40", "--features", "256", "--active", "40", "--model", "tiny", "--json", str(out)]
    script = BENCH / "bench_audit_scale.py"
    done = subprocess.run([sys.executable, str(script), *argv, "--dir", str(tmp_path)], check=False)
    assert done.returncode == 0
    result = json.loads(out.read_text())
    dash = result["stages"][-1]
    assert dash["stage"] == bench.DASHBOARD
    assert dash["status"] == "ok", dash["note"]
    assert dash["peak_rss_gb"] > 0 and "volcano points" in dash["note"]
