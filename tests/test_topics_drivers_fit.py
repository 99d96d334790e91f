"""Prompt topics, tests by topic, the drivers of a signal and the SAE's fit (fast layer).

Topics and tests by topic run on concepts-only sessions over synthetic prompts with two planted
topics (cooking, programming); drivers and the SAE's fit also on the tiny real model and SAE.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import prefaudit as pa
from prefaudit.errors import ConfigError
from prefaudit.features.topics import cluster_prompts, kruskal_wallis_columns, prompt_text
from prefaudit.stats import paired_tests
from tests import tiny
from tests.tiny import plant_blocks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COOK = [
    "bake",
    "bread",
    "oven",
    "recipe",
    "flour",
    "dough",
    "soup",
    "pasta",
    "sauce",
    "garlic",
    "onion",
    "roast",
]
CODE = [
    "python",
    "code",
    "bug",
    "compile",
    "function",
    "variable",
    "loop",
    "error",
    "debug",
    "script",
    "class",
    "module",
]


def topic_pairs(n: int = 120, seed: int = 0, *, swap: bool = False) -> list[dict]:
    """Cooking prompts (even rows) and programming prompts (odd rows); in cooking pairs only,
    80 % of the chosen responses end in "sparkle". ``swap``: chosen and rejected exchanged by a
    seeded coin per pair (a null: the labels carry nothing)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = i % 2
        prompt = "How do I " + " ".join(rng.sample(COOK if topic == 0 else CODE, 4)) + "?"
        chosen = " ".join(rng.choice(tiny.WORDS[:60]) for _ in range(rng.randint(6, 20)))
        rejected = " ".join(rng.choice(tiny.WORDS[:60]) for _ in range(rng.randint(6, 20)))
        if topic == 0 and rng.random() < 0.8:
            chosen += " sparkle"
        if swap and rng.random() < 0.5:
            chosen, rejected = rejected, chosen
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "src": "ab"[i % 3 == 0]})
    return rows


def concept_session(**kwargs) -> pa.AuditSession:
    session = pa.AuditSession(pa.load_pairs(topic_pairs(**kwargs)), sae=False, cache_dir=False)
    session.add_concept("sparkle", r"sparkle")
    return session


@pytest.fixture(scope="module")
def planted():
    session = concept_session()
    session.topics()
    session.test(by="topic", n_boot=200)
    return session


# ---------------------------------------------------------------------------- topics
def test_prompt_text_takes_the_user_turns():
    chat = [
        {"role": "user", "content": "pens?"},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "which"},
    ]
    assert prompt_text(chat) == "pens?\nwhich"
    assert prompt_text(chat, "last_user") == "which"
    assert prompt_text(chat, "all") == "pens?\nYes.\nwhich"
    assert prompt_text("plain", "user") == "plain"
    with pytest.raises(ConfigError, match="turns"):
        prompt_text(chat, "system")


def test_topics_recover_the_planted_topics_and_are_deterministic(planted):
    table = planted.topics()
    assert list(table.columns) == ["pair_id", "topic", "topic_label"]
    assert table["pair_id"].tolist() == planted.data.df["pair_id"].tolist()
    truth = np.arange(len(table)) % 2
    # One topic per planted topic, each pure.
    assert sorted(pd.crosstab(table["topic"], truth).to_numpy().ravel().tolist()) == [0, 0, 60, 60]
    labels = planted.topics.labels()
    assert labels["n_pairs"].tolist() == [60, 60] and labels["topic"].tolist() == [0, 1]
    assert "silhouette" in labels.attrs["rule"] and set(labels.attrs["silhouette"]) == {2, 3, 4, 5, 6}
    for label, terms in zip(labels["label"], labels["terms"], strict=True):
        words = set(label.split(", "))
        assert len(words) == 3 and (words <= set(COOK) or words <= set(CODE))
        assert terms[:3] == label.split(", ")
    again = concept_session().topics()
    pd.testing.assert_frame_equal(table, again)


