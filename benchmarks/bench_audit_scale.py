"""A whole audit at scale, end to end: every stage a person touches, its seconds and peak RSS.

    nice -n 10 .venv/bin/python benchmarks/bench_audit_scale.py [--pairs 260000] [--features 65536]
        [--active 64] [--model embedded|tiny] [--json PATH] [--dir DIR] [--stage-limit 600]
        [--no-browser]

The case: ``--pairs`` real HH-RLHF texts (the shared slice, repeated; ``_scale_data.hh_rows``)
and synthetic pooled codes of ``--features`` SAE latents, about ``--active`` per response
(co-firing blocks and noise, ``_scale_data.write_feature_store``), merged into the memory-mapped
feature store as an encode cache holds it. The model is the embedded SmolLM2-135M (``--model
embedded``: its converted checkpoint from the prefaudit cache, offline; its tokenizer serves
labels, group labels and the training plan) or the tiny random Llama of ``tests/tiny.py``
(``--model tiny``, for the smoke test). The SAE is a random TopK SAE of ``--features`` latents on
the model's layer (sae-lens classes, ``tests.tiny.build_sae``): the features are synthetic, but
everything that reads the SAE (the fit in the report, token activations of report snippets)
runs the real code on an SAE of that width.

Stages, in one session process (one Python process, as a notebook would hold the session):
load pairs · model + SAE · open store (auto labels, concept values, ``restore``) · ``test()`` ·
``groups()`` · feature clusters (``session.clusters()`` when the session has it, else
:func:`prefaudit.features.cluster_stats.audit_clusters`) · ``topics()`` · ``test(by="topic")`` ·
``drivers(f)`` · the shaping preview (``session.shaping.preview``) · ``plan_training()`` · ``report()`` · ``save()`` · ``load()``; then, in a
JupyterLab kernel driven by headless Chromium (``tests/browser/harness``), the dashboard's first
render of the saved session (``AuditSession.load`` + ``dashboard()`` until the volcano's points
and the drill-down are on the page).

Per stage: wall seconds, and peak RSS of the session process during that stage (``VmHWM`` after
resetting it through ``/proc/self/clear_refs``, so the peak is the stage's own, including what
the session already holds); the dashboard's peak is its kernel's. A stage that raises or runs past
``--stage-limit`` seconds (``SIGALRM``) is recorded as failed with its reason and the run goes on;
if the session process itself dies (e.g. killed for memory), the stage is recorded as failed and
a new process carries on after it (re-running, untimed, what later stages need). The setup
(writing the store) runs in its own process and is reported apart.

Other processes slow every number: the load average at start and end is printed and saved.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import _scale_data as data  # noqa: E402

GOAL_STAGE_S = 60.0
GOAL_PEAK_GB = 8.0
EMBEDDED_LAYER = 15  # the embedded SAE's layer (README: "its layer 15")
EMBEDDED_D_MODEL, EMBEDDED_VOCAB = 576, 49_152
TINY_LAYER, TINY_D_MODEL, TINY_VOCAB = 2, 32, 256  # tests/tiny.py: hidden 32, byte-level alphabet
N_WEIGHTED = 5  # features given a weight before the shaping preview, as a person would


# ----------------------------------------------------------------------------------- memory
def rss_gb(field: str = "VmHWM") -> float:
    """``VmHWM`` (peak since the last reset) or ``VmRSS`` (now) of this process, GB."""
    status = Path("/proc/self/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 1e6  # kB


def reset_peak() -> None:
    """Start the peak RSS afresh ("5" to clear_refs): a stage's peak is then its own."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


class StageTimeout(Exception):
    """A stage ran past ``--stage-limit``."""


class PrerequisiteFailed(Exception):
    """A stage whose inputs come from a prerequisite that failed."""


def _alarm(_signum: int, _frame: Any) -> None:
    raise StageTimeout("ran past the stage limit")


# ----------------------------------------------------------------------------------- stages
def _strongest_sae(session: Any) -> str:
    res = session.results
    sae = res[(res["source"] == "sae") & (res["n_nonzero"] > 0)]
    sig = sae[sae["q"] < 0.05]
    pick = sig if len(sig) else sae
    return str(pick.loc[pick["d_z"].abs().idxmax(), "feature"])


