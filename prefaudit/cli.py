"""Command line: ``prefaudit audit DATA --out DIR``, ``prefaudit encode DATA`` and ``prefaudit demo``.

Example
-------
$ prefaudit audit pairs.jsonl.gz --out audit-out --limit 200
$ accelerate launch --multi_gpu --num_processes 8 -m prefaudit.cli encode pairs.jsonl.gz --cache-dir /shared/cache
$ prefaudit demo --out demo-out
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MissingDependencyError, PrefauditError
from .ids import ALPHA

if TYPE_CHECKING:
    from .audit.protocol import AuditState

# The dtype enters the encode cache key: a cache encoded on a bf16 GPU is read on a CPU with --dtype bfloat16.
DTYPES = ["float32", "bfloat16", "float16"]


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

    _encode_parser(sub)

    d = sub.add_parser("demo", help="audit the bundled demo dataset with the embedded model and SAE")
    d.add_argument("--out", type=Path, default=Path("demo-out"), help="output directory (default: demo-out)")
    d.add_argument("--limit", type=int, default=None, help="use only the first N demo pairs")
    d.add_argument("--null", action="store_true", help="swap chosen/rejected at random (calibration check)")
    _model_args(d, with_model=False)

    from .app.command import add_app_parser

    add_app_parser(sub, device_type=_device_arg)
    return p


def _encode_parser(sub: Any) -> None:
    e = sub.add_parser(
        "encode",
        help="fill the encode cache, alone or on every process of accelerate launch / torchrun",
        description="Encode DATA into the shard cache that `prefaudit audit` and AuditSession read "
        "(same key: same data, model, SAE, layer, pooling and --shard-size). Under `accelerate launch` "
        "or `torchrun` each process encodes its own share of the unfinished shards.",
    )
    e.add_argument("data", help="a .jsonl/.jsonl.gz/.json/.csv/.parquet file or a hub dataset name")
    e.add_argument("--cache-dir", type=Path, default=None, help="encode cache (default: ~/.cache/prefaudit)")
    e.add_argument("--model", default=None, help="hub name or local directory (default: embedded SmolLM2)")
    e.add_argument("--sae", default=None, help="SAE directory or release/sae_id (default: embedded SAE)")
    e.add_argument("--layer", type=int, default=None, help="layer to read (default: the SAE's layer)")
    e.add_argument("--pooling", choices=["max", "mean", "sum"], default="max")
    e.add_argument(
        "--device",
        type=_device_arg,
        default="auto",
        metavar="{auto,cpu,cuda,cuda:N}",
        help="auto/cuda under a launcher: each process's own GPU (default: auto)",
    )
    e.add_argument("--limit", type=int, default=None, help="use only the first N rows of the source")
    e.add_argument("--split", default="train", help="split of a hub dataset (default: train)")
    e.add_argument("--shard-size", type=int, default=128, help="pairs per cache shard (default: 128)")
    e.add_argument("--dtype", choices=DTYPES, default=None, help="compute dtype (default: the device's)")
    e.add_argument("--batch-size", type=int, default=8, help="at most N pairs per forward pass (default: 8)")
    e.add_argument(
        "--batch-tokens", type=int, default=None, help="padded tokens per forward (default: per device)"
    )
    e.add_argument("--quiet", action="store_true", help="no progress bar")


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
    p.add_argument("--batch-size", type=int, default=8, help="at most N pairs per forward pass (default: 8)")
    p.add_argument(
        "--batch-tokens", type=int, default=None, help="padded tokens per forward (default: per device)"
    )
    p.add_argument("--shard-size", type=int, default=128, help="pairs per cache shard (default: 128)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="compute dtype (default: the device's)")
    p.add_argument("--cache-dir", type=Path, default=None, help="encode cache (default: ~/.cache/prefaudit)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the encode cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


@contextmanager
def stage_line(what: str, quiet: bool = False) -> Iterator[None]:
    """One line on stderr per stage that takes a while: what runs now, then how long it took."""
    if quiet:
        yield
        return
    print(f"prefaudit: {what} …", end="", file=sys.stderr, flush=True)
    t = time.perf_counter()
    try:
        yield
    except BaseException:
        print(" failed", file=sys.stderr, flush=True)
        raise
    print(f" {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)


def write_outputs(
    session: AuditState, out: Path, summary: dict[str, Any], *, report: bool = True, quiet: bool = True
) -> dict[str, Any]:
    """Write ``features.csv``, ``features.parquet``, ``summary.json`` (and ``report.html``).

    ``summary["truncation"]`` holds what the token window cut (:meth:`AuditCore.truncation`):
    the limits, the counts of prompts and of chosen and rejected responses cut (``None`` when
    nothing was tokenised), their ``pair_ids`` and a ``sentence`` for people.
    It leads with ``sentences`` (what a person reads first, each with its cluster's ``group`` id)
    and ``clusters`` (counts and the strongest clusters: label, size, effect, badge, sentence),
    then the run's facts, then ``fit``, ``topics`` and ``drivers``
    (:func:`prefaudit.report.concepts.lead_summary`). ``concepts`` — the old, misnamed key that
    held fit, groups, topics and drivers — is kept one more release, as ``deprecated_keys`` says.
    """
    out.mkdir(parents=True, exist_ok=True)
    table = session.results
    trunc = session.space.truncation()
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
    from .report.concepts import PARTS, concept_summary, gather, lead_summary

    # Groups, topics, drivers and the SAE's fit: gathered once (computed for the report), shown and summarised.
    parts = gather(session, compute=PARTS if report else (), stage=lambda what: stage_line(what, quiet))
    if report:
        with stage_line("writing report.html", quiet):
            session.report(out / "report.html", parts=parts)
        files.append("report.html")
    lead = lead_summary(parts)
    ordered = {"sentences": lead.pop("sentences"), "clusters": lead.pop("clusters"), **summary, **lead}
    ordered["concepts"] = concept_summary(parts)
    ordered["deprecated_keys"] = {
        "concepts": "held fit, groups, topics and drivers: now the top-level keys fit, clusters, topics "
        "and drivers; removed in the next release"
    }
    ordered["files"] = files
    summary.clear()
    summary.update(ordered)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def _session_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "pooling": args.pooling,
        "batch_size": args.batch_size,
        "batch_tokens": args.batch_tokens,
    }
    kw["shard_size"] = args.shard_size
    if args.no_cache:
        kw["cache_dir"] = False
    elif args.cache_dir is not None:
        kw["cache_dir"] = args.cache_dir
    for name in ("model", "layer", "device", "dtype"):
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
    with stage_line(f"testing {len(session.feature_ids):,} features on {len(pairs):,} pairs", args.quiet):
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
    return write_outputs(session, args.out, summary, quiet=args.quiet)


def run_encode(args: argparse.Namespace) -> int:
    """``prefaudit encode``: this process's share of the shards (all of them without a launcher)."""
    from .features.distributed import encode_distributed, process_state, rank_device
    from .pairs import load_pairs
    from .session import AuditSession

    state = process_state(args.device)
    pairs = load_pairs(args.data, limit=args.limit, split=args.split)
    kw = {"model": args.model, "sae": args.sae, "layer": args.layer, "dtype": args.dtype}
    kw["device"] = rank_device(args.device, state)
    if args.cache_dir is not None:
        kw["cache_dir"] = args.cache_dir
    # Loaded as AuditSession loads them, so the cache key is the one `prefaudit audit` computes.
    session = AuditSession(
        pairs,
        pooling=args.pooling,
        batch_size=args.batch_size,
        batch_tokens=args.batch_tokens,
        shard_size=args.shard_size,
        concepts=False,
        **kw,
    )
    backbone, sae = session.backbone, session.sae  # every process at once (hub downloads are file-locked)
    done = encode_distributed(
        session.data,
        backbone,
        sae,
        cache_dir=session.cache_dir,
        pooling=args.pooling,
        batch_size=args.batch_size,
        batch_tokens=args.batch_tokens,
        shard_size=args.shard_size,
        progress=not args.quiet,
        state=state,
    )
    if done is not None:
        n_enc = sum(len(v) for v in done["encoded"].values())
        per_rank = ", ".join(f"rank {r}: {len(v)}" for r, v in done["encoded"].items())
        print(
            f"prefaudit encode: {len(pairs)} pairs ({len(pairs.report.rejected)} rows rejected) in "
            f"{done['n_shards']} shards of {args.shard_size}, {done['world_size']} process(es): "
            f"{len(done['found'])} found finished, {n_enc} encoded this run ({per_rank}; "
            f"{done['tokens_processed']:,} tokens)"
        )
        print(f"cache complete: {done['folder']}")
    state.destroy_process_group()
    return 0


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
    if summary.get("sentences"):
        print("\nWhat this data teaches:")
        for s in summary["sentences"]:
            print(f"  {'[' + s['group'] + '] ' if s['group'] else ''}{s['text']}")
    clusters = summary.get("clusters") or {}
    if clusters.get("top"):
        print(
            f"\nStrongest clusters of co-firing SAE features ({clusters['n_clusters']} clusters, "
            f"{clusters['n_significant']} with q < {ALPHA:g}; {clusters['n_unclustered']} features in none):"
        )
        for row in clusters["top"]:
            d_z = "nan" if row["d_z"] is None else f"{row['d_z']:+.2f}"
            print(
                f"  {row['group']:<9} {row['n_members']:>5} features  d_z={d_z}  {row['badge']:<8}  {row['label']}"
            )
    elif clusters.get("skipped"):
        print(f"\nClusters: {clusters['skipped']}")
    if summary["top_features"]:
        print("\nStrongest single features:")
    for row in summary["top_features"][:10]:
        print(
            f"  {row['feature']:<22} d_z={row['d_z']:+.2f}  q={row['q']:.1e}  more in {row['direction']:<8} {row['label']}"
        )
    print(f"wrote {', '.join(summary['files'])} to {summary['out']}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from .pairs import load_pairs

        if args.command == "app":
            from .app.command import run_app

            return run_app(args)
        if args.command == "encode":
            return run_encode(args)
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
