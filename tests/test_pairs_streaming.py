"""stream_pairs: chunks of validated pairs that, put together, equal load_pairs, bad rows included."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from prefaudit.errors import ConfigError, DataError
from prefaudit.pairs import load_pairs
from prefaudit.pairs.stream import stream_pairs
from tests.pairs_fixtures import CONV_ROWS, bot, user


def _text_rows(n: int, typed: bool = False) -> list[dict[str, Any]]:
    """``n`` rows with a bad one every so often (each kind of fault), and metadata columns.

    ``typed``: for files whose columns have one type (parquet), an empty string stands in for
    the number in a text column.
    """
    rows: list[dict[str, Any]] = []
    for i in range(n):
        row: dict[str, Any] = {"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "score": i}
        row["pair_id"] = f"src-{i}"  # a metadata column whose name is taken: renamed, noted
        if i % 17 == 3:
            row["rejected"] = row["chosen"]  # identical
        elif i % 23 == 5:
            row["chosen"] = "   "  # blank
        elif i % 29 == 7:
            row["rejected"] = None  # missing
        elif i % 31 == 11:
            row["chosen"] = "" if typed else 42  # empty / not a string
        rows.append(row)
    return rows


def _same(stream: Any, whole: Any) -> None:
    """The chunks put together and the running report equal load_pairs's pairs and report."""
    got = stream.collect()
    pd.testing.assert_frame_equal(got.df, whole.df)
    assert got.format == whole.format
    r, w = got.report, whole.report
    assert (r.source, r.n_read, r.n_kept, r.rejected, r.notes) == (
        w.source,
        w.n_read,
        w.n_kept,
        w.rejected,
        w.notes,
    )


@pytest.mark.parametrize("batch_rows", [4, 64, 10_000])
def test_parquet_row_groups_stream_equal_load_pairs(tmp_path: Path, batch_rows: int) -> None:
    path = tmp_path / "pairs.parquet"
    # Small row groups, so that reading goes group by group across chunk boundaries.
    pd.DataFrame(_text_rows(300, typed=True)).to_parquet(path, row_group_size=50)
    whole = load_pairs(path)
    assert len(whole.report.rejected) > 20  # every kind of bad row is in there
    stream = stream_pairs(path, batch_rows=batch_rows)
    chunks = list(stream)
    assert all(len(c.report.rejected) + c.report.n_kept == c.report.n_read <= batch_rows for c in chunks)
    ids = [i for c in chunks for i in c.df["pair_id"]]
    assert ids == sorted(ids) and ids == whole.df["pair_id"].tolist()  # global source indices
    assert stream.report.n_read == 300
    _same(stream_pairs(path, batch_rows=batch_rows), whole)


def test_jsonl_with_unreadable_lines_streams_equal_load_pairs(tmp_path: Path) -> None:
    lines = [json.dumps(r).encode() for r in _text_rows(250)]
    lines[4] = b'{"prompt": "broken'  # invalid JSON
    lines[40] = b"[1, 2]"  # not an object
    lines[90] = b'{"prompt": "\xff", "chosen": "a", "rejected": "b"}'  # invalid UTF-8
    lines.insert(60, b"   ")  # a blank line is not a row
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    whole = load_pairs(path)
    assert {r.index for r in whole.report.rejected if r.field == "row"} == {4, 40, 90}
    _same(stream_pairs(path, batch_rows=13), whole)
    _same(stream_pairs(path, batch_rows=13, limit=120), load_pairs(path, limit=120))


@pytest.mark.parametrize("kind", ["parquet", "json"])
def test_datasets_streaming_equal_load_pairs(tmp_path: Path, kind: str) -> None:
    datasets = pytest.importorskip("datasets")
    rows = _text_rows(120, typed=kind == "parquet")
    path = tmp_path / f"pairs.{kind}l" if kind == "json" else tmp_path / "pairs.parquet"
    if kind == "json":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pd.DataFrame(rows).to_parquet(path, row_group_size=16)

    def opened() -> Any:
        return datasets.load_dataset(kind, data_files=str(path), split="train", streaming=True)

    assert isinstance(opened(), datasets.IterableDataset)
    _same(stream_pairs(opened(), batch_rows=9), load_pairs(opened()))