def st_load_pairs(ctx: SimpleNamespace) -> str:
    import prefaudit as pa

    ctx.pairs = pa.load_pairs(data.hh_rows(ctx.args.pairs))
    return f"{len(ctx.pairs):,} pairs kept of {ctx.pairs.report.n_read:,} rows"


def st_model(ctx: SimpleNamespace) -> str:
    import prefaudit as pa

    ctx.session = pa.AuditSession(ctx.pairs, model=ctx.model, sae=str(ctx.sae_dir), cache_dir=False)
    ctx.session.backbone.tokenizer  # noqa: B018 - loads the model and its tokenizer
    return f"SAE d_sae {ctx.session.sae.d_sae:,}"


def st_open_store(ctx: SimpleNamespace) -> str:
    from prefaudit import ids
    from prefaudit.features.encoded import EncodedFeatures
    from prefaudit.features.labels import auto_labels

    session = ctx.session
    enc = EncodedFeatures.open(ctx.store)
    t0 = time.perf_counter()
    labels = auto_labels(enc, session.backbone.decode_tokens)  # what encode() does after encoding
    t_labels = time.perf_counter() - t0
    t0 = time.perf_counter()
    cv, rv = session.space.concept_values()
    t_concepts = time.perf_counter() - t0
    session.restore(
        concepts=list(session.concepts),
        concept_values=[(cv[:, j], rv[:, j]) for j in range(cv.shape[1])],
        encoded=enc,
        results=None,
        auto_labels={ids.concept_id(c.name): c.description for c in session.concepts}
        | {ids.sae_id(f): s for f, s in labels.items()},
        decisions={"labels": {}, "notes": {}, "weights": {}, "verdicts": {}, "selection": [], "focus": None},
    )
    return f"auto labels {t_labels:.1f} s, {len(session.concepts)} concepts {t_concepts:.1f} s"


def st_test(ctx: SimpleNamespace) -> str:
    res = ctx.session.test()
    return f"{len(res):,} features, {int((res['q'] < 0.05).sum()):,} with q < 0.05"


def st_groups(ctx: SimpleNamespace) -> str:
    table = ctx.session.groups()
    return f"{len(table):,} groups, {table.attrs.get('n_unclustered', 0):,} features unclustered"


def st_clusters(ctx: SimpleNamespace) -> str:
    session = ctx.session
    if callable(getattr(session, "clusters", None)):
        table = session.clusters()
        return f"session.clusters(): {len(table):,} clusters"
    from prefaudit.features.cluster_stats import audit_clusters

    enc = session.encoded
    audit = audit_clusters(enc.chosen.values, enc.rejected.values, lengths=session.space.lengths())
    return f"audit_clusters (the session has no clusters()): {audit.clusters.n_clusters:,} clusters"


def st_topics(ctx: SimpleNamespace) -> str:
    topics = ctx.session.topics()
    return f"{topics['topic'].nunique()} topics"


def st_test_by_topic(ctx: SimpleNamespace) -> str:
    long = ctx.session.test(by="topic")
    return f"{len(long):,} topic × feature rows"


def st_drivers(ctx: SimpleNamespace) -> str:
    feature = _strongest_sae(ctx.session)
    table = ctx.session.drivers(feature)
    return f"{feature}: top 10 pairs carry {table['share'].head(10).sum():.1%} of its signal"


def st_preview(ctx: SimpleNamespace) -> str:
    session = ctx.session
    res = session.results
    sae = res[res["source"] == "sae"]
    top = sae.reindex(sae["d_z"].abs().sort_values(ascending=False).index)["feature"].head(N_WEIGHTED)
    session.decisions.set_weights({f: -1.0 for f in top})
    preview = session.shaping.preview()
    return f"session.shaping.preview: {len(preview.table):,} rows, {preview.n_dominated:,} pairs dominated"


def st_plan(ctx: SimpleNamespace) -> str:
    plan = ctx.session.plan_training()
    return plan.summary()


def st_report(ctx: SimpleNamespace) -> str:
    path = ctx.session.report(ctx.out / "report.html")
    return f"{path.stat().st_size / 1e6:.1f} MB"


