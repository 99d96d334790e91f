"""The shipped demo set (no model): loads cleanly, planted rates and spans are as documented."""

from __future__ import annotations

import re

import numpy as np
import pytest

from prefaudit.build.demo_set import assemble_pairs, write_jsonl_gz
from prefaudit.build.prompts import prompts_for, resource_prompts, topic_split
from prefaudit.build.styles import FLATTERY_FOLLOWUPS, FLATTERY_OPENERS, split_sentences
from prefaudit.demo import DEMO_PATH, DESIGN, PLANTED, TOPIC_PLANTED, load_demo_pairs, swap_sides
from prefaudit.features.concepts import builtin_concepts

CONCEPTS = {c.name: c for c in builtin_concepts()}
SIDES = ("chosen", "rejected")


@pytest.fixture(scope="module")
def pairs():  # type: ignore[no-untyped-def]
    return load_demo_pairs()


def test_loads_without_rejected_rows(pairs) -> None:  # type: ignore[no-untyped-def]
    assert DEMO_PATH.stat().st_size < 1_000_000
    assert len(pairs) == DESIGN.n_pairs and pairs.format == "text"
    assert pairs.report.rejected == [] and pairs.report.n_read == DESIGN.n_pairs
    assert any("planted" in n for n in pairs.report.notes)
    assert load_demo_pairs(limit=25).df["prompt"].tolist() == pairs.df["prompt"].head(25).tolist()


def test_rates_match_the_design(pairs) -> None:  # type: ignore[no-untyped-def]
    df = pairs.df
    n = len(df)
    # Exact counts by construction: allow only rounding.
    assert abs(df["chosen_is_direct"].mean() - DESIGN.direct_chosen_rate) <= 1 / n
    for concept in PLANTED:
        for j, side in enumerate(SIDES):
            assert abs(df[f"{side}_{concept}"].mean() - DESIGN.rates[concept][j]) <= 1 / n, (concept, side)
    # Assigned independently: no planted flag is strongly tied to another or to quality.
    flags = df[[f"{s}_{c}" for s in SIDES for c in PLANTED] + ["chosen_is_direct"]].astype(float)
    corr = np.corrcoef(flags.to_numpy().T)
    assert np.abs(corr[np.triu_indices_from(corr, 1)]).max() < 0.15


def test_topic_conditional_reference_only_on_requests_for_resources(pairs) -> None:  # type: ignore[no-untyped-def]
    df = pairs.df
    asks = df["asks_for_resources"].to_numpy(bool)
    # The requests for resources are the last block, and every one of them says "resources".
    assert asks.sum() == DESIGN.n_resource_pairs and asks[-DESIGN.n_resource_pairs :].all()
    assert (df["topic_kind"] == "resource").tolist() == asks.tolist()
    assert df.loc[asks, "prompt"].str.contains("resources").all()
    assert not df.loc[~asks, "prompt"].str.contains("resources").any()
    for concept in TOPIC_PLANTED:
        for j, side in enumerate(SIDES):
            flag = df[f"{side}_{concept}"].to_numpy(bool)
            assert not flag[~asks].any(), (concept, side)
            rate = DESIGN.resource_rates[concept][j]
            assert abs(flag[asks].mean() - rate) <= 1 / asks.sum(), (concept, side)
    # The global styles keep their rates inside the resource block too (exact counts per block).
    for concept in PLANTED:
        for j, side in enumerate(SIDES):
            got = df.loc[asks, f"{side}_{concept}"].mean()
            assert abs(got - DESIGN.rates[concept][j]) <= 1 / asks.sum(), (concept, side)


def test_text_matches_ground_truth(pairs) -> None:  # type: ignore[no-untyped-def]
    """The built-in concepts see a planted element exactly where the metadata says it is."""
    df = pairs.df
    for side in SIDES:
        texts = df[side]
        assert (texts.map(CONCEPTS["flattery"]) > 0).tolist() == df[f"{side}_flattery"].tolist()
        assert (texts.map(CONCEPTS["url"]) > 0).tolist() == df[f"{side}_url"].tolist()
        assert (texts.map(CONCEPTS["citation"]) > 0).tolist() == df[f"{side}_reference"].tolist()
        for name in ("markdown_headers", "list_items", "bold"):
            assert (texts.map(CONCEPTS[name]) > 0).tolist() == df[f"{side}_markdown"].tolist(), name
        direct = df["chosen_is_direct"] if side == "chosen" else ~df["chosen_is_direct"]
        # The direct side carries the model's answer; the other side does not.
        has_answer = [
            all(x in t for x in split_sentences(a)) for a, t in zip(df["answer"], texts, strict=True)
        ]
        assert has_answer == direct.tolist()


