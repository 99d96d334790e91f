"""prefaudit.pairs: text, conversational and HH formats, detection, column names, verbatim text."""

from __future__ import annotations

import pytest

from prefaudit.errors import DataError
from prefaudit.pairs import load_pairs
from tests.pairs_fixtures import CONV_ROWS, TEXT_ROWS, bot, rejected_of, user


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
    assert any(
        n.startswith("1 rows: a response held several assistant messages") and "pair_id 1" in n
        for n in pairs.report.notes
    )


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
