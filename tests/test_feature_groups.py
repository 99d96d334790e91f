"""Feature groups: clustering, scores, labels, aligned concepts and the explained-by model.

Pure tests on synthetic matrices with planted co-activating blocks, then the session API on the
tiny model and SAE.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import special, stats

from prefaudit import ids
from prefaudit.errors import ConfigError
from prefaudit.features import groups as fg
from prefaudit.stats import paired_tests
from tests.tiny import BLOCK_A, BLOCK_B, plant_blocks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted_responses(n: int = 400, seed: int = 0) -> np.ndarray:
    """Responses × 30 features: two co-activating blocks (0–9, 10–19), 8 loners, 2 rare ones."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 30))
    for block in (range(0, 10), range(10, 20)):
        factor = rng.exponential(size=n) * (rng.random(n) < 0.4)
        for f in block:
            x[:, f] = np.maximum(factor * rng.uniform(0.8, 1.2) + 0.1 * rng.normal(size=n), 0) * (factor > 0)
    x[:, 20:28] = rng.exponential(size=(n, 8)) * (rng.random((n, 8)) < 0.3)
    x[:3, 28] = 1.0  # active in 3 responses only: below the activity rule
    x[5:9, 29] = 2.0
    return x


def test_planted_blocks_come_out_as_two_groups_and_the_rest_is_accounted_for():
    x = planted_responses()
    g = fg.cluster_features(sp.csr_matrix(x))
    assert [m.tolist() for m in g.members[:2]] == [list(range(10)), list(range(10, 20))]
    assert all(len(m) == 1 for m in g.members[2:]) and g.n_groups == 10
    assert g.unclustered.tolist() == [28, 29] and g.min_active == 10
    # Every clustered feature is in exactly one group; groups + unclustered = all features.
    flat = np.concatenate(g.members)
    assert len(flat) == len(set(flat.tolist())) == 30 - len(g.unclustered)
    assert set(flat.tolist()) | set(g.unclustered.tolist()) == set(range(30))
    assert (g.assignment[g.unclustered] == -1).all()


def test_grouping_is_deterministic_and_does_not_depend_on_column_order():
    x = planted_responses(seed=3)
    a, b = fg.cluster_features(x), fg.cluster_features(sp.csc_matrix(x))
    assert [m.tolist() for m in a.members] == [m.tolist() for m in b.members]
    perm = np.random.default_rng(1).permutation(30)
    c = fg.cluster_features(x[:, perm])
    back = sorted(sorted(perm[m].tolist()) for m in c.members)
    assert back == sorted(m.tolist() for m in a.members)


def test_correlation_rows_are_capped_evenly_and_the_rule_follows_them():
    rows = fg.correlation_rows(10_000, 4096)
    assert len(rows) == 4096 and rows[0] == 0 and rows[-1] == 9999
    assert fg.min_active(4096) == 41 and fg.min_active(500) == 10
    x = np.tile(planted_responses(n=400), (3, 1))  # 1,200 rows, capped to 600
    g = fg.cluster_features(x, max_rows=600)
    assert g.n_rows == 600 and [m.tolist() for m in g.members[:2]] == [list(range(10)), list(range(10, 20))]


def test_group_scores_are_mean_standardised_member_values_and_tests_are_paired_tests():
    rng = np.random.default_rng(0)
    x = planted_responses(n=400)
    chosen, rejected = sp.csr_matrix(x[:200]), sp.csr_matrix(x[200:])
    g = fg.cluster_features(sp.vstack([chosen, rejected]))
    scale = fg.response_scale(chosen, rejected)
    assert np.allclose(scale, x.std(axis=0, ddof=1))
    w = fg.score_weights(g, scale)
    sc = fg.group_scores(chosen, w).toarray()
    assert np.allclose(sc[:, 0], (x[:200, :10] / scale[:10]).mean(axis=1))
    lengths = (rng.integers(5, 50, 200).astype(float), rng.integers(5, 50, 200).astype(float))
    sr = fg.group_scores(rejected, w).toarray()
    ref = paired_tests(sc, sr, lengths=lengths)
    mine = paired_tests(fg.group_scores(chosen, w), fg.group_scores(rejected, w), lengths=lengths)
    pd.testing.assert_frame_equal(ref, mine)


