"""Rows and helpers shared by the ``tests/test_pairs_*.py`` files (prefaudit.pairs)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd

from prefaudit.pairs import PreferencePairs

TEXT_ROWS = [
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "score": 1, "src": "a"},
    {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No.", "score": 2, "src": "b"},
    {"prompt": "", "chosen": "NA", "rejected": "None", "score": 3, "src": "c"},  # empty prompt is allowed
]


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


CONV_ROWS = [  # trl conversational, explicit prompt
    {"prompt": [user("Hi")], "chosen": [bot("Hello!")], "rejected": [bot("Go away.")], "id": 10},
    {
        "prompt": [{"role": "system", "content": "Be brief."}, user("2+2?")],
        "chosen": [bot("4")],
        "rejected": [bot("5")],
        "id": 11,
    },
]


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows in the format the suffix names (message lists as JSON strings in CSV)."""
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz")):
        text = "".join(json.dumps(r) + "\n" for r in rows).encode()
        path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    elif name.endswith(".json"):
        path.write_text(json.dumps(rows))
    elif name.endswith(".csv"):
        cells = [{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows]
        pd.DataFrame(cells).to_csv(path, index=False)
    elif name.endswith(".parquet"):
        pd.DataFrame(rows).to_parquet(path)
    else:
        raise AssertionError(name)
    return path


def rejected_of(pairs: PreferencePairs) -> list[tuple[int, str]]:
    return [(r.index, r.field) for r in pairs.report.rejected]


def assert_consistent(pairs: PreferencePairs) -> None:
    r = pairs.report
    assert r.n_read == r.n_kept + len(r.rejected)
    assert r.n_kept == len(pairs) == len(pairs.df)
    assert set(pairs.df["pair_id"]).isdisjoint(x.index for x in r.rejected)
