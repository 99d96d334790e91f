"""``prefaudit app DATA``: the subcommand's arguments and what it runs (``prefaudit.cli`` wires it in).

Example
-------
$ prefaudit app demo --limit 200
$ prefaudit app pairs.jsonl.gz --port 8870 --no-browser
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import AppConfig
from .serve import DEFAULT_PORT, require_voila, serve


def add_app_parser(sub: Any, *, device_type: Callable[[str], str]) -> argparse.ArgumentParser:
    """Add ``app`` to the CLI's subparsers; ``device_type`` validates ``--device`` as ``audit`` does."""
    p = sub.add_parser(
        "app",
        help="serve the dashboard of DATA as a web app (Voila): no code, for teaching",
        description="Encode and test DATA once, then serve its dashboard (volcano, pairs, weights) "
        "with Voila. Each browser tab gets its own copy to play with.",
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


def run_app(args: argparse.Namespace) -> int:
    """Check Voila is there before minutes of encoding, then serve until Ctrl-C."""
    require_voila()
    config = app_config(args)
    print(
        f"prefaudit app: encoding and testing {args.data} (once; the page opens the saved audit)", flush=True
    )
    return serve(config, port=args.port, open_browser=not args.no_browser, progress=not args.quiet)
