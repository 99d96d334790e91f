"""prefaudit.pairs: bad rows (text, HH, conversational, JSON lines), the load report, and bad files."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from prefaudit.errors import DataError
from prefaudit.pairs import LoadReport, RejectedRow, load_pairs
from tests.pairs_fixtures import CONV_ROWS, assert_consistent, bot, rejected_of, user, write

# ----------------------------------------------------------------------------------- bad rows
GOOD = {"prompt": "p", "chosen": "c", "rejected": "r"}
HH_GOOD = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Bye."}
CONV_GOOD = CONV_ROWS[0]


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        ({"prompt": "p", "rejected": "r"}, "chosen", "missing field"),
        ({"prompt": "p", "chosen": "c"}, "rejected", "missing field"),
        ({"chosen": "c", "rejected": "r"}, "prompt", "missing field"),
        ({**GOOD, "chosen": None}, "chosen", "missing value"),
        ({**GOOD, "prompt": None}, "prompt", "missing value"),
        ({**GOOD, "rejected": math.nan}, "rejected", "missing value"),
        ({**GOOD, "chosen": 3}, "chosen", "expected a string, got int"),
        ({**GOOD, "prompt": 1.5}, "prompt", "expected a string, got float"),
        ({**GOOD, "chosen": ["c"]}, "chosen", "expected a string, got list"),
        ({**GOOD, "chosen": " \n\t "}, "chosen", "blank"),
        ({**GOOD, "rejected": ""}, "rejected", "blank"),
        ({**GOOD, "rejected": "c"}, "rejected", "identical"),
        ({**GOOD, "rejected": "  c\n"}, "rejected", "identical"),
    ],
)
def test_bad_text_rows_are_reported(bad: dict[str, Any], field: str, reason: str) -> None:
    pairs = load_pairs([GOOD, GOOD, bad, GOOD], format="text")
    assert rejected_of(pairs) == [(2, field)]
    assert reason in pairs.report.rejected[0].reason
    assert pairs.df["pair_id"].tolist() == [0, 1, 3]
    assert_consistent(pairs)


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        ({**HH_GOOD, "chosen": "Hello there, no turns"}, "chosen", "no '\\n\\nAssistant:' turn"),
        ({**HH_GOOD, "rejected": "\n\nHuman: Hi"}, "rejected", "no '\\n\\nAssistant:' turn"),
        (
            {**HH_GOOD, "rejected": "\n\nHuman: Hey\n\nAssistant: Bye."},
            "rejected",
            "do not share the dialogue",
        ),
        ({**HH_GOOD, "chosen": HH_GOOD["chosen"] + "\n\nHuman: more?"}, "chosen", "ends with a Human turn"),
        ({**HH_GOOD, "chosen": "\n\nHuman: Hi\n\nAssistant: "}, "chosen", "final Assistant turn is empty"),
        ({**HH_GOOD, "rejected": HH_GOOD["chosen"]}, "rejected", "identical"),
        ({"chosen": "\n\nAssistant: a", "rejected": "\n\nAssistant: b"}, "chosen", "no Human turn"),
        ({**HH_GOOD, "chosen": 7}, "chosen", "expected a string, got int"),
        ({"rejected": HH_GOOD["rejected"]}, "chosen", "missing field"),
    ],
)
def test_bad_hh_rows_are_reported(bad: dict[str, Any], field: str, reason: str) -> None:
    pairs = load_pairs([HH_GOOD, bad, HH_GOOD])
    assert pairs.format == "hh"
    assert rejected_of(pairs) == [(1, field)]
    assert reason in pairs.report.rejected[0].reason
    assert_consistent(pairs)


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        ({**CONV_GOOD, "chosen": "Hello!"}, "chosen", "expected a list of messages, got str"),
        ({**CONV_GOOD, "prompt": {"role": "user"}}, "prompt", "expected a list of messages, got dict"),
        ({**CONV_GOOD, "chosen": ["Hello!"]}, "chosen", "message 0 is a str"),
        ({**CONV_GOOD, "chosen": [{"content": "x"}]}, "chosen", "lacks 'role'"),
        ({**CONV_GOOD, "prompt": [user("a"), {"role": "user"}]}, "prompt", "message 1 lacks 'content'"),
        ({**CONV_GOOD, "chosen": [{"role": "gpt", "content": "x"}]}, "chosen", "role 'gpt'"),
        ({**CONV_GOOD, "chosen": [{"role": "assistant", "content": 5}]}, "chosen", "content is int"),
        ({**CONV_GOOD, "rejected": [bot("x"), user("y")]}, "rejected", "user message after"),
        ({**CONV_GOOD, "rejected": []}, "rejected", "no response"),
        ({**CONV_GOOD, "chosen": [bot("  ")]}, "chosen", "blank"),
        ({**CONV_GOOD, "rejected": CONV_GOOD["chosen"]}, "rejected", "identical"),
        ({**CONV_GOOD, "rejected": [*CONV_GOOD["chosen"], bot("more")]}, "chosen", "no response"),
        (
            {"chosen": [user("a"), bot("b")], "rejected": [user("c"), bot("b")]},
            "chosen",
            "user message after",
        ),
        ({"prompt": None, "chosen": [bot("b")], "rejected": [bot("c")]}, "prompt", "empty prompt"),
        ({**CONV_GOOD, "prompt": []}, "prompt", "empty prompt"),
        ({**CONV_GOOD, "chosen": None}, "chosen", "missing value"),
    ],
)
def test_bad_conversational_rows_are_reported(bad: dict[str, Any], field: str, reason: str) -> None:
    pairs = load_pairs([CONV_GOOD, CONV_GOOD, CONV_GOOD, bad])
    assert pairs.format == "conversational"
    assert rejected_of(pairs) == [(3, field)]
    assert reason in pairs.report.rejected[0].reason
    assert_consistent(pairs)


def test_bad_jsonl_lines_are_reported_and_reading_goes_on(tmp_path: Path) -> None:
    good = json.dumps(GOOD).encode()
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b"\n".join(
            [
                good,  # row 0
                b'{"prompt": "p", "chosen": "c", "rejected": ',  # row 1: broken JSON
                b"",  # a blank line is not a row
                b'{"prompt": "p", "chosen": "caf\xe9", "rejected": "r"}',  # row 2: Latin-1 byte, not UTF-8
                b"[1, 2]",  # row 3: not an object
                good,  # row 4
                b'{"prompt": "p", "chosen": "c", "rejected": 5}',  # row 5: number
                good,  # row 6
            ]
        )
    )
    pairs = load_pairs(path)
    assert rejected_of(pairs) == [(1, "row"), (2, "row"), (3, "row"), (5, "rejected")]
    reasons = [r.reason for r in pairs.report.rejected]
    assert reasons[0].startswith("line 2: invalid JSON")
    assert reasons[1].startswith("line 4: invalid UTF-8")
    assert reasons[2] == "line 5: expected a JSON object, got list"
    assert pairs.df["pair_id"].tolist() == [0, 4, 6]
    assert_consistent(pairs)


def test_list_elements_that_are_not_dicts() -> None:
    pairs = load_pairs([GOOD, "just a string", None, GOOD])
    assert rejected_of(pairs) == [(1, "row"), (2, "row")]
    assert pairs.report.rejected[0].reason == "expected a dict, got str"


def test_dataframe_missing_values() -> None:
    df = pd.DataFrame([GOOD, {**GOOD, "chosen": None}, {**GOOD, "rejected": pd.NA}], dtype="string")
    assert rejected_of(load_pairs(df)) == [(1, "chosen"), (2, "rejected")]


def test_on_bad_row_raise_names_row_and_field(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"row 2, field 'chosen': blank") as info:
        load_pairs([GOOD, GOOD, {**GOOD, "chosen": " "}, {**GOOD, "rejected": None}], on_bad_row="raise")
    assert type(info.value) is DataError
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{oops\n")
    with pytest.raises(DataError, match=r"row 1, field 'row': line 2: invalid JSON"):
        load_pairs(path, on_bad_row="raise")
    assert len(load_pairs([GOOD], on_bad_row="raise")) == 1


def test_report_frame_summary_and_str() -> None:
    rows = [GOOD] + [{**GOOD, "chosen": None}] * 12
    report = load_pairs(rows).report
    frame = report.to_frame()
    assert list(frame.columns) == ["index", "field", "reason"]
    assert frame["index"].tolist() == list(range(1, 13))
    text = str(report)
    assert text.startswith("list of 13 rows: read 13 rows, kept 1, rejected 12")
    assert "row 1, chosen: missing value (None)" in text and "row 10, chosen" in text
    assert "row 11, chosen" not in text and "2 more" in text
    assert report.summary(max_rows=2).count("row ") == 2
    with pytest.raises(ValueError, match="inconsistent"):
        LoadReport("x", n_read=3, n_kept=1, rejected=[RejectedRow(0, "chosen", "None")])


# ----------------------------------------------------------------------------------- bad files
def raises_data_error(source: Any, match: str, **kwargs: Any) -> DataError:
    """Load, expect a DataError that names the source; return it for more checks."""
    with pytest.raises(DataError) as info:
        load_pairs(source, **kwargs)
    err = info.value
    assert type(err) is DataError
    assert str(source) in str(err), str(err)
    assert match in str(err), str(err)
    return err


def test_directory_empty_and_unknown_files(tmp_path: Path) -> None:
    raises_data_error(tmp_path, "is a directory")
    (tmp_path / "empty.jsonl").touch()
    raises_data_error(tmp_path / "empty.jsonl", "file is empty")
    (tmp_path / "blank.jsonl").write_text("\n \n\n")
    raises_data_error(tmp_path / "blank.jsonl", "contains no rows")
    (tmp_path / "header.csv").write_text("prompt,chosen,rejected\n")
    raises_data_error(tmp_path / "header.csv", "contains no rows")
    (tmp_path / "empty_list.json").write_text("[]")
    raises_data_error(tmp_path / "empty_list.json", "contains no rows")
    (tmp_path / "data.txt").write_text("hello")
    raises_data_error(tmp_path / "data.txt", "unknown file type")


def test_corrupt_gzip(tmp_path: Path) -> None:
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_text(json.dumps(GOOD) + "\n")  # not gzip at all
    err = raises_data_error(plain, "truncated or corrupt")
    assert isinstance(err.__cause__, OSError)
    blob = gzip.compress(("".join(json.dumps(GOOD) + "\n" for _ in range(50))).encode())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(blob[:-12])
    err = raises_data_error(cut, "truncated or corrupt")
    assert err.__cause__ is not None


def test_unparseable_json_parquet_and_csv(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('[{"prompt": "p",')
    assert raises_data_error(bad_json, "invalid JSON").__cause__ is not None
    scalar = tmp_path / "scalar.json"
    scalar.write_text('{"columns": ["a"]}')
    raises_data_error(scalar, "keys ['columns']")
    latin = tmp_path / "latin.json"
    latin.write_bytes('[{"prompt": "café"}]'.encode("latin-1"))
    assert isinstance(raises_data_error(latin, "not UTF-8").__cause__, UnicodeDecodeError)

    parquet = tmp_path / "bad.parquet"
    parquet.write_bytes(b"PAR1 this is not parquet at all")
    assert raises_data_error(parquet, "cannot parse parquet").__cause__ is not None

    ragged = tmp_path / "ragged.csv"
    ragged.write_text("prompt,chosen,rejected\np,c,r\np,c,r,extra,cells\n")
    assert raises_data_error(ragged, "cannot parse CSV").__cause__ is not None
    bytes_csv = tmp_path / "bytes.csv"
    bytes_csv.write_bytes(b"prompt,chosen,rejected\np,caf\xe9,r\n")
    assert isinstance(raises_data_error(bytes_csv, "cannot parse CSV").__cause__, UnicodeDecodeError)


def test_missing_required_columns_lists_columns_found(tmp_path: Path) -> None:
    path = write(tmp_path / "cols.csv", [{"prompt": "p", "good": "c", "bad": "r"}])
    raises_data_error(
        path, "missing required column(s) ['chosen', 'rejected']; columns found: ['prompt', 'good', 'bad']"
    )
    path = write(tmp_path / "cols.parquet", [{"question": "p", "chosen": "c", "rejected": "r"}])
    raises_data_error(path, "['prompt']")


def test_zero_usable_rows_says_how_many_and_why(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", [{**GOOD, "chosen": None}, {**GOOD, "rejected": "c"}])
    err = raises_data_error(path, "no usable rows: all 2 rows read were rejected")
    assert "row 0, chosen: missing value" in str(
        err
    ) and "row 1, rejected: chosen and rejected are identical" in str(err)
    only_broken = tmp_path / "broken.jsonl"
    only_broken.write_text("{not json\n[1]\n")
    raises_data_error(only_broken, "all 2 rows read were rejected")
