"""HH-RLHF dialogues: the splitter, and the real harmless-base test file (first 1000 rows)."""

from __future__ import annotations

import gzip
import json

import pytest

from prefaudit.pairs import PreferencePairs, load_pairs
from prefaudit.pairs.hh import split_dialogue
from tests.conftest import HH_PATH

HH_FILE = HH_PATH
MARK = "\n\nAssistant:"
needs_file = pytest.mark.skipif(not HH_FILE.exists(), reason=f"{HH_FILE} not present")


def test_split_dialogue_turns_spaces_and_preamble() -> None:
    text = "\n\nHuman: Hi\n\nAssistant:  two spaces\n\nHuman:no space\n\nAssistant: Human: quoted"
    assert split_dialogue(text) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": " two spaces"},  # only one leading space is dropped
        {"role": "user", "content": "no space"},
        {"role": "assistant", "content": "Human: quoted"},  # not a turn: no blank line before it
    ]
    # exporters that strip the leading blank lines; text before the first turn
    assert split_dialogue("Human: a\n\nAssistant: b")[0] == {"role": "user", "content": "a"}
    assert split_dialogue("Be kind.\n\nHuman: a\n\nAssistant: b")[0] == {
        "role": "system",
        "content": "Be kind.",
    }
    # single newlines and inner blank lines stay inside a turn
    assert split_dialogue("\n\nHuman: a\nb\n\nc\n\nAssistant: d")[0]["content"] == "a\nb\n\nc"


@pytest.fixture(scope="module")
def raw_rows() -> list[dict[str, str]]:
    with gzip.open(HH_FILE, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def hh_pairs() -> PreferencePairs:
    return load_pairs(HH_FILE)


@needs_file
def test_real_file_counts_and_rejections(hh_pairs: PreferencePairs, raw_rows: list[dict[str, str]]) -> None:
    report = hh_pairs.report
    assert hh_pairs.format == "hh"
    assert report.n_read == len(raw_rows) == 1000
    # Independently: rows whose chosen dialogue ends with an empty final Assistant turn.
    empty = [
        i for i, r in enumerate(raw_rows) if not r["chosen"][r["chosen"].rfind(MARK) + len(MARK) :].strip()
    ]
    assert empty == [86, 516, 925]
    assert [(r.index, r.field) for r in report.rejected] == [(i, "chosen") for i in empty]
    assert all("final Assistant turn is empty" in r.reason for r in report.rejected)
    assert report.n_kept == len(hh_pairs) == 1000 - len(empty)
    assert hh_pairs.df["pair_id"].tolist() == [i for i in range(1000) if i not in empty]


@needs_file
def test_real_file_split_matches_raw_strings(
    hh_pairs: PreferencePairs, raw_rows: list[dict[str, str]]
) -> None:
    names = {"user": "Human", "assistant": "Assistant"}
    for pos in range(40):
        row = hh_pairs[pos]
        raw = raw_rows[row["pair_id"]]
        for key in ("chosen", "rejected"):
            cut = raw[key].rfind(MARK)
            # the prompt is the dialogue up to the final "\n\nAssistant:"; the response is what follows it
            assert raw[key][:cut] == "".join(f"\n\n{names[m['role']]}: {m['content']}" for m in row["prompt"])
            assert raw[key][cut + len(MARK) :] == " " + row[key]


@needs_file
def test_real_file_prompts_and_responses_are_well_formed(hh_pairs: PreferencePairs) -> None:
    for row in hh_pairs.to_records():
        prompt = row["prompt"]
        assert prompt[0]["role"] == "user" and prompt[-1]["role"] == "user"
        assert {m["role"] for m in prompt} <= {"user", "assistant"}
        for key in ("chosen", "rejected"):
            text = row[key]
            assert text.strip() and not text[0].isspace() and not text.startswith("Assistant:")
            assert MARK not in text and "\n\nHuman:" not in text
    turns = hh_pairs.df["prompt"].map(len)
    assert turns.min() == 1 and turns.max() == 35
    assert 3.9 < turns.mean() < 4.1  # measured: 4.00 messages per prompt
    assert not hh_pairs.report.notes[1:]  # nothing but the detection note


@needs_file
def test_real_file_limit_and_fingerprint(hh_pairs: PreferencePairs) -> None:
    first = load_pairs(HH_FILE, limit=10)
    assert first.report.n_read == 10 and first.df["pair_id"].tolist() == list(range(10))
    assert first.fingerprint() == hh_pairs.head(10).fingerprint()
    assert load_pairs(str(HH_FILE)).fingerprint() == hh_pairs.fingerprint()