def st_save(ctx: SimpleNamespace) -> str:
    path = ctx.session.save(ctx.out / "session")
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return f"{size / 1e9:.2f} GB on disk"


def st_load(ctx: SimpleNamespace) -> str:
    import prefaudit as pa

    loaded = pa.AuditSession.load(ctx.out / "session")
    same = loaded.results is not None and len(loaded.results) == len(ctx.session.results)
    return f"{len(loaded.data):,} pairs, results {'equal in length' if same else 'MISSING'}"


#: (name, function) in order; a restarted session process re-runs the PREREQUISITES untimed.
STAGES: list[tuple[str, Callable[[SimpleNamespace], str]]] = [
    ("load pairs", st_load_pairs),
    ("model + SAE", st_model),
    ("open store (labels, concepts)", st_open_store),
    ("test()", st_test),
    ("groups()", st_groups),
    ("feature clusters", st_clusters),
    ("topics()", st_topics),
    ('test(by="topic")', st_test_by_topic),
    ("drivers(feature)", st_drivers),
    ("shaping preview", st_preview),
    ("plan_training()", st_plan),
    ("report()", st_report),
    ("save()", st_save),
    ("load()", st_load),
]
#: (A saved session stays on disk: a restart after save() does not save again.)
PREREQUISITES = {"load pairs", "model + SAE", "open store (labels, concepts)", "test()"}
DASHBOARD = "dashboard first render (Chromium)"


def run_session(args: argparse.Namespace, case: dict[str, Any], start: int, records: Path) -> None:
    """The session process: every stage from ``start`` on (earlier prerequisites untimed)."""
    ctx = SimpleNamespace(
        args=args,
        model=case["model"],
        sae_dir=Path(case["sae_dir"]),
        store=Path(case["store"]),
        out=Path(case["out"]),
    )
    signal.signal(signal.SIGALRM, _alarm)
    missing: list[str] = []  # prerequisites that failed

    def emit(record: dict[str, Any]) -> None:
        with records.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    for k, (name, fn) in enumerate(STAGES):
        if k < start:
            if name in PREREQUISITES:
                fn(ctx)
            continue
        emit({"event": "start", "index": k, "stage": name})
        reset_peak()
        t0 = time.perf_counter()
        status, note = "ok", ""
        signal.alarm(int(args.stage_limit))
        try:
            if missing:  # its inputs were never made: say so rather than report a knock-on error
                raise PrerequisiteFailed(f"not run: {missing[0]} failed")
            note = fn(ctx)
        except PrerequisiteFailed as err:
            status, note = "failed", str(err)
        except StageTimeout:
            status, note = "failed", f"ran past {args.stage_limit:.0f} s"
        except Exception as err:  # one stage's failure is a finding, not the end of the run
            status, note = "failed", f"{type(err).__name__}: {str(err)[:300]}"
        finally:
            signal.alarm(0)
        if status != "ok" and name in PREREQUISITES:
            missing.append(name)
        emit({
            "event": "end", "index": k, "stage": name, "seconds": time.perf_counter() - t0,
            "peak_rss_gb": rss_gb("VmHWM"), "rss_after_gb": rss_gb("VmRSS"), "status": status, "note": note,
        })  # fmt: skip