def test_aligned_concepts_are_the_largest_absolute_correlations():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(300, 2))
    concepts = np.column_stack([s[:, 0] + rng.normal(size=300), -s[:, 1], rng.normal(size=300), np.ones(300)])
    out = fg.aligned_concepts(sp.csr_matrix(s), concepts, ["a", "b", "c", "const"])
    assert out[0][0][0] == "a" and out[1][0][0] == "b"
    assert out[1][0][1] == pytest.approx(-1.0)
    r = fg.correlate_columns(s, concepts)
    assert r[0, 0] == pytest.approx(np.corrcoef(s[:, 0], concepts[:, 0])[0, 1])
    assert (r[:, 3] == 0).all()


def test_peak_reader_puts_each_pooled_value_at_its_stored_peak_token_and_nowhere_else():
    vocab = ["what", "a", "great", "question", "!", "yes", "no"]
    texts = ["what a great question !", "yes no yes", "a great yes", ""]
    tokenize = lambda s: [vocab.index(w) for w in s.split()]  # noqa: E731
    decode = lambda ids_: [" " + vocab[i] for i in ids_]  # noqa: E731
    # Two pairs: rows 0, 1 chosen, rows 2, 3 rejected; 3 features.
    chosen = SimpleNamespace(
        values=sp.csr_matrix(np.array([[5.0, 0.0, 2.0], [0.0, 1.0, 0.0]])),
        top_pos=np.array(
            [2, 4, 1]
        ),  # row 0: feature 0 at "great", feature 2 at "!"; row 1: feature 1 at "no"
        top_token=np.array([2, 4, 6]),
    )
    rejected = SimpleNamespace(
        values=sp.csr_matrix(np.array([[0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])),
        top_pos=np.array([1]),
        top_token=np.array([0]),  # "great" was token 2 there: tokenised differently → not used
    )
    read = fg.peak_reader((chosen, rejected), texts, tokenize, decode)
    out = read([0, 1, 2, 3], [2, 0])  # features in any order: columns follow the order asked
    tokens, acts = out[0]
    assert tokens == [" what", " a", " great", " question", " !"] and acts.shape == (5, 2)
    expected = np.zeros((5, 2))
    expected[2, 1], expected[4, 0] = 5.0, 2.0
    np.testing.assert_array_equal(acts, expected)
    assert not out[1][1].any()  # feature 1 is not asked for
    assert out[2][0] == [" a", " great", " yes"] and not out[2][1].any()  # a stale peak reads as nothing
    assert out[3] == ([], out[3][1]) and out[3][1].shape == (0, 2)
    assert read([1], [1])[0][1][:, 0].tolist() == [0.0, 1.0, 0.0]
    assert read([0], [])[0][1].shape == (5, 0)


# ---------------------------------------------------------------------- explained by
def test_intercept_with_one_covariate_equals_linregress():
    rng = np.random.default_rng(0)
    x = rng.normal(size=80)
    y = 0.3 + 0.7 * x + rng.normal(size=80)
    fit = fg.ols_intercept(y, x[:, None])
    ref = stats.linregress(x, y)
    assert fit.effect[0] == pytest.approx(ref.intercept, rel=1e-10)
    assert fit.stderr[0] == pytest.approx(ref.intercept_stderr, rel=1e-10)
    t = ref.intercept / ref.intercept_stderr
    assert fit.p[0] == pytest.approx(2 * stats.t.sf(abs(t), 78), rel=1e-8)


def test_intercept_with_several_covariates_equals_a_lstsq_reference_and_none_gives_d_z():
    rng = np.random.default_rng(1)
    n = 120
    x = rng.normal(size=(n, 4))
    y = np.column_stack([0.2 + x @ [0.5, -1, 0.1, 0] + rng.normal(size=n), rng.normal(size=n)])
    fit = fg.ols_intercept(y, x)
    design = np.column_stack([np.ones(n), x])
    beta = np.linalg.lstsq(design, y, rcond=None)[0]
    resid = y - design @ beta
    sigma2 = (resid**2).sum(axis=0) / (n - 5)
    se = np.sqrt(sigma2 * np.linalg.inv(design.T @ design)[0, 0])
    assert np.allclose(fit.effect, beta[0]) and np.allclose(fit.stderr, se)
    assert np.allclose(fit.p, 2 * special.stdtr(n - 5, -np.abs(beta[0] / se)))
    assert np.allclose(fit.d_z_controlled, beta[0] / np.sqrt(sigma2))
    # A constant covariate is dropped; no covariates at all gives exactly d_z.
    with_const = fg.ols_intercept(y, np.column_stack([x, np.full(n, 3.0)]))
    assert np.allclose(with_const.effect, fit.effect) and with_const.dof == fit.dof
    plain = fg.ols_intercept(y, None)
    assert np.allclose(plain.d_z_controlled, y.mean(axis=0) / y.std(axis=0, ddof=1))


def test_a_group_that_rides_on_another_loses_its_effect_an_independent_one_keeps_it():
    rng = np.random.default_rng(4)
    n = 2000
    a = 0.6 + rng.normal(size=n)  # a strong signal
    rides = a + 0.5 * rng.normal(size=n)  # only rides on it
    own = 0.3 + rng.normal(size=n)  # independent
    dlen = rng.normal(size=n) * 10
    delta = np.column_stack([a, rides, own, rng.normal(size=n)])
    d_z = delta.mean(axis=0) / delta.std(axis=0, ddof=1)
    ctrl, controls = fg.controlled_effects(delta, d_z, dlen, k=2)
    assert controls[1] == [0, 2] and controls[0] == [1, 2] and controls[3] == [0, 1]
    assert abs(ctrl.d_z_controlled[1]) < 0.1 < 0.5 * d_z[1]
    assert ctrl.d_z_controlled[2] == pytest.approx(d_z[2], abs=0.05)
    for j, c in enumerate(controls):  # each equals its own reference regression
        ref = fg.ols_intercept(delta[:, j], np.column_stack([dlen, delta[:, c]]))
        assert ctrl.effect[j] == pytest.approx(ref.effect[0]) and ctrl.p[j] == pytest.approx(ref.p[0])
    assert fg.strongest(np.array([0.1, np.nan, -0.9, 0.5]), 2, exclude=[2]) == [3, 0]


def test_group_ids():
    assert ids.group_id(3) == "group:3" and ids.is_group("group:3") and not ids.is_group("sae:3")
    assert ids.parse("group:12") == ("group", 12)
    assert ids.normalize("group") == "concept:group"  # a bare string stays a concept name
    for bad in ("group:x", "group:"):
        with pytest.raises(ConfigError):
            ids.parse(bad)
    with pytest.raises(ConfigError, match="feature group"):
        ids.normalize("group:2")  # a group is not a feature: per-feature queries refuse it


# ---------------------------------------------------------------------- session
@pytest.fixture()
def grouped(tiny_session):
    tiny_session.encode(progress=False)
    plant_blocks(tiny_session)
    return tiny_session


def test_the_planted_blocks_come_out_as_groups_through_the_session(grouped):
    from prefaudit.audit.groups import GROUP_COLUMNS

    table = grouped.groups()
    assert list(table.columns) == list(GROUP_COLUMNS)
    assert table["group"].tolist() == [ids.group_id(k) for k in range(len(table))]
    g_a, g_b = (grouped.groups.of(ids.sae_id(block[0])) for block in (BLOCK_A, BLOCK_B))
    assert g_a is not None and g_b is not None and g_a != g_b
    for block, g in ((BLOCK_A, g_a), (BLOCK_B, g_b)):
        assert {ids.sae_id(f) for f in block} <= set(grouped.groups.members(g))
    assert not {ids.sae_id(f) for f in BLOCK_B} & set(grouped.groups.members(g_a))
    # Every SAE feature is in one group or listed as unclustered with its reason: none is dropped.
    members = [f for m in table["members"] for f in m]
    assert len(members) == len(set(members)) == table["n_members"].sum()
    assert len(members) + table.attrs["n_unclustered"] == grouped.encoded.d_sae
    unclustered = grouped.groups.unclustered()
    assert unclustered["feature"].tolist() == table.attrs["unclustered"]
    assert set(unclustered["reason"]) <= {"rare", "ubiquitous", "no_edge", "small_community"}
    assert sum(table.attrs["unclustered_by_reason"].values()) == len(unclustered)
    assert (table["n_members"] >= table.attrs["min_size"]).all()
    # Block A leans to chosen by both statistics; block B leans nowhere.
    row_a, row_b = (table.set_index("group").loc[g] for g in (g_a, g_b))
    assert row_a["q"] < 0.05 and row_a["d_z"] > 0 and row_a["badge"] == "chosen" and row_a["q_fire"] < 0.05
    assert row_b["q"] >= 0.05 and row_b["badge"] not in ("chosen", "rejected")
    # The label reads the planted text around the peaks ("What a great question!"), not punctuation.
    assert {"what", "great", "question"} & set(re.findall(r"\w+", row_a["label"].lower())), row_a["label"]
    assert row_a["label_kind"] == "distinctive" and table.attrs["label_reader"] == "peaks"
    assert all(ids.is_concept(c) for a in table["aligned"] for c, _ in a)
    assert grouped.groups() is table  # cached
    grouped.test()
    assert grouped.groups() is table  # testing does not change the features
    grouped.add_concept("cats", r"\bcat\b")
    assert grouped.groups() is not table  # a new concept changes the aligned column


def test_null_planted_blocks_give_no_significant_group(tiny_session):
    tiny_session.encode(progress=False)
    plant_blocks(tiny_session, lean=False)
    table = tiny_session.groups()
    assert tiny_session.groups.of(ids.sae_id(BLOCK_A[0])) is not None
    assert (table["q"] >= 0.05).all() and (table["q_fire"] >= 0.05).all()


def test_group_scores_and_the_papers_columns_equal_a_direct_computation(grouped):
    table = grouped.groups()
    enc = grouped.encoded
    x = np.vstack([enc.chosen.values.toarray(), enc.rejected.values.toarray()]).astype(np.float64)
    sd = x.std(axis=0, ddof=1)
    n = enc.n_pairs
    p_fire = []
    for row in table.itertuples(index=False):
        scores = grouped.groups.scores(row.group)
        cols = [ids.sae_index(f) for f in row.members]
        direct = (x[:, cols] / sd[cols]).mean(axis=1)
        np.testing.assert_allclose(np.r_[scores["chosen"], scores["rejected"]], direct, rtol=1e-6)
        threshold = max(0.0, float(np.quantile(direct, 0.9)))
        fc, fr = direct[:n] > threshold, direct[n:] > threshold
        n_c, n_r, n_b = int((fc & ~fr).sum()), int((fr & ~fc).sum()), int((fc & fr).sum())
        assert (row.n_chosen_only, row.n_rejected_only, row.n_both) == (n_c, n_r, n_b)
        assert row.fire_threshold == pytest.approx(threshold, rel=1e-6)
        assert row.fire_score == pytest.approx((n_c - n_r) / n)
        if n_c + n_r:
            test = stats.binomtest(n_c, n_c + n_r)
            ci = test.proportion_ci(0.95, method="exact")
            assert row.fire_ci_low == pytest.approx((n_c + n_r) / n * (2 * ci.low - 1), abs=1e-9)
            assert row.fire_ci_high == pytest.approx((n_c + n_r) / n * (2 * ci.high - 1), abs=1e-9)
            p_fire.append(test.pvalue)
            both_low = stats.binomtest(n_b, n_b + n_c + n_r).proportion_ci(0.95, method="exact").low
            badge = (
                "chosen"
                if row.fire_ci_low > 0
                else "rejected"
                if row.fire_ci_high < 0
                else "both"
                if both_low > 0.5
                else "neither"
            )
            assert row.badge == badge
        else:
            p_fire.append(1.0)
        halves = row.split_half
        assert isinstance(halves, (bool, np.bool_))
    np.testing.assert_allclose(table["p_fire"], p_fire, rtol=1e-9)
    np.testing.assert_allclose(table["q_fire"], stats.false_discovery_control(p_fire), rtol=1e-9)
    # Our statistics are paired_tests of those scores, BH across groups.
    both = [grouped.groups.scores(g) for g in table["group"]]
    ref = paired_tests(
        np.column_stack([s["chosen"] for s in both]),
        np.column_stack([s["rejected"] for s in both]),
        lengths=grouped.space.lengths(),
    )
    for col in ("d_z", "p", "q", "ci_low", "ci_high", "delta_len_ctrl"):
        assert np.allclose(table[col], ref[col], equal_nan=True), col
    with pytest.raises(ConfigError):
        grouped.groups.scores("group:9999")


def test_session_explained_by(grouped):
    table = grouped.groups()
    row = table.iloc[0]
    out = grouped.groups.explained_by(row["group"])
    assert out["controlled_for"] == row["controlled_for"] and row["group"] not in out["controlled_for"]
    assert out["effect"] == pytest.approx(row["effect_ctrl"])
    assert out["d_z_controlled"] == pytest.approx(row["d_z_controlled"], nan_ok=True)
    member = row["members"][0]
    feat = grouped.groups.explained_by(member)
    assert row["group"] not in feat["controlled_for"] and grouped.groups.of(member) == row["group"]
    v = grouped.space.values(member)["delta"].to_numpy()
    dlen = np.subtract(*grouped.space.lengths())
    cov = np.column_stack([dlen] + [grouped.groups.scores(g)["delta"] for g in feat["controlled_for"]])
    ref = fg.ols_intercept(v, cov)
    assert feat["effect"] == pytest.approx(ref.effect[0]) and feat["p"] == pytest.approx(ref.p[0])
    with pytest.raises(ConfigError, match="feature group"):
        grouped.space.values(row["group"])
    concept = grouped.groups.explained_by("flattery")
    assert concept["feature"] == "concept:flattery"
    assert concept["controlled_for"] == [ids.group_id(j) for j in fg.strongest(table["d_z"].to_numpy(), 5)]


def test_explain_gives_each_group_an_explanation_cached_per_explainer(grouped):
    table = grouped.groups()
    built_in = grouped.groups.explain()
    assert list(built_in.columns) == ["group", "explanation", "source"]
    assert built_in["group"].tolist() == table["group"].tolist()
    assert built_in["explanation"].tolist() == table["label"].tolist()
    assert grouped.groups.explain("contexts") is built_in  # cached
    calls = []

    def n_members(c):
        calls.append(c.unit)
        return f"{len(c.features)} features, {len(c.top)} contexts"

    said = grouped.groups.explain(n_members)
    assert said["explanation"].tolist() == [f"{n} features, 20 contexts" for n in table["n_members"]]
    assert set(said["source"]) == {"n_members"}
    assert grouped.groups.explain(n_members) is said and len(calls) == len(table)
    assert grouped.groups.contexts(said["group"].iloc[0]).unit == said["group"].iloc[0]
    with pytest.raises(ConfigError, match="explainer"):
        grouped.groups.explain("nobody")
    plant_blocks(grouped, seed=1)  # the features change: the cache empties
    assert grouped.groups.explain(n_members) is not said and len(calls) > len(table)


def test_model_reader_reads_what_token_activations_reads(grouped):
    from prefaudit.features.encode import token_activations

    df = grouped.data.df
    texts = df["chosen"].tolist() + df["rejected"].tolist()
    read = fg.model_reader(grouped.backbone, grouped.sae, grouped.data.messages, texts, batch=3)
    n = len(df)
    rows, feats = [1, n + 1, 5, n + 7], [3, 17, 40]
    out = read(rows, feats)
    for r, (tokens, acts) in zip(rows, out, strict=True):
        ref = token_activations(
            grouped.backbone,
            grouped.sae,
            grouped.data.messages(r % n),
            [texts[r % n], texts[n + r % n]],
            feats,
        )[r // n]
        assert tokens == ref[0]
        np.testing.assert_allclose(acts, ref[1], rtol=1e-4, atol=1e-5)
    (tokens_only, none), (tokens, _) = read([2], [])[0], read([2], [0])[0]
    assert tokens_only == tokens and none.shape == (len(tokens), 0)  # features=[]: tokenised only
    grouped.groups.reader = "model"
    table = grouped.groups(refresh=True)
    assert table.attrs["label_reader"] == "model" and table["label"].map(lambda s: s != "").all()
    grouped.groups.reader = "nothing"
    with pytest.raises(ConfigError, match="reader"):
        grouped.groups(refresh=True)
