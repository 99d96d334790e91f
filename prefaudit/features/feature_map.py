"""A map of the features: 2-D coordinates where features that fire together sit together.

For the map view (features as points, coloured by cluster and effect, linked to the volcano and
the drill-down). Pure: matrices in, coordinates out.

Which geometry
--------------
The same the clusters use (:mod:`prefaudit.features.clusters`): **co-firing** over the stacked
chosen and rejected responses — a feature is the 0/1 vector of the responses it is active in
(``stacked_activity``, at most ``max_rows`` evenly spaced responses). Each vector is scaled to
unit length, so the dot product of two features is the Ochiai (cosine) coefficient of their
co-firing, and reduced to ``n_components`` (50) dimensions by a seeded truncated SVD (sklearn),
which keeps the main co-firing directions and makes the 2-D step cheap at 65,536 features.
:func:`decoder_map` maps the SAE's decoder directions instead (cosine), for an SAE whose weights
are at hand.

Which 2-D method
----------------
``method="auto"`` takes **UMAP** (``umap-learn``, metric cosine, 15 neighbours, min_dist 0.1,
``random_state=seed``: deterministic and single-threaded) where it is installed, else sklearn's
**t-SNE** (cosine, perplexity min(30, (n − 1)/3), PCA initialisation, seeded); "pca" is there for
a quick look and for fewer than 5 features. UMAP keeps more of the global layout than t-SNE and
scales to many points; its first call in a process compiles numba code (≈ 20 s on the 2-core
machine, then < 1 s for a few hundred points). Nothing downloads. Coordinates are centred and
scaled so that the largest |coordinate| is 1. :func:`feature_map` and :func:`decoder_map` run
with one BLAS/OpenMP thread (``threadpoolctl``), as the topics do: on the busy 2-core machine
t-SNE of 32 points took 12 s with the default threads and 0.3 s with one.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from prefaudit.errors import ConfigError

from .clusters import MAX_ROWS, stacked_activity

METHODS = ("auto", "umap", "tsne", "pca")
N_COMPONENTS = 50
N_NEIGHBORS = 15
MIN_DIST = 0.1


@dataclass(frozen=True)
class FeatureMap:
    """2-D positions of features.

    Attributes
    ----------
    features : numpy.ndarray[int64], shape (n,)
        The feature (column) of each point.
    xy : numpy.ndarray[float64], shape (n, 2)
        Its position; the largest |coordinate| is 1.
    method : str
        ``"umap"``, ``"tsne"`` or ``"pca"`` — what made it.
    params : dict
        The rest of the recipe (``seed``, ``geometry``, ``n_components``, …).
    """

    features: np.ndarray
    xy: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def table(self, membership: np.ndarray | None = None) -> pd.DataFrame:
        """``feature``, ``x``, ``y`` and, given the clusters' ``membership`` (−1: none), ``cluster``."""
        out = pd.DataFrame({"feature": self.features, "x": self.xy[:, 0], "y": self.xy[:, 1]})
        if membership is not None:
            out["cluster"] = np.asarray(membership, dtype=np.int64)[self.features]
        return out


def umap_available() -> bool:
    """Whether ``umap-learn`` is installed (it is optional)."""
    return importlib.util.find_spec("umap") is not None


def cofiring_profiles(
    chosen: Any,
    rejected: Any,
    features: np.ndarray | None = None,
    *,
    max_rows: int = MAX_ROWS,
    n_components: int = N_COMPONENTS,
    seed: int = 0,
) -> np.ndarray:
    """Each feature's unit-length co-firing vector reduced by truncated SVD: ``(n_features, ≤ n_components)``.

    A feature never active has the zero vector (it is placed by the 2-D method among the others;
    leave it out through ``features``).
    """
    active = stacked_activity(chosen, rejected, max_rows=max_rows)
    cols = np.arange(active.shape[1]) if features is None else np.asarray(features, dtype=np.int64)
    x = sp.csr_matrix(active[:, cols].T, dtype=np.float64)  # features × responses
    norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = sp.diags(np.where(norm > 0, 1.0 / np.maximum(norm, 1e-300), 0.0)) @ x
    return _reduce(sp.csr_matrix(x), n_components, seed)


def _reduce(x: Any, n_components: int, seed: int) -> np.ndarray:
    k = min(n_components, x.shape[0] - 1, x.shape[1] - 1)
    if k < 2:
        return x.toarray() if sp.issparse(x) else np.asarray(x, dtype=np.float64)
    from sklearn.decomposition import TruncatedSVD

    return TruncatedSVD(n_components=k, algorithm="randomized", random_state=seed).fit_transform(x)


