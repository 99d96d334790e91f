"""Feature groups: clustering, scores, labels, aligned concepts and the explained-by model.

Pure tests on synthetic matrices with planted co-activating blocks, then the session API on the
tiny model and SAE.
"""

from __future__ import annotations

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


def test_labels_are_ngrams_around_the_peaks_of_the_strongest_responses():
    vocab = ["what", "a", "great", "question", "!", "yes", "no", "maybe", "the", "cat"]
    rng = np.random.default_rng(0)
    texts, rows, pos, tok = [], [], [], []
    for i in range(40):
        words = [vocab[j] for j in rng.integers(5, 10, size=6)]
        if i < 20:  # the strongest responses peak on "great" inside "what a great question !"
            words[1:1] = ["what", "a", "great", "question", "!"]
        texts.append(" ".join(words))
        ids_ = [vocab.index(w) for w in words]
        p = 3 if i < 20 else 0
        rows.append(i)
        pos.append(p)
        tok.append(ids_[p])
    values = sp.csr_matrix((np.r_[np.full(20, 5.0), np.full(20, 1.0)], (rows, [0] * 40)), shape=(40, 1))
    side = SimpleNamespace(values=values, top_pos=np.array(pos), top_token=np.array(tok))
    empty = SimpleNamespace(
        values=sp.csr_matrix((40, 1)), top_pos=np.zeros(0, int), top_token=np.zeros(0, int)
    )
    groups = fg.FeatureGroups([np.array([0])], np.zeros(0, int), 1, 10, 80)
    scores = sp.vstack([values, sp.csr_matrix((40, 1))])
    label = fg.group_labels(
        groups,
        scores,
        (side, empty),
        texts + [""] * 40,
        np.ones(1),
        lambda s: [vocab.index(w) for w in s.split()],
        lambda ids_: [" " + vocab[i] for i in ids_],
        n_top=10,
    )[0]
    assert label.split(" · ")[0] == "a great question"


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
    return tiny_session


def test_session_groups_table(grouped):
    from prefaudit.audit.groups import GROUP_COLUMNS

    table = grouped.groups()
    assert list(table.columns) == list(GROUP_COLUMNS)
    assert table["group"].tolist() == [ids.group_id(k) for k in range(len(table))]
    members = [f for m in table["members"] for f in m]
    assert len(members) == len(set(members)) == table["n_members"].sum()
    assert len(members) + table.attrs["n_unclustered"] == grouped.encoded.d_sae
    assert set(members).isdisjoint(table.attrs["unclustered"])
    assert table["label"].map(lambda s: isinstance(s, str) and s != "").all()
    assert all(len(a) <= 2 and all(ids.is_concept(c) for c, _ in a) for a in table["aligned"])
    assert grouped.groups() is table  # cached
    assert grouped.concepts[0].name == "length"  # text concepts untouched
    again = grouped.groups(refresh=True)
    pd.testing.assert_frame_equal(again.drop(columns=["members", "aligned", "controlled_for"]),
                                  table.drop(columns=["members", "aligned", "controlled_for"]))  # fmt: skip
    assert again["members"].tolist() == table["members"].tolist()
    grouped.test()
    assert grouped.groups() is again  # testing does not change the features
    grouped.add_concept("cats", r"\bcat\b")
    assert grouped.groups() is not again  # a new concept changes the aligned column


def test_session_group_scores_and_tests(grouped):
    table = grouped.groups()
    k = int(table["n_members"].idxmax())
    scores = grouped.groups.scores(ids.group_id(k))
    assert list(scores.columns) == ["pair_id", "chosen", "rejected", "delta"]
    assert np.allclose(scores["delta"], scores["chosen"] - scores["rejected"])
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
    assert concept["feature"] == "concept:flattery" and len(concept["controlled_for"]) == 5
