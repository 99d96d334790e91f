"""Command line: ``prefaudit audit DATA --out DIR`` and ``prefaudit demo``.

Example
-------
$ prefaudit audit pairs.jsonl.gz --out audit-out --limit 200
$ prefaudit demo --out demo-out
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .errors import MissingDependencyError, PrefauditError
from .ids import ALPHA


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefaudit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("audit", help="encode a preference dataset and test every feature")
    a.add_argument("data", help="a .jsonl/.jsonl.gz/.json/.csv/.parquet file or a hub dataset name")
    a.add_argument("--out", required=True, type=Path, help="output directory")
    _model_args(a)
    a.add_argument("--limit", type=int, default=None, help="use only the first N rows of the source")
    a.add_argument("--split", default="train", help="split of a hub dataset (default: train)")
    a.add_argument(
        "--device",
        type=_device_arg,
        default="auto",
        metavar="{auto,cpu,cuda,cuda:N}",
        help="where the model and SAE run (default: auto, i.e. CUDA when available, else the CPU)",
    )

    d = sub.add_parser("demo", help="audit the bundled demo dataset with the embedded model and SAE")
    d.add_argument("--out", type=Path, default=Path("demo-out"), help="output directory (default: demo-out)")
    d.add_argument("--limit", type=int, default=None, help="use only the first N demo pairs")
    d.add_argument("--null", action="store_true", help="swap chosen/rejected at random (calibration check)")
    _model_args(d, with_model=False)
    return p


def _device_arg(value: str) -> str:
    v = value.strip().lower()
    if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
        return v
    raise argparse.ArgumentTypeError(f"invalid device {value!r} (choose auto, cpu, cuda or cuda:N)")


def _model_args(p: argparse.ArgumentParser, *, with_model: bool = True) -> None:
    if with_model:
        p.add_argument(
            "--model", default=None, help="hub name or local directory (default: embedded SmolLM2)"
        )
        p.add_argument("--sae", default=None, help="SAE directory or release/sae_id (default: embedded SAE)")
        p.add_argument("--layer", type=int, default=None, help="layer to read (default: the SAE's layer)")
        p.add_argument("--no-sae", action="store_true", help="test text concepts only (no model)")
    p.add_argument("--pooling", choices=["max", "mean", "sum"], default="max")
    p.add_argument("--test", choices=["wilcoxon", "sign", "t"], default="wilcoxon")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--cache-dir", type=Path, default=None, help="encode cache (default: ~/.cache/prefaudit)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the encode cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def write_outputs(session: Any, out: Path, summary: dict[str, Any], *, report: bool = True) -> dict[str, Any]:
    """Write ``features.csv``, ``features.parquet``, ``summary.json`` (and ``report.html``).

    ``summary["truncation"]`` holds what the token window cut (:meth:`AuditCore.truncation`):
    the limits, the counts of prompts and of chosen and rejected responses cut (``None`` when
    nothing was tokenised), their ``pair_ids`` and a ``sentence`` for people.
    """
    out.mkdir(parents=True, exist_ok=True)
    table = session.results
    trunc = session.truncation()
    table.to_csv(out / "features.csv", index=False)
    table.to_parquet(out / "features.parquet", index=False)
    sig = table[table["q"] < ALPHA]
    summary.update(
        n_features=len(table),
        n_tested=int((table["n_nonzero"] > 0).sum()) if "n_nonzero" in table else None,
        n_significant=len(sig),
        n_significant_sae=int((sig["source"] == "sae").sum()),
        n_significant_concepts=int((sig["source"] == "concept").sum()),
        truncated_responses=trunc.n_responses_cut,
        truncation=trunc.to_dict(),
        top_features=[
            {k: (v if not hasattr(v, "item") else v.item()) for k, v in row.items()}
            for row in sig.reindex(sig["d_z"].abs().sort_values(ascending=False).index)
            .head(20)[["feature", "source", "label", "d_z", "delta_mean", "q", "direction"]]
            .to_dict("records")
        ],
    )
    files = ["features.csv", "features.parquet", "summary.json"]
    if report:
        session.report(out / "report.html")
        files.append("report.html")
    summary["files"] = files
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def _session_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {"pooling": args.pooling, "batch_size": args.batch_size}
    if args.no_cache:
        kw["cache_dir"] = False
    elif args.cache_dir is not None:
        kw["cache_dir"] = args.cache_dir
    for name in ("model", "layer", "device"):
        if getattr(args, name, None) is not None:
            kw[name] = getattr(args, name)
    if getattr(args, "no_sae", False):
        kw["sae"] = False
    elif getattr(args, "sae", None) is not None:
        kw["sae"] = args.sae
    return kw


def run_audit(pairs: Any, args: argparse.Namespace, summary: dict[str, Any]) -> dict[str, Any]:
    from .session import AuditSession

    t0 = time.perf_counter()
    session = AuditSession(pairs, **_session_kwargs(args))
    session.encode(progress=not args.quiet)
    t1 = time.perf_counter()
    session.test(args.test)
    t2 = time.perf_counter()
    summary.update(
        n_read=pairs.report.n_read,
        n_pairs=len(pairs),
        rejected_rows=[
            {"index": r.index, "field": r.field, "reason": r.reason} for r in pairs.report.rejected
        ],
        load_notes=list(pairs.report.notes),
        model=session.backbone.name if session.uses_sae else None,
        layer=session.backbone.layer if session.uses_sae else None,
        sae=session.sae.name if session.uses_sae else None,
        pooling=args.pooling,
        test=args.test,
        seconds_encode=round(t1 - t0, 2),
        seconds_test=round(t2 - t1, 2),
    )
    return write_outputs(session, args.out, summary)


def _print_summary(summary: dict[str, Any]) -> None:
    print(
        f"prefaudit: {summary['n_pairs']} pairs ({len(summary['rejected_rows'])} rows rejected), "
        f"{summary['n_features']} features, {summary['n_significant']} with q < {ALPHA:g} "
        f"(SAE {summary['n_significant_sae']}, concepts {summary['n_significant_concepts']})"
    )
    trunc = summary.get("truncation")
    if trunc:
        note = f" ({trunc['note']})" if trunc.get("note") and trunc["note"] != trunc["sentence"] else ""
        print(f"token window: {trunc['sentence']}{note}")
    for row in summary["top_features"][:10]:
        print(
            f"  {row['feature']:<22} d_z={row['d_z']:+.2f}  q={row['q']:.1e}  more in {row['direction']:<8} {row['label']}"
        )
    print(f"wrote {', '.join(summary['files'])} to {summary['out']}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from .pairs import load_pairs

        if args.command == "audit":
            pairs = load_pairs(args.data, limit=args.limit, split=args.split)
            summary = run_audit(pairs, args, {"data": args.data, "out": str(args.out)})
        else:
            from .demo import load_demo_pairs

            pairs = load_demo_pairs(limit=args.limit, null=args.null)
            summary = run_audit(
                pairs, args, {"data": "embedded demo", "null": args.null, "out": str(args.out)}
            )
        _print_summary(summary)
        return 0
    except (PrefauditError, MissingDependencyError) as err:
        print(f"prefaudit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