def test_a_fixed_number_of_topics_and_the_single_topic_cases():
    texts = [prompt_text(r["prompt"]) for r in topic_pairs()]
    four = cluster_prompts(texts, 4)
    assert four.n_topics == 4 and four.rule == "fixed: 4 topics" and four.sizes.sum() == len(texts)
    assert np.all(np.diff(four.sizes) <= 0)  # numbered by size
    assert cluster_prompts(texts[:30]).n_topics == 1  # fewer than 2 × min_per_topic
    assert cluster_prompts(["the and of"] * 50).n_topics == 1  # nothing but stop words
    with pytest.raises(ConfigError, match="n_topics"):
        cluster_prompts(texts, "many")


# ---------------------------------------------------------------------------- test(by="topic")
def test_an_effect_planted_in_one_topic_is_found_there_only(planted):
    long = planted.topics.results("topic")
    assert long is not None and long.attrs["by"] == "topic"
    n_topics, n_features = 2, len(planted.feature_ids)
    assert len(long) == n_topics * n_features
    assert list(long.columns[:2]) == ["topic", "topic_label"]
    assert {"p_heterogeneity", "q_heterogeneity", "split_half_agree", "d_z", "n_pairs"} <= set(long.columns)
    topic_of = planted.topics()["topic"].to_numpy()
    cooking = int(topic_of[0])  # row 0 is a cooking prompt
    rows = long[long["feature"] == "concept:sparkle"].set_index("topic")
    assert rows.loc[cooking, "q"] < 1e-6 and rows.loc[cooking, "direction"] == "chosen"
    assert rows.loc[cooking, "split_half_agree"] == 1.0
    assert rows.loc[1 - cooking, "q"] == 1.0  # never active there: untested
    assert rows["p_heterogeneity"].nunique() == 1 and rows["p_heterogeneity"].iloc[0] < 1e-10
    assert rows["q_heterogeneity"].iloc[0] < 1e-9


def test_by_topic_rows_are_paired_tests_on_each_topic_and_results_are_untouched(planted):
    assert planted.results is None  # test(by=...) never writes the per-feature table
    before = planted.test(n_boot=100)
    long = planted.test(by="topic", n_boot=100)
    assert planted.results is before and planted.topics.results("topic") is long
    m = planted.matrix
    lengths = planted.space.lengths()
    topic_of = planted.topics()["topic"].to_numpy()
    for t in (0, 1):
        rows = np.flatnonzero(topic_of == t)
        ref = paired_tests(
            m.chosen[rows], m.rejected[rows], lengths=(lengths[0][rows], lengths[1][rows]), n_boot=100
        )
        part = long[long["topic"] == t].reset_index(drop=True)
        for col in ("n_pairs", "delta_mean", "d_z", "p", "split_half_agree", "ci_low", "delta_len_ctrl"):
            np.testing.assert_array_equal(part[col].to_numpy(), ref[col].to_numpy(), err_msg=col)


def test_q_is_benjamini_hochberg_over_all_topic_by_feature_tests(planted):
    long = planted.topics.results("topic")
    tested = long["n_nonzero"] > 0
    assert (~tested).any() and (long.loc[~tested, "q"] == 1.0).all()
    expected = stats.false_discovery_control(long.loc[tested, "p"].to_numpy(), method="bh")
    np.testing.assert_allclose(long.loc[tested, "q"].to_numpy(), expected, rtol=1e-12)


def test_p_heterogeneity_is_scipys_kruskal_wallis_across_topics(planted):
    long = planted.topics.results("topic")
    topic_of = planted.topics()["topic"].to_numpy()
    delta = planted.matrix.delta.toarray()
    het = long.drop_duplicates("feature").set_index("feature")["p_heterogeneity"]
    checked = 0
    for j, fid in enumerate(planted.feature_ids):
        d = delta[:, j]
        if np.ptp(d) == 0:
            assert het[fid] == 1.0  # never varies: no evidence (scipy gives NaN)
            continue
        ref = stats.kruskal(d[topic_of == 0], d[topic_of == 1]).pvalue
        np.testing.assert_allclose(het[fid], ref, rtol=1e-9, err_msg=fid)
        checked += 1
    assert checked >= 3


