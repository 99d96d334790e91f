"""Feature clusters: the co-firing graph, its communities, and the per-pair cluster statistics.

Pure tests on synthetic pooled matrices with planted co-firing blocks (seconds).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats
from sklearn.metrics import adjusted_rand_score, mutual_info_score

from prefaudit.errors import ConfigError
from prefaudit.features import cluster_stats as cs
from prefaudit.features import clusters as fc

N_BLOCKS, BLOCK = 4, 8
NOISE = range(32, 40)
TRIPLE = [40, 41, 42]
RARE, UBIQUITOUS = 43, 44


def planted(n_pairs: int = 600, *, lean: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pooled chosen, rejected (pairs × 45): four co-firing blocks of 8 (0–31), 8 independent
    features, a triple that co-fires only with itself, one rare and one ubiquitous feature.
    Block 0 is on in 25% + ``lean`` of chosen and 25% − ``lean`` of rejected responses."""
    rng = np.random.default_rng(seed)
    sides = []
    for sign in (1, -1):
        x = np.zeros((n_pairs, 45))
        for b in range(N_BLOCKS):
            p = 0.25 + (sign * lean if b == 0 else 0.0)
            on = rng.random(n_pairs) < p
            for f in range(b * BLOCK, (b + 1) * BLOCK):
                x[:, f] = on * (rng.random(n_pairs) < 0.85) * rng.exponential(size=n_pairs)
        for f in NOISE:
            x[:, f] = (rng.random(n_pairs) < 0.2) * rng.exponential(size=n_pairs)
        on = rng.random(n_pairs) < 0.1
        for f in TRIPLE:
            x[:, f] = on * (rng.random(n_pairs) < 0.9) * rng.exponential(size=n_pairs)
        x[:, UBIQUITOUS] = (rng.random(n_pairs) < 0.99) * rng.exponential(size=n_pairs)
        sides.append(x)
    sides[0][:, RARE] = 0.0
    sides[0][:4, RARE] = 1.0  # active in 4 of 1,200 responses: below min_active
    return sides[0], sides[1]


def truth() -> np.ndarray:
    return np.r_[np.repeat(np.arange(N_BLOCKS), BLOCK), np.full(45 - N_BLOCKS * BLOCK, -1)]


def test_planted_blocks_are_recovered_and_every_other_feature_has_a_reason():
    c, r = planted()
    res = fc.cofiring_clusters(sp.csr_matrix(c), sp.csr_matrix(r))
    t = truth()
    assert adjusted_rand_score(t[t >= 0], res.membership[t >= 0]) == pytest.approx(1.0)
    assert res.n_clusters == N_BLOCKS and res.ids == [f"cluster:{k}" for k in range(N_BLOCKS)]
    assert sorted(m.tolist() for m in res.members) == [list(range(b * 8, b * 8 + 8)) for b in range(4)]
    assert res.unclustered["rare"].tolist() == [RARE]
    assert res.unclustered["ubiquitous"].tolist() == [UBIQUITOUS]
    assert res.unclustered["no_edge"].tolist() == list(NOISE)
    assert res.unclustered["small_community"].tolist() == TRIPLE  # a community of 3 < min_size 4
    # Nothing dropped silently: clusters and reasons partition the features.
    flat = np.concatenate([*res.members, *res.unclustered.values()])
    assert sorted(flat.tolist()) == list(range(45))
    assert (res.membership[np.concatenate(list(res.unclustered.values()))] == -1).all()
    table = res.unclustered_table()
    assert table["feature"].tolist() == list(range(32, 45))
    assert table.set_index("feature").loc[RARE, "n_active"] == 4
    assert set(table["reason"]) == set(fc.REASONS)


def test_min_size_one_keeps_the_triple_as_a_cluster():
    res = fc.cofiring_clusters(*planted(), min_size=1)
    assert TRIPLE in [m.tolist() for m in res.members]
    assert len(res.unclustered["small_community"]) == 0


def test_clustering_is_deterministic_and_ordered_by_size_then_smallest_member():
    c, r = planted(seed=3)
    c[:, 8:16] *= np.random.default_rng(0).random(c.shape[0])[:, None] < 0.5  # block 1 fires less
    a = fc.cofiring_clusters(c, r)
    b = fc.cofiring_clusters(sp.csc_matrix(c), sp.coo_matrix(r))
    assert np.array_equal(a.membership, b.membership) and a.n_edges == b.n_edges
    assert [m.tolist() for m in a.members] == [m.tolist() for m in b.members]
    keys = [(-len(m), int(m[0])) for m in a.members]
    assert keys == sorted(keys)
    ta, tb = cs.cluster_table(c, r, a, n_boot=100).table, cs.cluster_table(c, r, b, n_boot=100).table
    assert ta.equals(tb)