def test_spans_point_at_the_planted_text(pairs) -> None:  # type: ignore[no-untyped-def]
    df = pairs.df
    for side in SIDES:
        for text, spans, *flags in zip(
            df[side],
            df[f"{side}_spans"],
            *(df[f"{side}_{c}"] for c in (*PLANTED, *TOPIC_PLANTED)),
            strict=True,
        ):
            assert set(spans) == {*PLANTED, *TOPIC_PLANTED}
            for concept, flag in zip((*PLANTED, *TOPIC_PLANTED), flags, strict=True):
                assert bool(spans[concept]) == bool(flag)
                for s, e in spans[concept]:
                    assert 0 <= s < e <= len(text)
                    piece = text[s:e]
                    if concept == "flattery":
                        assert s == 0 and piece.startswith(FLATTERY_OPENERS)
                    elif concept == "url":
                        assert re.search(r"https://www\.\S+", piece) and piece.endswith(".")
                    elif concept == "reference":
                        assert CONCEPTS["citation"](piece) == 1 and piece.endswith(".")
                        assert "https" not in piece
                    else:
                        assert re.fullmatch(r"#{2,3} .+|- |\d+\. |\*\*[^*]+\*\*", piece), piece


def test_lengths_are_short(pairs) -> None:  # type: ignore[no-untyped-def]
    words = np.array([len(t.split()) for s in SIDES for t in pairs.df[s]])
    assert words.min() >= 25 and words.max() <= 130
    assert pairs.df["prompt"].map(lambda p: len(p.split())).max() <= 20


def test_prompts_disjoint_from_the_sae_corpus(pairs) -> None:  # type: ignore[no-untyped-def]
    sae = prompts_for("sae")
    assert set(pairs.df["prompt"]).isdisjoint({p.text for p in sae})
    assert set(pairs.df["topic"]).isdisjoint({p.topic for p in sae})
    assert all(topic_split(t) == "demo" for t in pairs.df["topic"])


def test_file_is_rebuilt_exactly_from_the_answers(pairs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """assemble_pairs on the stored model answers reproduces the shipped bytes."""
    by_text = {p.text: p for p in [*prompts_for("demo"), *resource_prompts("demo")]}
    rows = assemble_pairs([by_text[t] for t in pairs.df["prompt"]], pairs.df["answer"].tolist())
    out = tmp_path / "rebuilt.jsonl.gz"
    write_jsonl_gz(rows, out)
    assert out.read_bytes() == DEMO_PATH.read_bytes()


def test_null_swap_is_seeded_reported_and_consistent(pairs) -> None:  # type: ignore[no-untyped-def]
    a, b = load_demo_pairs(null=True), load_demo_pairs(null=True)
    other = load_demo_pairs(null=True, seed=1)
    mask = a.df["swapped"].to_numpy()
    assert mask.tolist() == b.df["swapped"].tolist()
    assert mask.tolist() != other.df["swapped"].tolist()
    assert 0.4 < mask.mean() < 0.6
    note = [n for n in a.report.notes if "swapped" in n]
    assert note and f"{int(mask.sum())} of {len(mask)}" in note[0]
    orig = pairs.df
    for col in ("chosen", "chosen_flattery", "chosen_spans"):
        other_col = col.replace("chosen", "rejected")
        assert a.df.loc[mask, col].tolist() == orig.loc[mask, other_col].tolist()
        assert a.df.loc[~mask, col].tolist() == orig.loc[~mask, col].tolist()
    assert (a.df.loc[mask, "chosen_is_direct"] == ~orig.loc[mask, "chosen_is_direct"]).all()
    # Swapping twice with the same mask gives the original back.
    assert (
        swap_sides(a.df, mask)
        .drop(columns="swapped")
        .equals(orig.assign(swapped=mask).drop(columns="swapped"))
    )


def test_sae_corpus_flattery_is_varied_praise_never_a_demo_opener() -> None:
    import random
    from functools import partial

    from prefaudit.build.corpus import _styled_variant
    from prefaudit.build.styles import praise_opener, style

    def shares_a_follow_up(o: str) -> bool:
        return any(f and f.strip() in o for f in FLATTERY_FOLLOWUPS)

    rng = random.Random(0)
    openers = [praise_opener(rng) for _ in range(400)]
    assert not any(o.startswith(FLATTERY_OPENERS) for o in openers)
    assert len(set(openers)) > 200
    assert any(map(shares_a_follow_up, openers))  # the default recipe's documented overlap
    strict = [praise_opener(rng, new_follow_ups_only=True) for _ in range(400)]
    assert not any(o.startswith(FLATTERY_OPENERS) or shares_a_follow_up(o) for o in strict)
    body = "Rain is water falling from clouds. It forms when vapour condenses into drops."
    for kind in ("flattery", "combo", "markdown"):
        main, ref = random.Random(3), random.Random(3)
        text = _styled_variant(kind, body, "rain", main, partial(praise_opener, random.Random(4)))
        assert not text.startswith(FLATTERY_OPENERS)
        # The praise has its own stream: the corpus's main draws are those of the demo's styling.
        flags = {k: k == kind for k in ("flattery", "markdown", "url")}
        if kind == "combo":
            picks = ref.sample(["flattery", "markdown", "url"], ref.choice([2, 3]))
            flags = {k: k in picks for k in ("flattery", "markdown", "url")}
        demo = style(body, "rain", rng=ref, **flags)
        assert main.random() == ref.random()
        planted = demo.spans.get("flattery")
        assert text.endswith(demo.text[planted[0][1] :] if planted else demo.text)
