"""prefaudit.pairs: the PreferencePairs API (fingerprint, indexing, subsets, records, repr) and a light import."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from prefaudit.pairs import PreferencePairs, load_pairs
from tests.pairs_fixtures import CONV_ROWS, TEXT_ROWS, write


# ----------------------------------------------------------------------------------- API
def test_fingerprint_is_stable_and_content_sensitive(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", TEXT_ROWS)
    fp = load_pairs(path).fingerprint()
    assert fp == load_pairs(path).fingerprint() == load_pairs(copy.deepcopy(TEXT_ROWS)).fingerprint()
    assert len(fp) == 64 and set(fp) <= set("0123456789abcdef")  # a sha256 hex digest
    no_meta = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in TEXT_ROWS]
    assert load_pairs(no_meta).fingerprint() == fp  # metadata does not enter
    changed = copy.deepcopy(TEXT_ROWS)
    changed[1]["rejected"] = "No!"
    assert load_pairs(changed).fingerprint() != fp
    assert load_pairs(TEXT_ROWS[::-1]).fingerprint() != fp  # order matters
    # the boundary between fields matters: ("ab", "c") is not ("a", "bc")
    a = load_pairs([{"prompt": "ab", "chosen": "c", "rejected": "d"}]).fingerprint()
    b = load_pairs([{"prompt": "a", "chosen": "bc", "rejected": "d"}]).fingerprint()
    assert a != b
    # messages with keys in another order are the same content
    swapped = [{**CONV_ROWS[0], "prompt": [{"content": "Hi", "role": "user"}]}, CONV_ROWS[1]]
    assert load_pairs(swapped).fingerprint() == load_pairs(CONV_ROWS).fingerprint()


def test_getitem_head_subset_records_and_repr() -> None:
    rows = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}", "k": i * 10} for i in range(6)]
    rows[1]["chosen"] = None
    pairs = load_pairs(rows)
    assert len(pairs) == 5
    assert pairs[-1]["pair_id"] == 5 and type(pairs[-1]["k"]) is int
    with pytest.raises(IndexError):
        pairs[5]
    head = pairs.head(2)
    assert isinstance(head, PreferencePairs) and head.df["pair_id"].tolist() == [0, 2]
    sub = pairs.subset([3, 1])
    assert sub.df["pair_id"].tolist() == [4, 2] and sub.df["k"].tolist() == [40, 20]
    assert sub.format == pairs.format and len(pairs) == 5  # the original is untouched
    records = pairs.to_records()
    assert records[1] == {"pair_id": 2, "prompt": "p2", "chosen": "c2", "rejected": "r2", "k": 20}
    assert load_pairs(records, prompt_col="prompt").df["source_pair_id"].tolist() == [0, 2, 3, 4, 5]
    text = repr(pairs)
    assert "format='text'" in text and "n=5" in text and "read=6" in text and "rejected=1" in text
    assert "list of 6 rows" in text


def test_import_does_not_load_datasets() -> None:
    import subprocess
    import sys

    code = "import sys, prefaudit.pairs; print('datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
