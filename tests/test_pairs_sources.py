"""prefaudit.pairs: every source (file types, frames, datasets, the Hub), ``limit`` and bad options."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from prefaudit.errors import ConfigError, DataError
from prefaudit.pairs import load_pairs
from tests.pairs_fixtures import CONV_ROWS, TEXT_ROWS, assert_consistent, rejected_of, write

# ----------------------------------------------------------------------------------- sources
SUFFIXES = ["x.jsonl", "x.jsonl.gz", "x.json", "x.csv", "x.parquet"]


@pytest.mark.parametrize("name", SUFFIXES)
def test_every_file_type_gives_the_same_text_pairs(tmp_path: Path, name: str) -> None:
    pairs = load_pairs(write(tmp_path / name, TEXT_ROWS))
    expected = load_pairs(TEXT_ROWS)
    assert pairs.format == "text"
    assert list(pairs.df.columns) == ["pair_id", "prompt", "chosen", "rejected", "score", "src"]
    assert pairs.df["pair_id"].tolist() == [0, 1, 2]
    assert pairs.df["score"].tolist() == [1, 2, 3]
    # "NA" and "None" are responses, not missing values, in every file type (CSV included).
    assert pairs.df["chosen"].tolist() == ["4", "Hi!", "NA"]
    assert pairs.df["rejected"].tolist()[2] == "None"
    assert pairs.fingerprint() == expected.fingerprint()
    assert pairs.report.source == str(tmp_path / name)
    assert_consistent(pairs)


@pytest.mark.parametrize("name", SUFFIXES)
def test_every_file_type_gives_the_same_conversational_pairs(tmp_path: Path, name: str) -> None:
    pairs = load_pairs(write(tmp_path / name, CONV_ROWS))
    assert pairs.format == "conversational"
    assert pairs.df["prompt"].tolist() == [row["prompt"] for row in CONV_ROWS]
    assert pairs.df["chosen"].tolist() == ["Hello!", "4"]
    assert pairs.df["id"].tolist() == [10, 11]
    assert pairs.fingerprint() == load_pairs(CONV_ROWS).fingerprint()


def test_json_object_with_data_or_rows_key(tmp_path: Path) -> None:
    for key in ("data", "rows"):
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({"meta": "x", key: TEXT_ROWS}))
        assert load_pairs(path).df["chosen"].tolist() == ["4", "Hi!", "NA"]


def test_json_file_holding_json_lines_is_read_as_lines(tmp_path: Path) -> None:
    path = tmp_path / "lines.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in TEXT_ROWS))
    pairs = load_pairs(path)
    assert len(pairs) == 3
    assert any("JSON lines" in n for n in pairs.report.notes)


def test_dataframe_keeps_metadata_dtypes_and_uses_positions_as_pair_id() -> None:
    df = pd.DataFrame(TEXT_ROWS, index=[100, 50, 7])
    df["src"] = df["src"].astype("category")
    df["when"] = pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"])
    pairs = load_pairs(df)
    assert pairs.df["pair_id"].tolist() == [0, 1, 2]  # positions, not index labels
    assert isinstance(pairs.df["src"].dtype, pd.CategoricalDtype)
    assert pairs.df["when"].dtype == df["when"].dtype
    assert pairs.df["score"].dtype == "int64"


@pytest.mark.parametrize("kind", ["list", "frame", "csv"])
def test_metadata_stays_with_its_row_when_rows_are_rejected(tmp_path: Path, kind: str) -> None:
    rows = [{"prompt": "p", "chosen": f"c{i}", "rejected": "r", "tag": f"t{i}", "n": i} for i in range(5)]
    rows[1]["chosen"] = rows[3]["chosen"] = ""
    source: Any = {"list": rows, "frame": pd.DataFrame(rows), "csv": write(tmp_path / "m.csv", rows)}[kind]
    pairs = load_pairs(source)
    assert pairs.df[["pair_id", "chosen", "tag", "n"]].values.tolist() == [
        [0, "c0", "t0", 0],
        [2, "c2", "t2", 2],
        [4, "c4", "t4", 4],
    ]


def test_dataframe_read_from_parquet_with_numpy_message_arrays(tmp_path: Path) -> None:
    df = pd.read_parquet(write(tmp_path / "c.parquet", CONV_ROWS))  # lists come back as numpy arrays
    pairs = load_pairs(df)
    assert pairs.format == "conversational"
    assert pairs.messages(1) == CONV_ROWS[1]["prompt"]
    assert pairs.fingerprint() == load_pairs(CONV_ROWS).fingerprint()


def test_datasets_dataset_and_datasetdict() -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(CONV_ROWS)
    pairs = load_pairs(ds)
    assert pairs.format == "conversational" and pairs.df["chosen"].tolist() == ["Hello!", "4"]
    dd = datasets.DatasetDict({"train": ds, "test": datasets.Dataset.from_list(TEXT_ROWS)})
    test = load_pairs(dd, split="test", limit=2)
    assert test.format == "text" and len(test) == 2 and test.report.n_read == 2
    with pytest.raises(DataError, match=r"no split 'validation'.*\['train', 'test'\]"):
        load_pairs(dd, split="validation")


def test_hub_name_unreachable_becomes_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    calls = []

    def offline(name: str, split: str) -> None:
        calls.append((name, split))
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as info:
        load_pairs("Anthropic/hh-rlhf", split="test")
    assert type(info.value) is DataError
    assert isinstance(info.value.__cause__, ConnectionError)
    msg = str(info.value)
    assert "Anthropic/hh-rlhf" in msg and "could not be reached" in msg and "local file" in msg
    assert calls == [("Anthropic/hh-rlhf", "test")]


def test_hub_name_loads_through_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(TEXT_ROWS)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: ds)
    pairs = load_pairs("someone/prefs", limit=2)
    assert len(pairs) == 2 and pairs.report.source == "hub:someone/prefs[train]"


def test_missing_paths_are_not_taken_for_hub_names(tmp_path: Path) -> None:
    for source in ["data/missing.jsonl", Path("owner/name"), str(tmp_path / "nope.csv")]:
        with pytest.raises(DataError, match="no such file") as info:
            load_pairs(source)
        assert str(source) in str(info.value)
    with pytest.raises(DataError, match="no such file"):
        load_pairs("x" * 5000)  # too long for a file name: the OS refuses, we still answer DataError
    with pytest.raises(DataError, match="empty string"):
        load_pairs("  ")


@pytest.mark.parametrize("source", [42, {"prompt": ["p"]}, b"bytes", None])
def test_unsupported_source_types(source: Any) -> None:
    with pytest.raises(DataError, match="cannot read pairs from a"):
        load_pairs(source)


# ----------------------------------------------------------------------------------- limit
@pytest.mark.parametrize("name", SUFFIXES)
def test_limit_keeps_the_first_source_rows(tmp_path: Path, name: str) -> None:
    rows = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(10)]
    pairs = load_pairs(write(tmp_path / name, rows), limit=4)
    assert pairs.df["pair_id"].tolist() == [0, 1, 2, 3]
    assert pairs.df["prompt"].tolist() == ["p0", "p1", "p2", "p3"]
    assert pairs.report.n_read == 4


def test_limit_counts_rejected_rows_and_memory_sources() -> None:
    rows = [{"prompt": "p", "chosen": "x", "rejected": "x"}, *TEXT_ROWS]
    pairs = load_pairs(rows, limit=2)
    assert (pairs.report.n_read, pairs.report.n_kept, rejected_of(pairs)) == (2, 1, [(0, "rejected")])
    assert len(load_pairs(pd.DataFrame(TEXT_ROWS), limit=1)) == 1
    assert len(load_pairs(TEXT_ROWS, limit=100)) == 3


def test_limit_reads_jsonl_lazily(tmp_path: Path) -> None:
    # The gzip stream is cut after the first rows: reading up to the limit never reaches the cut.
    rows = [{"prompt": f"p{i}", "chosen": "c" * 2000 + str(i), "rejected": "r"} for i in range(200)]
    blob = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode(), compresslevel=0)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(blob[: len(blob) // 2])
    assert len(load_pairs(path, limit=5)) == 5
    with pytest.raises(DataError, match="gzip data is truncated or corrupt"):
        load_pairs(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": 2.5}, "limit"),
        ({"format": "sharegpt"}, "format"),
        ({"on_bad_row": "skip"}, "on_bad_row"),
        ({"chosen_col": "rejected"}, "must differ"),
    ],
)
def test_bad_options_raise_config_error(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_pairs(TEXT_ROWS, **kwargs)