def test_mutual_information_equals_sklearn_on_binary_vectors():
    rng = np.random.default_rng(1)
    x, y = rng.random(500) < 0.3, rng.random(500) < 0.5
    y[:100] |= x[:100]
    n11, a, b = (x & y).sum(), x.sum(), y.sum()
    assert fc.mutual_information(n11, a, b, 500) == pytest.approx(mutual_info_score(x, y), rel=1e-9)


def test_edges_link_only_features_that_co_fire_beyond_chance_and_the_papers_global_rule_adds_more():
    c, r = planted()
    active = fc.stacked_activity(c, r)
    u, v, w = fc.cofiring_edges(active[:, :40], k=3)
    assert (w > 0).all() and (u < v).all()
    assert set(u.tolist()) | set(v.tolist()) == set(range(32))  # noise features link to nothing
    assert (truth()[u] == truth()[v]).all()
    # Every block member keeps at least its 3 strongest partners; the union may hold more.
    assert (np.bincount(np.r_[u, v], minlength=32) >= 3).all()
    u2, _, _ = fc.cofiring_edges(active[:, :40], k=3, top_fraction=0.2)
    assert len(u2) > len(u)


def test_dense_and_sparse_products_give_the_same_edges(monkeypatch):
    c, r = planted(seed=2)
    active = fc.stacked_activity(c, r)
    monkeypatch.setattr(fc, "_DENSE_DENSITY", 0.0)
    dense = fc.cofiring_edges(active, k=4)
    monkeypatch.setattr(fc, "_DENSE_DENSITY", 2.0)
    monkeypatch.setattr(fc, "_BLOCK_ENTRIES", 500)  # many blocks
    sparse = fc.cofiring_edges(active, k=4)
    assert all(np.array_equal(x, y) for x, y in zip(dense, sparse, strict=True))
    assert len(dense[0]) > 0


def test_rows_above_max_rows_are_evenly_spaced():
    c, r = planted(n_pairs=300)
    active = fc.stacked_activity(c, r, max_rows=100)
    rows = np.unique(np.linspace(0, 599, 100).round().astype(int))
    assert active.shape == (100, 45)
    assert np.array_equal(active.toarray(), (np.vstack([c, r])[rows] > 0).astype(np.float32))
    assert fc.cofiring_clusters(c, r, max_rows=100).n_rows == 100


@pytest.mark.parametrize("options", [{"k": -1}, {"min_active": 0}, {"max_frac": 0}, {"edge_p": 0}, {"k": 0}])
def test_bad_options_are_refused(options):
    with pytest.raises(ConfigError):
        fc.cofiring_clusters(*planted(n_pairs=50), **options)


def _one_cluster(members: list[int], n_features: int) -> fc.CofiringClusters:
    membership = np.full(n_features, -1)
    membership[members] = 0
    return fc.CofiringClusters(
        membership,
        [np.array(members)],
        {r: np.zeros(0, np.int64) for r in fc.REASONS},
        np.zeros(n_features, np.int64),
        0,
        0,
    )


def test_scores_by_hand_on_five_pairs():
    chosen = np.array([[1.0, 0.0, 5.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [3.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    rejected = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 1.0]])
    clusters = _one_cluster([0, 1], 3)
    audit = cs.cluster_table(chosen, rejected, clusters, n_boot=0, controls=0, fire_quantile=0)
    # Fires (feature 0 or 1 > 0): chosen in pairs 0, 1, 3; rejected in pairs 1, 2.
    assert audit.fire_score()[:, 0].tolist() == [1, 0, -1, 1, 0]
    row = audit.table.iloc[0]
    assert (row.n_chosen_only, row.n_rejected_only, row.n_both, row.n_neither) == (2, 1, 1, 1)
    assert row.fire_score == pytest.approx(1 / 5)
    # π = 2/3 of the 3 discordant pairs; Clopper–Pearson, then scaled to the score.
    ci = stats.binomtest(2, 3).proportion_ci(method="exact")
    assert row.fire_ci_low == pytest.approx(3 / 5 * (2 * ci.low - 1))
    assert row.fire_ci_high == pytest.approx(3 / 5 * (2 * ci.high - 1))
    assert row.badge == "neither" and row.p_fire == pytest.approx(stats.binomtest(2, 3).pvalue)
    # Continuous: each member over its sd across the 10 responses, mean over the 2 members.
    sd = np.vstack([chosen, rejected]).std(axis=0, ddof=1)
    want_c, want_r = (chosen[:, :2] / sd[:2]).mean(axis=1), (rejected[:, :2] / sd[:2]).mean(axis=1)
    assert audit.chosen_scores.toarray()[:, 0] == pytest.approx(want_c)
    assert audit.rejected_scores.toarray()[:, 0] == pytest.approx(want_r)
    assert row.delta_mean == pytest.approx(np.mean(want_c - want_r))
    # The default rule: active in 5 of 10 responses, so the cluster fires only above its 90th
    # percentile — in chosen pair 3 alone (its largest score), not in rejected pair 2 (2/sd₀).
    q90 = np.quantile(np.r_[want_c, want_r], 0.9)
    default = cs.cluster_table(chosen, rejected, clusters, n_boot=0, controls=0)
    assert default.table.loc[0, "fire_threshold"] == pytest.approx(q90)
    assert default.fire_score()[:, 0].tolist() == [0, 0, 0, 1, 0]
    # Firing is read from the scores and leaves them as they were.
    assert default.chosen_scores.toarray()[:, 0] == pytest.approx(want_c)
    assert default.rejected_scores.toarray()[:, 0] == pytest.approx(want_r)
    assert default.table.loc[0, "d_z"] == pytest.approx(row.d_z)


def test_column_quantile_equals_numpy_with_the_zeros_included():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(101, 6)) * (rng.random((101, 6)) < [0.05, 0.3, 0.9, 1, 0, 0.5])
    for q in (0.0, 0.05, 0.5, 0.9, 1.0):
        assert cs.column_quantile(sp.csr_matrix(x), q) == pytest.approx(np.quantile(x, q, axis=0))


