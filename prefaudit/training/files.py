"""Write a shaped dataset (``ShapedPairs.dataset``) to disk: JSON lines or Parquet.

Only ``json`` and ``pathlib`` at import time, so any module (the training export, the interventions)
can import these without a cycle.

Example
-------
>>> export_jsonl(shaped.dataset, "out/train.jsonl")  # doctest: +SKIP
PosixPath('out/train.jsonl')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["export_jsonl", "export_parquet"]


def export_jsonl(dataset: Any, path: str | Path) -> Path:
    """Write a shaped dataset as JSON lines (one pair per line; messages stay lists of dicts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in dataset:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def export_parquet(dataset: Any, path: str | Path) -> Path:
    """Write a shaped dataset as Parquet (``datasets.Dataset.to_parquet``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(path))
    return path
