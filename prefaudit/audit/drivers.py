"""The pairs that drive a feature's learning signal, and the signal without them.

Mixed into :class:`~prefaudit.audit.core.AuditCore`, which provides ``data``, ``matrix``,
``feature_id``, ``feature_ids``, ``column`` and ``predict``.

The predicted learning signal of feature f (:mod:`prefaudit.shaping`) is the gradient-weighted
mean of its Δ, ``S = Σᵢ gᵢΔᵢ / Σᵢ gᵢ`` with ``gᵢ = σ(mᵢ)`` the DPO gradient weight of pair i at
initialisation under the current weights (vanilla: every gᵢ = ½, and S is the mean Δ). Pair i's
**share** of the signal is ``gᵢΔᵢ / Σⱼ gⱼΔⱼ``: the shares sum to 1, a negative share pulls
against the signal, and a few pairs with most of the share mean that a handful of examples,
not the data set, teach the feature.

Pair edits (:mod:`prefaudit.audit.pair_edits`: ``exclude_pairs``, ``flip_pairs``) are honoured: an
excluded pair has gᵢ = 0 (share 0), a flipped one teaches −Δᵢ, with the margin of its swapped sides.

Example
-------
>>> d = session.drivers("concept:length")             # doctest: +SKIP
>>> d.head(3)[["pair_id", "delta", "share", "cumulative_share"]]   # doctest: +SKIP
>>> d.attrs["signal"], d.attrs["signal_without_top_k"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from .. import ids
from ..errors import ConfigError
from ..shaping import gradient_weights
from .pair_edits import PairEditsMixin


class DriversMixin(PairEditsMixin):
    """Per-pair shares of a feature's predicted learning signal (and the pair edits that act on them)."""

    data: Any
    _ids_index: dict[str, int]

    def drivers(
        self,
        feature: int | str,
        *,
        weights: dict[int | str, float] | None = None,
        top_k: int = 10,
    ) -> pd.DataFrame:
        """Every pair ranked by its share of ``feature``'s predicted learning signal.

        Columns: ``position`` (row in ``session.data.df``), ``pair_id``, ``delta`` (Δ of the
        feature, as labelled), ``gradient_weight`` (σ(m) at ``weights``, default
        ``session.weights``; 0 for an excluded pair; ``session.pair_edits`` says which), ``share``
        (gᵢsᵢΔᵢ / Σⱼ gⱼsⱼΔⱼ, sᵢ = −1 for a flipped pair; NaN when that sum is 0) and
        ``cumulative_share``. Sorted by |σ(mᵢ)Δᵢ| as labelled (before any pair edit: without
        edits that is |share|), ties in pair order, so editing a driver does not move it.

        ``attrs``: ``feature``, ``signal`` (Σ gΔ / Σ g, raw units: ``predict``'s
        ``signal_after``), ``signal_z`` (÷ sd(Δ) over all pairs), ``top_k``,
        ``signal_without_top_k`` (:meth:`signal_without` the first ``top_k`` rows) and its
        ``_z``. ``feature`` may be an ``sae:`` or ``concept:`` id, or a ``group:`` id when the
        session has concept groups.
        """
        fid, delta = self._signal_delta(feature)
        g = self._gradient_weights(weights)
        signs = self.pair_edit_signs()
        contribution = g * signs * delta
        total = float(contribution.sum())
        as_labelled = (
            contribution if not self.pair_edits else gradient_weights(self._unedited_margins(weights)) * delta
        )
        order = np.argsort(-np.abs(as_labelled), kind="stable")
        with np.errstate(invalid="ignore", divide="ignore"):
            share = contribution / total if total != 0 else np.full(delta.size, np.nan)
        out = pd.DataFrame(
            {
                "position": order,
                "pair_id": self.data.df["pair_id"].to_numpy()[order],
                "delta": delta[order],
                "gradient_weight": g[order],
                "share": share[order],
                "cumulative_share": np.cumsum(share[order]),
            }
        )
        k = int(min(max(int(top_k), 0), max(delta.size - 1, 0)))
        sd = float(np.std(delta, ddof=1)) if delta.size > 1 else 0.0
        signal = float(total / g.sum()) if g.sum() > 0 else float("nan")
        without = _weighted_mean(signs * delta, g, np.delete(np.arange(delta.size), order[:k]))
        out.attrs.update(
            feature=fid,
            signal=signal,
            signal_z=signal / sd if sd > 0 else 0.0,
            top_k=k,
            signal_without_top_k=without,
            signal_without_top_k_z=without / sd if sd > 0 else 0.0,
        )
        return out

    def signal_without(
        self,
        feature: int | str,
        pair_ids: Iterable[Any],
        *,
        weights: dict[int | str, float] | None = None,
    ) -> float:
        """The predicted signal Σ gΔ / Σ g of ``feature`` (raw units) over all pairs but ``pair_ids``.

        Each remaining pair keeps its gradient weight: a pair's margin is its own Δ over the
        margin scale, and the scale (the unit of a weight, fixed by the audit's data) is not
        refitted without the removed pairs. ``pair_ids`` are values of ``data.df["pair_id"]``.
        """
        _, delta = self._signal_delta(feature)
        g = self._gradient_weights(weights)
        delta = self.pair_edit_signs() * delta  # a flipped pair teaches −Δ (an excluded one has g = 0)
        index = pd.Index(self.data.df["pair_id"])
        wanted = list(pair_ids)
        where = index.get_indexer(wanted) if wanted else np.empty(0, dtype=int)
        if (where < 0).any():
            missing = [p for p, w in zip(wanted, where, strict=True) if w < 0][:5]
            raise ConfigError(f"Unknown pair_id(s) {missing}: pass values of session.data.df['pair_id'].")
        keep = np.setdiff1d(np.arange(delta.size), where)
        if keep.size == 0:
            raise ConfigError("Removing these pairs leaves none: the signal is undefined.")
        return _weighted_mean(delta, g, keep)

    # ------------------------------------------------------------------ helpers
    def _gradient_weights(self, weights: dict[int | str, float] | None) -> np.ndarray:
        # predict() turns weights into margins exactly as shaping and training do; asking it for
        # no feature's row costs only the margins.
        return np.asarray(self.predict(weights, features=[]).attrs["gradient_weight"], dtype=np.float64)

    def _signal_delta(self, feature: int | str) -> tuple[str, np.ndarray]:
        """The id and per-pair Δ of an ``sae:``/``concept:`` feature or a ``group:`` id."""
        is_group = getattr(ids, "is_group", None)
        if isinstance(feature, str) and callable(is_group) and is_group(feature):
            _ = self.feature_ids
            if feature in self._ids_index:  # groups that live in the matrix
                c, r = self.matrix.column(self._ids_index[feature])
                return feature, np.asarray(c - r, dtype=np.float64)
            scores = getattr(self, "group_scores", None)
            if not callable(scores):
                raise ConfigError(f"{feature!r} is a group id, but this session has no concept groups.")
            return feature, _delta_of(scores(feature), len(self.data))
        fid = self.feature_id(feature)
        c, r = self.matrix.column(self.column(fid))
        return fid, np.asarray(c - r, dtype=np.float64)


def _weighted_mean(delta: np.ndarray, g: np.ndarray, keep: np.ndarray) -> float:
    total = g[keep].sum()
    return float(g[keep] @ delta[keep] / total) if total > 0 else float("nan")


def _delta_of(scores: Any, n: int) -> np.ndarray:
    """Δ from what ``group_scores`` returns: a table with ``delta`` or ``chosen``/``rejected``, a pair, or Δ."""
    if isinstance(scores, pd.DataFrame):
        if "delta" in scores.columns:
            delta = scores["delta"].to_numpy()
        else:
            delta = scores["chosen"].to_numpy() - scores["rejected"].to_numpy()
    elif isinstance(scores, tuple) and len(scores) == 2:
        delta = np.asarray(scores[0], dtype=np.float64) - np.asarray(scores[1], dtype=np.float64)
    else:
        delta = np.asarray(scores, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64).ravel()
    if delta.size != n:
        raise ConfigError(f"group scores have {delta.size} values for {n} pairs.")
    return delta