def test_badges_follow_the_rules():
    n = 200
    fire = np.zeros((n, 4))
    fire_r = np.zeros((n, 4))
    fire[:60, 0] = 1  # cluster 0: chosen only in 60 pairs, rejected only in 10
    fire_r[60:70, 0] = 1
    fire_r[:60, 1] = 1  # cluster 1: the mirror image
    fire[60:70, 1] = 1
    fire[:150, 2] = fire_r[:150, 2] = 1  # cluster 2: both sides in 150 pairs, 5 + 5 discordant
    fire[150:155, 2] = fire_r[155:160, 2] = 1
    fire[:10, 3] = fire_r[10:20, 3] = 1  # cluster 3: a little of everything
    out = cs.fire_statistics(sp.csr_matrix(fire), sp.csr_matrix(fire_r))
    assert out["badge"].tolist() == ["chosen", "rejected", "both", "neither"]
    assert out["fire_score"].tolist() == pytest.approx([0.25, -0.25, 0.0, 0.0])
    assert (out["fire_ci_low"] <= out["fire_score"]).all() and (
        out["fire_score"] <= out["fire_ci_high"]
    ).all()


def test_cluster_statistics_equal_scipy_on_the_cluster_score():
    c, r = planted(lean=0.15, seed=4)
    lengths = tuple(np.random.default_rng(2).integers(20, 200, size=600).astype(float) for _ in range(2))
    audit = cs.audit_clusters(c, r, lengths=lengths, n_boot=200)
    t = audit.table
    delta = (audit.chosen_scores - audit.rejected_scores).toarray()
    p = [stats.wilcoxon(delta[:, k]).pvalue for k in range(len(t))]
    assert t["p"].to_numpy() == pytest.approx(p, rel=1e-6)
    assert t["q"].to_numpy() == pytest.approx(stats.false_discovery_control(p), rel=1e-6)
    assert t["d_z"].to_numpy() == pytest.approx(delta.mean(axis=0) / delta.std(axis=0, ddof=1))
    fire = audit.fire_score()
    n_pos, n_neg = (fire > 0).sum(axis=0), (fire < 0).sum(axis=0)
    p_fire = [stats.binomtest(a, a + b).pvalue for a, b in zip(n_pos, n_neg, strict=True)]
    assert t["p_fire"].to_numpy() == pytest.approx(p_fire, rel=1e-6)
    assert list(t.columns) == list(cs.CLUSTER_COLUMNS)
    assert t["controlled_for"].map(len).tolist() == [min(5, len(t) - 1)] * len(t)
    # The planted lean: block 0's cluster leans to chosen on both scores, and only it.
    k = int(audit.membership[0])
    assert t.loc[k, "badge"] == "chosen" and t.loc[k, "q"] < 1e-6 and t.loc[k, "q_fire"] < 1e-6
    assert t.loc[k, "split_half"] and t.loc[k, "split_half_agree"] == 1.0
    assert (t.drop(index=k)["q"] >= 0.05).all()


def test_null_labels_swapped_at_random_find_no_significant_cluster():
    c, r = planted(lean=0.15, seed=5)
    clusters = fc.cofiring_clusters(c, r)
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(20):
        swap = rng.random(len(c)) < 0.5
        nc, nr = np.where(swap[:, None], r, c), np.where(swap[:, None], c, r)
        t = cs.cluster_table(nc, nr, clusters, n_boot=0, n_splits=0, controls=0).table
        hits += bool((t["q"] < 0.05).any() or (t["q_fire"] < 0.05).any())
    # BH at 0.05 under the global null: P(any discovery) ≤ 0.05 per test, so ≤ 2 of 20 runs
    # for each of the two tests is well within chance (expected ≤ 2 together).
    assert hits <= 4
