"""Labels from distinctive contexts: planted phrases are recovered, tokens that are everywhere are not.

Synthetic responses of random words; a token reader computes per-token activations by a planted
rule, as the session's reader would from the model (seconds, no model).
"""

from __future__ import annotations

import numpy as np
import pytest

from prefaudit.errors import ConfigError
from prefaudit.features import labels as fl
from tests.tiny import WORDS

FILLER = [w for w in WORDS[:80] if w not in {"the", "great", "question", "step"}]


def corpus(n: int = 600, seed: int = 0) -> list[list[str]]:
    """Responses as token lists: random filler, "the" every third token, "!" often; a planted
    " what a great question!" in every 7th response and " ## Step one" in every 9th."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        toks = []
        for k in range(int(rng.integers(20, 40))):
            toks.append(" the" if k % 3 == 0 else " " + str(rng.choice(FILLER)))
            if rng.random() < 0.15:
                toks.append("!")
        at = int(rng.integers(0, len(toks)))
        if i % 7 == 0:
            toks[at:at] = [" what", " a", " great", " question", "!"]
        if i % 9 == 0:
            toks[at:at] = ["\n", "##", " Step", " one", "\n"]
        out.append(toks)
    return out


def activations(tokens: list[str]) -> np.ndarray:
    """Three features: 0 fires on every "!", three times stronger after "great question";
    1 fires on "##"; 2 fires on " Step" after "##"."""
    a = np.zeros((len(tokens), 3))
    for t, tok in enumerate(tokens):
        if tok == "!":
            a[t, 0] = 1.0 + (2.0 if tokens[max(0, t - 2) : t] == [" great", " question"] else 0.0)
        if tok == "##":
            a[t, 1] = 1.0
        if tok == " Step" and t and tokens[t - 1] == "##":
            a[t, 2] = 1.5
    return a


class Reader:
    """The session's reader stand-in; records what it was asked for."""

    def __init__(self, texts: list[list[str]]):
        self.texts, self.calls = texts, []

    def __call__(self, rows, features):
        self.calls.append((list(rows), list(features)))
        return [(self.texts[r], activations(self.texts[r])[:, list(features)]) for r in rows]


@pytest.fixture(scope="module")
def data():
    texts = corpus()
    pooled = np.stack([activations(t).max(axis=0) for t in texts])
    return texts, pooled


def test_a_feature_peaking_on_punctuation_is_labelled_by_its_distinctive_context(data):
    texts, pooled = data
    reader = Reader(texts)
    (res,) = fl.concept_contexts(pooled[:, [0]], [[0]], reader, unit_ids=["sae:0"])
    # Every peak is "!", which bare top tokens would call the feature; the contexts say more.
    assert {c.tokens[c.peak] for c in res.top} == {"!"}
    assert res.label_kind == "distinctive"
    assert "great question" in res.label.lower()
    assert res.unit == "sae:0" and res.features == (0,) and len(res.top) == fl.N_TOP
    assert res.n_unread == 0
    assert all(c.value == 3.0 for c in res.top)
    assert "[!]" in res.top[0].text()


def test_a_token_in_every_context_labels_nothing(data):
    texts, pooled = data
    (res,) = fl.concept_contexts(pooled[:, [0]], [[0]], Reader(texts))
    grams = {g.text.lower(): g for g in res.distinctive}
    top_counts, _ = fl.count_ngrams(res.top)
    assert top_counts["the"] >= len(res.top) // 2  # "the" is in most top contexts …
    assert "the" not in grams or grams["the"].low <= 0  # … and distinguishes nothing
    assert all(part.strip().lower() != "the" for part in res.label.split("·"))
    assert all(part.strip() != "!" for part in res.label.split("·"))


def test_a_cluster_is_labelled_from_its_members_summed_activations(data):
    texts, pooled = data
    score = pooled[:, [1, 2]].mean(axis=1, keepdims=True)
    reader = Reader(texts)
    (res,) = fl.concept_contexts(score, [[1, 2]], reader, unit_ids=["cluster:0"], weights=np.ones(3))
    assert "step" in res.label.lower()
    assert {c.tokens[c.peak] for c in res.top} == {" Step"}  # 1 + 1.5 at "##"+"Step" windows: Step wins
    # The reader was asked only for the cluster's members (and tokens alone for the background).
    assert {tuple(f) for _, f in reader.calls} == {(1, 2), ()}