# ----------------------------------------------------------------------------------- setup
def prepare(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Build the SAE and (in a child process, its peak apart) the feature store; returns the case."""
    from tests import tiny

    if args.model == "tiny":
        model: str | None = str(tiny.build_model(root / "tiny-model"))
        d_model, vocab, layer = TINY_D_MODEL, TINY_VOCAB, TINY_LAYER
    else:
        model, d_model, vocab, layer = None, EMBEDDED_D_MODEL, EMBEDDED_VOCAB, EMBEDDED_LAYER
    sae_dir = tiny.build_sae(
        root / "sae", d_in=d_model, d_sae=args.features, k=args.active, hook=f"model.layers.{layer}"
    )
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--write-store", str(root), str(args.pairs), str(args.features),
         str(args.active), str(d_model), str(vocab)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"writing the feature store failed:\n{done.stderr[-3000:]}")
    built = json.loads(done.stdout.strip().splitlines()[-1])
    (root / "out").mkdir(exist_ok=True)
    return {
        "model": model,
        "sae_dir": str(sae_dir),
        "store": built["store"],
        "out": str(root / "out"),
        "setup": {"seconds": time.perf_counter() - t0, "peak_rss_gb": built["peak_rss_gb"],
                  "store_gb": built["store_gb"]},
    }  # fmt: skip


def write_store(root: Path, n_pairs: int, n_features: int, active: int, d_model: int, vocab: int) -> None:
    rows = data.hh_rows(n_pairs)
    import prefaudit as pa

    df = pa.load_pairs(rows).df
    tokens = (data.response_tokens(df["chosen"].tolist()), data.response_tokens(df["rejected"].tolist()))
    del rows, df
    store = data.write_feature_store(root / "features", tokens, n_features, active=active, d_model=d_model,
                                     vocab=vocab)  # fmt: skip
    size = sum(p.stat().st_size for p in store.iterdir())
    print(json.dumps({"store": str(store), "peak_rss_gb": rss_gb(), "store_gb": size / 1e9}))


# ----------------------------------------------------------------------------------- dashboard
def dashboard_stage(case: dict[str, Any], limit: float) -> dict[str, Any]:
    """Open the saved session in a JupyterLab kernel and time its dashboard's first render."""
    from tests.browser import harness as h

    problem = h.chromium_problem()
    if problem:
        return {"stage": DASHBOARD, "seconds": float("nan"), "peak_rss_gb": float("nan"),
                "status": "failed", "note": f"no browser: {problem}"}  # fmt: skip
    from playwright.sync_api import sync_playwright

    saved = Path(case["out"]) / "session"
    cells = [
        f"import time\n_t0 = time.perf_counter()\nimport prefaudit as pa\n"
        f"session = pa.AuditSession.load({str(saved)!r})\nLOAD_S = time.perf_counter() - _t0",
        "dash = session.dashboard()\nDASH_S = time.perf_counter() - _t0 - LOAD_S\ndash",
    ]
    peak = "int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) / 1e6"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pa-scale-") as tmp:
        server = h.JupyterServer("lab", Path(tmp)).start()
        try:
            with sync_playwright() as pw:
                browser = h.launch_chromium(pw)
                try:
                    with h.notebook_page(browser, server, cells, "bench-audit-scale", timeout=limit) as nb:
                        h.wait_for_dashboard(nb.page, timeout_ms=int(limit * 1000))
                        seconds = time.perf_counter() - t0
                        load_s, dash_s = nb.probe.eval("LOAD_S"), nb.probe.eval("DASH_S")
                        rss = float(nb.probe.eval(peak))
                        n_points = len(
                            h.volcano_points(nb.page.locator(".prefaudit-volcano .js-plotly-plot").first)
                        )
                        nb.guard.verify()
                finally:
                    browser.close()
        finally:
            server.stop()
    return {
        "stage": DASHBOARD, "seconds": seconds, "peak_rss_gb": rss, "status": "ok",
        "note": f"kernel: load {load_s:.1f} s, dashboard() {dash_s:.1f} s; {n_points:,} volcano points; "
                "seconds include starting JupyterLab and the page",
    }  # fmt: skip


# ----------------------------------------------------------------------------------- main
def run_all(args: argparse.Namespace, root: Path, argv: list[str]) -> dict[str, Any]:
    load_start = os.getloadavg()
    print(f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}; {os.cpu_count()} CPUs; "
          f"{args.pairs:,} pairs × {args.features:,} features, model {args.model}", flush=True)  # fmt: skip
    case = prepare(args, root)
    print(f"setup (not a user stage): store written in {case['setup']['seconds']:.0f} s, "
          f"{case['setup']['store_gb']:.2f} GB, peak RSS {case['setup']['peak_rss_gb']:.2f} GB", flush=True)  # fmt: skip
    (root / "case.json").write_text(json.dumps(case))
    records = root / "records.jsonl"
    stages: dict[int, dict[str, Any]] = {}
    start = 0
    while start < len(STAGES):
        cmd = [sys.executable, __file__, "--session", str(root / "case.json"), str(start), str(records),
               *argv]  # fmt: skip
        proc = subprocess.run(cmd, check=False)
        seen = [json.loads(line) for line in records.read_text().splitlines()] if records.exists() else []
        for r in seen:
            if r["event"] == "end":
                stages[r["index"]] = {
                    k: r[k] for k in ("stage", "seconds", "peak_rss_gb", "rss_after_gb", "status", "note")
                }
                _print_stage(stages[r["index"]])
        records.unlink(missing_ok=True)
        started = [r["index"] for r in seen if r["event"] == "start"]
        if proc.returncode == 0 or not started:
            if proc.returncode != 0:
                raise SystemExit(f"the session process failed before any stage (exit {proc.returncode})")
            break
        dead = started[-1]  # it died inside this stage
        if dead not in stages:
            why = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
            stages[dead] = {"stage": STAGES[dead][0], "seconds": float("nan"), "peak_rss_gb": float("nan"),
                            "rss_after_gb": float("nan"), "status": "failed",
                            "note": f"the session process died ({why}); a new one carries on"}  # fmt: skip
            _print_stage(stages[dead])
        start = dead + 1
    rows = [stages[k] for k in sorted(stages)]
    if not args.no_browser:
        try:
            rows.append(dashboard_stage(case, args.stage_limit))
        except Exception as err:
            rows.append({"stage": DASHBOARD, "seconds": float("nan"), "peak_rss_gb": float("nan"),
                         "status": "failed", "note": f"{type(err).__name__}: {str(err)[:300]}"})  # fmt: skip
        _print_stage(rows[-1])
    session_rows = [r for r in rows if r["stage"] != DASHBOARD and np.isfinite(r["peak_rss_gb"])]
    return {
        "stages": rows,
        "peak_rss_gb": max((r["peak_rss_gb"] for r in session_rows), default=float("nan")),
        "n_pairs": args.pairs,
        "n_features": args.features,
        "active": args.active,
        "model": args.model,
        "setup": case["setup"],
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "cpus": os.cpu_count(),
    }


