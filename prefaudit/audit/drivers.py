"""The pairs that drive a feature's learning signal, and the signal without them.

A part owned by :class:`~prefaudit.audit.core.AuditCore` (``session.drivers``); margins and
Δ come from the shaping part (:mod:`prefaudit.audit.shaping`).

The predicted learning signal of feature f (:mod:`prefaudit.shaping`) is the gradient-weighted
mean of its Δ, ``S = Σᵢ gᵢΔᵢ / Σᵢ gᵢ`` with ``gᵢ = σ(mᵢ)`` the DPO gradient weight of pair i at
initialisation under the current weights (vanilla: every gᵢ = ½, and S is the mean Δ). Pair i's
**share** of the signal is ``gᵢΔᵢ / Σⱼ gⱼΔⱼ``: the shares sum to 1, a negative share pulls
against the signal, and a few pairs with most of the share mean that a handful of examples,
not the data set, teach the feature.

Pair edits (:mod:`prefaudit.audit.pair_edits`: ``session.exclude_pairs``, ``session.flip_pairs``) are honoured: an
excluded pair has gᵢ = 0 (share 0), a flipped one teaches −Δᵢ, with the margin of its swapped sides.

Example
-------
>>> d = session.drivers("concept:length")             # doctest: +SKIP
>>> d.head(3)[["pair_id", "delta", "share", "cumulative_share"]]   # doctest: +SKIP
>>> d.attrs["signal"], d.attrs["signal_without_top_k"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..shaping import gradient_weights

if TYPE_CHECKING:
    from .core import AuditCore


class Drivers:
    """Per-pair shares of a feature's predicted learning signal (``session.drivers``; call it)."""

    def __init__(self, core: AuditCore) -> None:
        self.core = core

    def __call__(
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

        ``attrs``: ``feature``, ``signal`` (Σ gΔ / Σ g, raw units: the preview's
        ``signal_after``), ``signal_z`` (÷ sd(Δ) over all pairs), ``top_k``,
        ``signal_without_top_k`` (:meth:`signal_without` the first ``top_k`` rows) and its
        ``_z``. ``feature`` may be an ``sae:`` or ``concept:`` id, or a ``group:`` id.
        """
        core, shaping = self.core, self.core.shaping
        fid, delta = shaping.delta_of(feature)
        g = shaping.gradient_weights(weights)
        signs = core.edits.signs()
        contribution = g * signs * delta
        total = float(contribution.sum())
        as_labelled = (
            contribution
            if not core.pair_edits
            else gradient_weights(shaping.unedited_margins(weights)) * delta
        )
        order = np.argsort(-np.abs(as_labelled), kind="stable")
        with np.errstate(invalid="ignore", divide="ignore"):
            share = contribution / total if total != 0 else np.full(delta.size, np.nan)
        out = pd.DataFrame(
            {
                "position": order,
                "pair_id": core.data.df["pair_id"].to_numpy()[order],
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
        core, shaping = self.core, self.core.shaping
        _, delta = shaping.delta_of(feature)
        g = shaping.gradient_weights(weights)
        delta = core.edits.signs() * delta  # a flipped pair teaches −Δ (an excluded one has g = 0)
        index = pd.Index(core.data.df["pair_id"])
        wanted = list(pair_ids)
        where = index.get_indexer(wanted) if wanted else np.empty(0, dtype=int)
        if (where < 0).any():
            missing = [p for p, w in zip(wanted, where, strict=True) if w < 0][:5]
            raise ConfigError(f"Unknown pair_id(s) {missing}: pass values of session.data.df['pair_id'].")
        keep = np.setdiff1d(np.arange(delta.size), where)
        if keep.size == 0:
            raise ConfigError("Removing these pairs leaves none: the signal is undefined.")
        return _weighted_mean(delta, g, keep)


def _weighted_mean(delta: np.ndarray, g: np.ndarray, keep: np.ndarray) -> float:
    total = g[keep].sum()
    return float(g[keep] @ delta[keep] / total) if total > 0 else float("nan")