def test_kruskal_wallis_columns_match_scipy_with_ties_signs_and_sparse_columns():
    rng = np.random.default_rng(1)
    n, p = 200, 30
    d = rng.normal(size=(n, p)) * (rng.random((n, p)) < 0.3)
    d[:, 1] = np.round(d[:, 1] * 2)  # heavy ties
    d[:, 2] = 0.0
    d[:, 3] = 1.5
    groups = rng.integers(0, 4, n)
    h, pval, varies = kruskal_wallis_columns(d, groups)
    assert not varies[2] and not varies[3] and pval[2] == pval[3] == 1.0
    for j in np.flatnonzero(varies):
        ref = stats.kruskal(*[d[groups == g, j] for g in range(4)])
        np.testing.assert_allclose([h[j], pval[j]], [ref.statistic, ref.pvalue], rtol=1e-9)


def test_a_null_with_labels_swapped_at_random_finds_no_topic_specific_effect():
    session = concept_session(swap=True)
    session.topics()
    long = session.test(by="topic", n_boot=100)
    assert not (long["q"] < 0.05).any()
    assert not ((long["q"] < 0.05) & (long["q_heterogeneity"] < 0.05)).any()


def test_by_a_metadata_column_and_unknown_groupings():
    session = concept_session()
    long = session.test(by="src", n_boot=50)
    assert list(long.columns[:1]) == ["src"] and set(long["src"]) == {"a", "b"}
    assert session.topics.results("src") is long and session.results is None
    with pytest.raises(ConfigError, match="metadata column"):
        session.test(by="prompt")
    with pytest.raises(ConfigError, match="src"):
        session.test(by="nope")


def test_stored_tables_go_stale_when_features_or_topics_change():
    session = concept_session()
    session.test(by="topic", n_boot=50)
    assert session.topics.results("topic") is not None
    session.topics(3)  # other topics: the stored table no longer describes them
    assert session.topics.results("topic") is None
    session.test(by="topic", n_boot=50)
    assert session.topics.results("topic")["topic"].nunique() == 3
    session.add_concept("oven_word", r"oven")
    assert session.topics.results("topic") is None