def _print_stage(r: dict[str, Any]) -> None:
    flag = "" if r["status"] == "ok" else "  FAILED"
    print(f"  {r['stage']:34s}{r['seconds']:9.1f} s{r['peak_rss_gb']:8.2f} GB{flag}  {r['note']}", flush=True)


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{result['n_pairs']:,} pairs × {result['n_features']:,} features, model {result['model']}")
    print(f"{'stage':36s}{'seconds':>9s}{'peak RSS':>11s}  goal")
    for r in result["stages"]:
        miss = [] if r["status"] == "ok" else ["FAILED"]
        if r["status"] == "ok" and r["seconds"] >= GOAL_STAGE_S:
            miss.append(f">= {GOAL_STAGE_S:.0f} s")
        print(f"{r['stage']:36s}{r['seconds']:9.1f}{r['peak_rss_gb']:8.2f} GB  {', '.join(miss) or 'ok'}")
    peak = result["peak_rss_gb"]
    print(
        f"session peak RSS {peak:.2f} GB (goal < {GOAL_PEAK_GB:.0f} GB: {'met' if peak < GOAL_PEAK_GB else 'MISSED'})"
    )
    la = result["load_average"]
    print(f"load average: start {la['start'][0]:.2f}, end {la['end'][0]:.2f} ({result['cpus']} CPUs)")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=260_000)
    p.add_argument("--features", type=int, default=65_536)
    p.add_argument("--active", type=int, default=64)
    p.add_argument("--model", choices=("embedded", "tiny"), default="embedded")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument(
        "--dir", type=Path, default=None, help="where the case is written (default: a temporary folder)"
    )
    p.add_argument("--stage-limit", type=float, default=600.0, help="seconds before a stage counts as failed")
    p.add_argument("--no-browser", action="store_true", help="skip the dashboard's render in Chromium")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--write-store"]:
        root, n, f, active, d_model, vocab = argv[1:7]
        write_store(Path(root), int(n), int(f), int(active), int(d_model), int(vocab))
        return 0
    if argv[:1] == ["--session"]:
        case_path, start, records = argv[1:4]
        run_session(parse(argv[4:]), json.loads(Path(case_path).read_text()), int(start), Path(records))
        return 0
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="pa-audit-scale-", dir=args.dir) as tmp:
        result = run_all(args, Path(tmp), argv)
    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
