"""``prefaudit app DATA``: the subcommand's arguments and what it runs (``prefaudit.cli`` wires it in).

Example
-------
$ prefaudit app demo --limit 200
$ prefaudit app pairs.jsonl.gz --port 8870 --no-browser --out exports --max-kernels 4
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import DEFAULT_PORT, AppConfig, ServeOptions
from .serve import require_voila, serve


def add_app_parser(sub: Any, *, device_type: Callable[[str], str]) -> argparse.ArgumentParser:
    """Add ``app`` to the CLI's subparsers; ``device_type`` validates ``--device`` as ``audit`` does."""
    p = sub.add_parser(
        "app",
        help="serve the dashboard of DATA as a web app (Voila): no code, for teaching",
        description="Encode and test DATA once, then serve its dashboard (volcano, pairs, weights) "
        "with Voila. Each browser tab gets its own copy to play with. Like Jupyter, the page asks "
        "for a token (in the printed URL) and answers only on 127.0.0.1.",
    )
    p.add_argument("data", help="a .jsonl/.jsonl.gz/.json/.csv/.parquet file, a hub dataset name, or 'demo'")
    p.add_argument("--model", default=None, help="hub name or local directory (default: embedded SmolLM2)")
    p.add_argument("--sae", default=None, help="SAE directory or release/sae_id (default: embedded SAE)")
    p.add_argument("--no-sae", action="store_true", help="text concepts only (no model)")
    p.add_argument("--layer", type=int, default=None, help="layer to read (default: the SAE's layer)")
    p.add_argument("--pooling", choices=["max", "mean", "sum"], default="max")
    p.add_argument(
        "--device",
        type=device_type,
        default="auto",
        metavar="{auto,cpu,cuda,cuda:N}",
        help="where the model and SAE run (default: auto)",
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N rows of the source")
    p.add_argument("--split", default="train", help="split of a hub dataset (default: train)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--cache-dir", type=Path, default=None, help="encode cache (default: ~/.cache/prefaudit)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the encode cache")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default: {DEFAULT_PORT})"
    )
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.add_argument(
        "--no-token",
        action="store_true",
        help="serve without a token: anyone on this machine can open the page (not recommended)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("prefaudit-exports"),
        help="the only folder the page's export box writes into (default: ./prefaudit-exports)",
    )
    p.add_argument(
        "--max-kernels",
        type=int,
        default=8,
        metavar="N",
        help="most pages open at once, each with its own kernel (default: 8; 0: no cap)",
    )
    p.add_argument(
        "--idle-timeout",
        type=int,
        default=300,
        metavar="SECONDS",
        help="shut a closed page's kernel down once idle this long (default: 300; 0: never)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def app_config(args: argparse.Namespace) -> AppConfig:
    cache_dir: str | bool | None = None
    if args.no_cache:
        cache_dir = False
    elif args.cache_dir is not None:
        cache_dir = str(args.cache_dir)
    return AppConfig(
        data=args.data,
        model=args.model,
        sae=False if args.no_sae else args.sae,
        layer=args.layer,
        pooling=args.pooling,
        device=args.device,
        limit=args.limit,
        split=args.split,
        cache_dir=cache_dir,
        batch_size=args.batch_size,
    )


def serve_options(args: argparse.Namespace) -> ServeOptions:
    return ServeOptions(
        port=args.port,
        token="" if args.no_token else None,
        open_browser=not args.no_browser,
        max_kernels=args.max_kernels,
        idle_timeout=args.idle_timeout,
        out=args.out,
    )


def run_app(args: argparse.Namespace) -> int:
    """Check Voila and the options before minutes of encoding, then serve until Ctrl-C."""
    require_voila()
    config = app_config(args)
    options = serve_options(args)
    print(
        f"prefaudit app: encoding and testing {args.data} (once; the page opens the saved audit)", flush=True
    )
    return serve(config, options, progress=not args.quiet)
