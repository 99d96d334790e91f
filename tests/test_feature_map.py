"""The feature map: planted co-firing blocks come out as separated blobs, deterministically.

Thresholds fixed before the first run: silhouette of the planted blocks on the 2-D coordinates
> 0.5 and 5-nearest-neighbour purity > 0.9.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from prefaudit.errors import ConfigError
from prefaudit.features import feature_map as fm
from tests.test_feature_clusters import BLOCK, N_BLOCKS, planted

BLOCKS = np.arange(N_BLOCKS * BLOCK)
TRUTH = BLOCKS // BLOCK


@pytest.fixture(scope="module")
def pooled():
    return planted(600)


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_planted_blocks_are_separated_blobs(pooled, method):
    if method == "umap":
        pytest.importorskip("umap")
    m = fm.feature_map(*pooled, features=BLOCKS, method=method, seed=0)
    assert m.method == method and m.xy.shape == (len(BLOCKS), 2)
    assert np.abs(m.xy).max() == pytest.approx(1.0)
    assert silhouette_score(m.xy, TRUTH) > 0.5
    assert fm.neighbour_purity(m.xy, TRUTH, k=5) > 0.9
    again = fm.feature_map(*pooled, features=BLOCKS, method=method, seed=0)
    np.testing.assert_array_equal(m.xy, again.xy)


def test_a_shuffled_geometry_has_no_blobs(pooled):
    # The same map with features' co-firing vectors permuted across blocks at random: what the
    # purity is when the geometry carries no block structure.
    c, r = pooled
    rng = np.random.default_rng(0)
    shuffled = np.zeros_like(c[:, BLOCKS]), np.zeros_like(r[:, BLOCKS])
    for j in range(len(BLOCKS)):
        rows = rng.permutation(len(c))
        shuffled[0][:, j], shuffled[1][:, j] = c[rows, j], r[rows, j]
    m = fm.feature_map(*shuffled, method="tsne", seed=0)
    assert fm.neighbour_purity(m.xy, TRUTH, k=5) < 0.6


def test_auto_picks_umap_when_installed_else_tsne_and_pca_for_a_few(pooled, monkeypatch):
    monkeypatch.setattr(fm, "umap_available", lambda: False)
    assert fm.feature_map(*pooled, features=BLOCKS[:8], method="auto").method == "tsne"
    assert fm.feature_map(*pooled, features=BLOCKS[:4], method="auto").method == "pca"
    with pytest.raises(ConfigError, match="needs umap-learn"):
        fm.feature_map(*pooled, features=BLOCKS, method="umap")
    with pytest.raises(ConfigError, match="choose one of auto, umap, tsne, pca"):
        fm.embed_2d(np.zeros((6, 3)), method="mds")


def test_table_and_cluster_positions(pooled):
    m = fm.feature_map(*pooled, features=BLOCKS, method="pca")
    membership = np.full(45, -1)
    membership[BLOCKS] = TRUTH
    membership[0] = -1
    t = m.table(membership)
    assert list(t.columns) == ["feature", "x", "y", "cluster"] and t["feature"].tolist() == BLOCKS.tolist()
    pos = fm.cluster_positions(m, membership)
    assert pos["cluster"].tolist() == [0, 1, 2, 3] and pos["n_mapped"].tolist() == [7, 8, 8, 8]
    assert pos.loc[1, "x"] == pytest.approx(t.loc[t["cluster"] == 1, "x"].mean())


def test_default_features_are_the_active_ones(pooled):
    c, r = pooled
    c, r = c.copy(), r.copy()
    c[:, 5], r[:, 5] = 0, 0
    m = fm.feature_map(c, r, method="pca")
    assert 5 not in m.features.tolist() and len(m.features) == 44


def test_decoder_map_groups_parallel_directions():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 32))
    w = np.repeat(centres, 8, axis=0) + 0.1 * rng.normal(size=(32, 32))
    m = fm.decoder_map(w * rng.uniform(0.5, 2, size=(32, 1)), method="tsne")
    assert m.params["geometry"] == "decoder"
    assert fm.neighbour_purity(m.xy, np.repeat(np.arange(4), 8), k=5) > 0.9