def test_log_odds_ratio_equals_scipy_without_the_correction_and_the_formula_with_it():
    from scipy.stats.contingency import odds_ratio

    d, se = fl.log_odds_ratio(np.array([8.0]), 40.0, np.array([20.0]), 400.0, correction=0.0)
    ref = odds_ratio([[8, 32], [20, 380]], kind="sample")
    ci = ref.confidence_interval(0.95)
    assert np.exp(d[0]) == pytest.approx(ref.statistic)
    assert np.exp(d[0] - fl.Z_95 * se[0]) == pytest.approx(ci.low, rel=1e-6)
    assert np.exp(d[0] + fl.Z_95 * se[0]) == pytest.approx(ci.high, rel=1e-6)
    d, se = fl.log_odds_ratio(np.array([20.0]), 20.0, np.array([0.0]), 100.0)
    assert d[0] == pytest.approx(np.log(20.5 / 0.5) - np.log(0.5 / 100.5))
    assert se[0] == pytest.approx(np.sqrt(1 / 20.5 + 1 / 0.5 + 1 / 0.5 + 1 / 100.5))


def test_ranking_by_the_lower_bound_puts_evidence_first():
    top = [fl.Context(k, 0, (" x", " y") if k < 20 else (" z",), 0, 1.0) for k in range(20)]
    top += [fl.Context(20 + k, 0, (" w",) if k < 12 else (" v",), 0, 1.0) for k in range(20)]
    bg = ({"x": 40, "w": 10, "v": 2000}, 4000)
    grams = fl.distinctive_ngrams(top, bg)
    texts = [g.text for g in grams]
    # "x y" and "y" (20 of 40 top, never in the background) before "w" (12 of 40), "v" nowhere.
    assert texts[:2] == ["x y", "y"] and "v" not in texts
    assert [g.low for g in grams] == sorted((g.low for g in grams), reverse=True)


def test_without_a_distinctive_ngram_the_label_is_the_strongest_context():
    texts = [[" a", " b", " c"]] * 30
    pooled = np.ones((30, 1))

    def read(rows, features):
        return [(texts[r], np.ones((3, len(features)))) for r in rows]

    (res,) = fl.concept_contexts(pooled, [[0]], read, n_top=5)
    assert res.label_kind == "strongest context"
    assert res.label == "a b c"


def test_top_responses_without_activation_are_counted_not_hidden():
    pooled = np.array([[1.0], [0.5], [0.0]])

    def read(rows, features):  # a stale reader: tokens but no activation anywhere
        return [([" x", " y"], np.zeros((2, len(features)))) for _ in rows]

    (res,) = fl.concept_contexts(pooled, [[0]], read)
    assert res.n_unread == 2 and res.top == () and res.label_kind == "no context"


def test_contexts_are_deterministic_and_peaks_are_windows_apart(data):
    texts, pooled = data
    a = fl.concept_contexts(pooled[:, [0]], [[0]], Reader(texts), n_peaks=3, seed=1)
    b = fl.concept_contexts(pooled[:, [0]], [[0]], Reader(texts), n_peaks=3, seed=1)
    assert a == b
    by_row: dict[int, list[int]] = {}
    for c in a[0].top:
        by_row.setdefault(c.row, []).append(c.position)
    assert any(len(p) > 1 for p in by_row.values())
    assert all(abs(x - y) > fl.WINDOW for p in by_row.values() for x in p for y in p if x != y)
    assert len(a[0].contrast) == fl.N_CONTRAST and all(np.isnan(c.value) for c in a[0].contrast)


def test_a_reader_that_returns_the_wrong_shape_is_named():
    def read(rows, features):
        return [([" x", " y"], np.zeros((3, len(features)))) for _ in rows]

    with pytest.raises(ConfigError, match="row 0"):
        fl.concept_contexts(np.ones((2, 1)), [[0]], read)
    with pytest.raises(ConfigError, match="2 units"):
        fl.concept_contexts(np.ones((2, 1)), [[0], [1]], read)


def test_context_text_shows_newlines_and_marks_the_peak():
    c = fl.Context(row=0, position=5, tokens=("\n", "##", " Step", " one"), peak=2, value=1.0)
    assert c.text() == "⏎ ## [Step] one"
    assert c.text(("", "")) == "⏎ ## Step one"