def test_conversational_and_hh_formats_are_detected_across_small_chunks(tmp_path: Path) -> None:
    conv = tmp_path / "conv.parquet"
    extra = {"prompt": [user("x")], "chosen": [bot("same")], "rejected": [bot("same")], "id": 12}
    pd.DataFrame([*CONV_ROWS, extra] * 80).to_parquet(conv)
    whole = load_pairs(conv)
    assert whole.format == "conversational" and whole.report.rejected
    _same(stream_pairs(conv, batch_rows=5), whole)

    hh = tmp_path / "hh.jsonl"
    dialog = "\n\nHuman: Hi {i}\n\nAssistant: "
    rows = [
        {"chosen": dialog.format(i=i) + "Hello!", "rejected": dialog.format(i=i) + "No."} for i in range(260)
    ]
    rows[100]["rejected"] = "\n\nHuman: other\n\nAssistant: No."  # the dialogues differ
    hh.write_text("".join(json.dumps(r) + "\n" for r in rows))
    whole = load_pairs(hh)
    assert whole.format == "hh" and [r.index for r in whole.report.rejected] == [100]
    _same(stream_pairs(hh, batch_rows=50), whole)  # detection needs the first 200 rows: reads ahead


def test_real_hh_slice_streams_equal_load_pairs(hh_path: Path) -> None:
    _same(stream_pairs(hh_path, batch_rows=128), load_pairs(hh_path))


def test_in_memory_sources_are_handed_out_in_chunks(tmp_path: Path) -> None:
    rows = _text_rows(60)
    _same(stream_pairs(rows, batch_rows=8), load_pairs(rows))
    _same(stream_pairs(pd.DataFrame(rows), batch_rows=8), load_pairs(pd.DataFrame(rows)))
    csv = tmp_path / "pairs.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    _same(stream_pairs(csv, batch_rows=8), load_pairs(csv))


def test_hub_names_are_opened_with_streaming(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    path = tmp_path / "p.parquet"
    pd.DataFrame(_text_rows(30, typed=True)).to_parquet(path)
    calls = []
    real = datasets.load_dataset

    def fake(name: str, split: str, **kw: Any) -> Any:
        calls.append((name, split, kw))
        return real("parquet", data_files=str(path), split="train", **kw)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    stream = stream_pairs("someone/prefs", split="test", batch_rows=4)
    got = stream.collect()
    assert calls == [("someone/prefs", "test", {"streaming": True})]
    assert got.report.source == "hub:someone/prefs[test]" and got.report.n_read == 30


def test_bad_rows_raise_while_reading_and_nothing_usable_raises_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "pairs.parquet"
    pd.DataFrame(_text_rows(40, typed=True)).to_parquet(path)
    stream = stream_pairs(path, batch_rows=2, on_bad_row="raise")
    with pytest.raises(DataError, match=r"row 3, field 'rejected': chosen and rejected are identical"):
        list(stream)
    same = [{"prompt": "p", "chosen": "x", "rejected": "x"}] * 5
    with pytest.raises(DataError, match="no usable rows: all 5 rows read were rejected"):
        list(stream_pairs(same, batch_rows=2))


def test_late_columns_are_noted_and_options_checked(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(300)]
    rows[250]["source"] = "late"
    path = tmp_path / "late.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = stream_pairs(path, batch_rows=100).collect()
    assert got.df.loc[250, "source"] == "late"
    assert any("'source' first appears" in n for n in got.report.notes)
    with pytest.raises(ConfigError, match="batch_rows"):
        stream_pairs(rows, batch_rows=0)
    with pytest.raises(DataError, match="no such file"):
        stream_pairs(tmp_path / "missing.parquet")
    stream = stream_pairs(rows)
    list(stream)
    with pytest.raises(ConfigError, match="read once"):
        list(stream)