def embed_2d(
    vectors: np.ndarray,
    *,
    method: str = "auto",
    seed: int = 0,
    n_neighbors: int = N_NEIGHBORS,
    min_dist: float = MIN_DIST,
) -> tuple[np.ndarray, str]:
    """2-D coordinates of the rows of ``vectors`` (cosine geometry) and the method that made them."""
    if method not in METHODS:
        raise ConfigError(f"method={method!r}; choose one of {', '.join(METHODS)}")
    v = np.asarray(vectors, dtype=np.float64)
    n = len(v)
    if method == "auto":
        method = "pca" if n < 5 else "umap" if umap_available() else "tsne"
    if method == "umap" and not umap_available():
        raise ConfigError("method='umap' needs umap-learn: pip install umap-learn")
    if n < 5 and method != "pca":
        raise ConfigError(f"{n} features: too few for {method}; use method='pca'")
    if method == "umap":
        import umap

        xy = umap.UMAP(
            n_components=2,
            n_neighbors=min(n_neighbors, n - 1),
            min_dist=min_dist,
            metric="cosine",
            random_state=seed,
            n_jobs=1,
        ).fit_transform(v)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        xy = TSNE(
            n_components=2, perplexity=min(30.0, (n - 1) / 3), metric="cosine", init="pca", random_state=seed
        ).fit_transform(v)
    else:
        xy = _pca_2d(v)
    return _normalise(np.asarray(xy, dtype=np.float64)), method


def _pca_2d(v: np.ndarray) -> np.ndarray:
    c = v - v.mean(axis=0)
    if len(c) < 2 or not np.any(c):
        return np.zeros((len(v), 2))
    u, s, _ = np.linalg.svd(c, full_matrices=False)
    xy = u[:, :2] * s[:2]
    # SVD's signs are arbitrary: fix them so the largest |loading| of each axis is positive.
    flip = np.sign(xy[np.abs(xy).argmax(axis=0), [0, 1][: xy.shape[1]]])
    xy = xy * np.where(flip == 0, 1, flip)
    return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))


def _normalise(xy: np.ndarray) -> np.ndarray:
    xy = xy - xy.mean(axis=0)
    m = np.abs(xy).max()
    return xy / m if m > 0 else xy


def feature_map(
    chosen: Any,
    rejected: Any,
    *,
    features: np.ndarray | None = None,
    method: str = "auto",
    seed: int = 0,
    max_rows: int = MAX_ROWS,
    n_components: int = N_COMPONENTS,
    n_neighbors: int = N_NEIGHBORS,
    min_dist: float = MIN_DIST,
) -> FeatureMap:
    """The co-firing map of ``features`` (default: every feature active in some response).

    ``chosen`` / ``rejected`` are the pooled matrices (pairs × features), as for
    :func:`~prefaudit.features.clusters.cofiring_clusters`; the session passes the clustered
    features (or the significant ones) as ``features``.
    """
    if features is None:
        active = stacked_activity(chosen, rejected, max_rows=max_rows)
        features = np.flatnonzero(np.diff(active.tocsc().indptr) > 0)
    feats = np.asarray(features, dtype=np.int64)
    with threadpool_limits(limits=1):
        vec = cofiring_profiles(
            chosen, rejected, feats, max_rows=max_rows, n_components=n_components, seed=seed
        )
        xy, used = embed_2d(vec, method=method, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist)
    params = dict(geometry="cofiring", seed=seed, max_rows=max_rows, n_components=n_components)
    if used == "umap":
        params.update(n_neighbors=n_neighbors, min_dist=min_dist)
    return FeatureMap(feats, xy, used, params)


def decoder_map(
    w_dec: Any, *, features: np.ndarray | None = None, method: str = "auto", seed: int = 0
) -> FeatureMap:
    """The map of the SAE's decoder directions (``w_dec``: features × d_model), by cosine."""
    w = np.asarray(w_dec, dtype=np.float64)
    feats = np.arange(len(w)) if features is None else np.asarray(features, dtype=np.int64)
    v = w[feats]
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)
    with threadpool_limits(limits=1):
        xy, used = embed_2d(_reduce(v, N_COMPONENTS, seed), method=method, seed=seed)
    return FeatureMap(feats, xy, used, dict(geometry="decoder", seed=seed))


def cluster_positions(fmap: FeatureMap, membership: np.ndarray) -> pd.DataFrame:
    """One row per cluster with mapped members: ``cluster`` (index), ``x``, ``y`` (members' mean), ``n_mapped``."""
    t = fmap.table(membership)
    t = t[t["cluster"] >= 0]
    g = t.groupby("cluster", sort=True)
    return pd.DataFrame(
        {"x": g["x"].mean(), "y": g["y"].mean(), "n_mapped": g.size().astype(np.int64)}
    ).reset_index()


def neighbour_purity(xy: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Share of each point's ``k`` nearest neighbours (2-D, Euclidean) with its label, averaged."""
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy)
    return float((labels[idx[:, 1:]] == labels[:, None]).mean())
