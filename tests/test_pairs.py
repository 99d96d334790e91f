"""prefaudit.pairs: sources, formats, bad rows, bad files, and the PreferencePairs API."""

from __future__ import annotations

import copy
import gzip
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from prefaudit.errors import ConfigError, DataError
from prefaudit.pairs import LoadReport, PreferencePairs, RejectedRow, load_pairs

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


# ----------------------------------------------------------------------------------- formats
def test_text_format_and_messages() -> None:
    pairs = load_pairs(TEXT_ROWS)
    assert pairs.format == "text"
    assert pairs.messages(0) == [user("What is 2+2?")]
    assert pairs.messages(2) == []  # empty prompt: no message
    assert pairs[1] == {
        "pair_id": 1,
        "prompt": "Say hi",
        "chosen": "Hi!",
        "rejected": "No.",
        "score": 2,
        "src": "b",
    }


def test_conversational_explicit_prompt() -> None:
    pairs = load_pairs(CONV_ROWS)
    assert pairs.messages(1) == [{"role": "system", "content": "Be brief."}, user("2+2?")]
    assert pairs.df["rejected"].tolist() == ["Go away.", "5"]
    # messages() is a copy: changing it leaves the pairs alone
    pairs.messages(0)[0]["content"] = "changed"
    assert pairs.messages(0) == [user("Hi")]


def test_conversational_implicit_prompt_splits_at_the_shared_messages() -> None:
    shared = [user("Hi"), bot("Hello, how can I help?"), user("Tell me a joke")]
    rows = [{"chosen": [*shared, bot("Why did the chicken...")], "rejected": [*shared, bot("No.")]}]
    pairs = load_pairs(rows)
    assert pairs.format == "conversational"
    assert pairs.messages(0) == shared
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == ("Why did the chicken...", "No.")


def test_conversational_prompt_string_with_full_conversations() -> None:
    # UltraFeedback layout: a prompt string, and responses that repeat the user turn.
    rows = [{"prompt": "Hi", "chosen": [user("Hi"), bot("Hello!")], "rejected": [user("Hi"), bot("Bye.")]}]
    pairs = load_pairs(rows)
    assert pairs.messages(0) == [user("Hi")]
    assert pairs[0]["chosen"] == "Hello!"
    assert any("prompt string set aside" in n for n in pairs.report.notes)


def test_conversational_prompt_string_with_response_messages() -> None:
    rows = [{"prompt": "Hi", "chosen": [bot("Hello!")], "rejected": [bot("Bye.")]}]
    assert load_pairs(rows).messages(0) == [user("Hi")]


def test_several_assistant_messages_are_joined_and_noted() -> None:
    rows = [
        CONV_ROWS[0],
        {"prompt": [user("Hi")], "chosen": [bot("Hello!"), bot("How are you?")], "rejected": [bot("Bye.")]},
    ]
    pairs = load_pairs(rows)
    assert pairs[1]["chosen"] == "Hello!\n\nHow are you?"
    assert any(n.startswith("1 rows: a response held several assistant messages") and "pair_id 1" in n
               for n in pairs.report.notes)  # fmt: skip


def test_hh_detection_with_empty_prompt_column_and_forced_hh_with_prompt_prefix() -> None:
    dialogue = "\n\nHuman: Hi\n\nAssistant: {}"
    rows = [{"prompt": "", "chosen": dialogue.format("Hello!"), "rejected": dialogue.format("Bye.")}]
    pairs = load_pairs(rows)
    assert (pairs.format, pairs.messages(0), pairs[0]["chosen"]) == ("hh", [user("Hi")], "Hello!")
    # a prompt holding the dialogue's start, responses holding only the final turn's text
    split = [{"prompt": "\n\nHuman: Hi\n\nAssistant:", "chosen": " Hello!", "rejected": " Bye."}]
    assert load_pairs(split).format == "text"  # detected as text: the prompt is not empty
    forced = load_pairs(split, format="hh")
    assert forced.fingerprint() == pairs.fingerprint()


def test_forced_format_is_obeyed() -> None:
    dialogue = "\n\nHuman: Hi\n\nAssistant: {}"
    rows = [{"prompt": "x", "chosen": dialogue.format("a"), "rejected": dialogue.format("b")}]
    assert load_pairs(rows, format="text")[0]["chosen"] == dialogue.format("a")
    with pytest.raises(DataError, match="no usable rows") as info:
        load_pairs(TEXT_ROWS, format="conversational")
    assert "expected a list of messages, got str" in str(info.value)


def test_missing_prompt_column_for_plain_strings() -> None:
    with pytest.raises(DataError) as info:
        load_pairs([{"chosen": "a", "rejected": "b", "x": 1}])
    msg = str(info.value)
    assert "['prompt']" in msg and "columns found: ['chosen', 'rejected', 'x']" in msg and "HH" in msg


def test_custom_column_names_are_used_and_reported() -> None:
    rows = [{"q": "Hi", "good": "Hello", "bad": "Bye"}, {"q": "Hi", "good": None, "bad": "Bye"}]
    pairs = load_pairs(rows, prompt_col="q", chosen_col="good", rejected_col="bad")
    assert list(pairs.df.columns) == ["pair_id", "prompt", "chosen", "rejected"]
    assert rejected_of(pairs) == [(1, "good")]


def test_metadata_named_like_core_columns_is_renamed() -> None:
    rows = [{"q": "Hi", "chosen": "a", "rejected": "b", "prompt": "other", "pair_id": 99}]
    pairs = load_pairs(rows, prompt_col="q")
    assert pairs[0]["pair_id"] == 0
    assert (pairs[0]["source_prompt"], pairs[0]["source_pair_id"]) == ("other", 99)
    assert sum("renamed" in n for n in pairs.report.notes) == 2


def test_hostile_text_is_kept_verbatim() -> None:
    hostile = [
        "<script>alert('x')</script>",
        "'; DROP TABLE pairs; --",
        "{{7*7}} ${jndi:ldap://x}",
        "\u202eRTL override \u0000 nul \U0001f600",
        "\n\nHuman: not a dialogue in text format",
        "   leading and trailing spaces   ",
    ]
    rows = [{"prompt": h, "chosen": h, "rejected": "plain"} for h in hostile]
    pairs = load_pairs(rows, format="text")
    assert pairs.df["prompt"].tolist() == hostile
    assert pairs.df["chosen"].tolist() == hostile
    assert pairs.report.rejected == []


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


# ----------------------------------------------------------------------------------- API
def test_fingerprint_is_stable_and_content_sensitive(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", TEXT_ROWS)
    fp = load_pairs(path).fingerprint()
    assert fp == load_pairs(path).fingerprint() == load_pairs(copy.deepcopy(TEXT_ROWS)).fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0
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