# ---------------------------------------------------------------------------- drivers
def test_driver_shares_sum_to_one_and_removing_the_top_drivers_moves_the_signal_by_hand():
    session = concept_session()
    weights = {"concept:sparkle": -1.0, "concept:length": 0.5}
    drivers = session.drivers("concept:length", weights=weights, top_k=5)
    assert list(drivers.columns) == [
        "position",
        "pair_id",
        "delta",
        "gradient_weight",
        "share",
        "cumulative_share",
    ]
    assert len(drivers) == len(session.data) and drivers["position"].is_unique
    np.testing.assert_allclose(drivers["share"].sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(drivers["cumulative_share"].iloc[-1], 1.0, rtol=1e-12)
    assert np.all(np.diff(drivers["share"].abs().to_numpy()) <= 1e-15)  # |share| descending

    pv = session.shaping.preview(weights, features=["concept:length"])
    pred, g = pv.table, pv.gradient_weight
    np.testing.assert_allclose(drivers.sort_values("position")["gradient_weight"], g)
    np.testing.assert_allclose(drivers.attrs["signal"], pred["signal_after"].iloc[0], rtol=1e-12)

    delta = session.space.values("concept:length")["delta"].to_numpy()
    top = drivers["position"].to_numpy()[:5]
    keep = np.setdiff1d(np.arange(delta.size), top)
    by_hand = (g[keep] * delta[keep]).sum() / g[keep].sum()
    np.testing.assert_allclose(drivers.attrs["signal_without_top_k"], by_hand, rtol=1e-12)
    pair_ids = drivers["pair_id"].to_numpy()[:5]
    np.testing.assert_allclose(
        session.drivers.signal_without("concept:length", pair_ids, weights=weights), by_hand, rtol=1e-12
    )
    # Removing nothing gives the signal back; unknown pairs are an error.
    np.testing.assert_allclose(
        session.drivers.signal_without("length", [], weights=weights), drivers.attrs["signal"], rtol=1e-12
    )
    with pytest.raises(ConfigError, match="pair_id"):
        session.drivers.signal_without("length", [10_000])


def test_vanilla_drivers_have_gradient_weight_one_half_and_share_delta_over_its_sum():
    session = concept_session()
    drivers = session.drivers("sparkle")
    assert (drivers["gradient_weight"] == 0.5).all()
    delta = session.space.values("sparkle")["delta"].to_numpy()
    np.testing.assert_allclose(
        drivers.sort_values("position")["share"].to_numpy(), delta / delta.sum(), rtol=1e-12
    )
    np.testing.assert_allclose(drivers.attrs["signal"], delta.mean(), rtol=1e-12)


def test_drivers_of_sae_features_and_groups_on_the_tiny_model(tiny_session):
    tiny_session.encode(progress=False)
    plant_blocks(tiny_session)  # the tiny random SAE forms no co-firing cluster of its own
    fid = tiny_session.test(n_boot=50).sort_values("p")["feature"].iloc[0]
    drivers = tiny_session.drivers(fid)
    assert drivers.attrs["feature"] == fid
    np.testing.assert_allclose(drivers["share"].sum(), 1.0, rtol=1e-9)
    groups = tiny_session.groups()
    assert len(groups) > 0
    gid = groups["group"].iloc[0]
    drivers = tiny_session.drivers(gid)
    delta = tiny_session.groups.scores(gid)["delta"].to_numpy()
    np.testing.assert_allclose(drivers.sort_values("position")["delta"].to_numpy(), delta)
    np.testing.assert_allclose(drivers.attrs["signal"], delta.mean(), rtol=1e-9)


def test_by_topic_on_the_tiny_model_keeps_the_sae_results(tiny_session):
    tiny_session.encode(progress=False)
    results = tiny_session.test(n_boot=50)
    long = tiny_session.test(by="topic", n_boot=50)
    assert tiny_session.results is results
    n_topics = tiny_session.topics.labels().shape[0]
    assert len(long) == n_topics * len(tiny_session.feature_ids)
    assert set(long["source"]) == {"sae", "concept"}


# ---------------------------------------------------------------------------- the SAE's fit
def test_sae_fit_equals_evaluate_sae_on_the_same_activations(tiny_session):
    from prefaudit.build.sae_training import evaluate_sae

    fit = tiny_session.sae_fit(n=30, seed=3)
    assert fit.n_responses == 30 and len(set(fit.sample)) == 30
    sample, acts = tiny_session.lens_fit.sample_activations(30, 3)
    assert sample == fit.sample
    ref = evaluate_sae(tiny_session.sae.sae, acts)
    for key in ("explained_variance", "l0", "dead_fraction", "mse_per_token", "n_tokens"):
        np.testing.assert_allclose(getattr(fit, key), ref[key], rtol=1e-6, err_msg=key)
    # The sample read independently, in one batch: the same tokens and (padding aside) values.
    df = tiny_session.data.df
    one = tiny_session.backbone.read_responses(
        [tiny_session.data.messages(p) for p, _ in sample], [df[side].iloc[p] for p, side in sample]
    )
    assert sum(a.shape[0] for a in one) == fit.n_tokens
    alone = evaluate_sae(tiny_session.sae.sae, __import__("torch").cat(one))
    np.testing.assert_allclose(alone["explained_variance"], fit.explained_variance, rtol=1e-4, atol=1e-5)
    # Cached per (n, seed); the tiny random SAE reconstructs badly, so the fit warns.
    assert tiny_session.sae_fit(n=30, seed=3) is fit
    assert fit.warning is not None and fit.explained_variance < 0.7 and "warning" in str(fit)
    everything = tiny_session.sae_fit(n=10_000)
    assert everything.n_responses == 2 * len(tiny_session.data)
    odd = tiny_session.sae_fit(n=7, seed=1)  # both responses of 4 pairs, the last one's rejected left out
    assert odd.n_responses == 7 and len({p for p, _ in odd.sample}) == 4 and odd.sample[-1][1] == "chosen"


def test_sae_fit_needs_an_sae():
    with pytest.raises(ConfigError, match="concepts only"):
        concept_session().sae_fit()
