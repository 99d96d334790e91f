"""Read-only queries: per-pair values of one feature (drill-down, report, gallery) and what the audit cut.

Read-only; mixed into :class:`~prefaudit.audit.core.AuditCore`, which provides ``data``,
``matrix``, ``feature_id``, ``feature_ids``, ``backbone``, ``sae``, ``uses_sae``, ``encoded`` and ``config``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .. import ids
from ..errors import ConfigError


class QueriesMixin:
    """Values, top pairs and token activations of one feature; the audit's truncation report."""

    data: Any
    _ids_index: dict[str, int]
    _top_cache: tuple[Any, dict[tuple, np.ndarray]] | None = None  # (matrix, {(column, by, scope): rows})

    def column(self, feature: int | str) -> int:
        """Column of a feature in the pooled matrices (and row in ``results``)."""
        _ = self.feature_ids  # refreshes the index when features changed
        return self._ids_index[self.feature_id(feature)]

    def _column_values(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Dense (chosen, rejected) of column ``j``; an SAE latent is read from the encoded store
        while the full matrix is not built yet (a drill-down click at 260k pairs must not build it)."""
        enc = self.encoded if self.uses_sae else None
        if self._matrix is None and enc is not None and j < enc.d_sae:
            return enc.chosen.column(j), enc.rejected.column(j)
        return self.matrix.column(j)

    def values(self, feature: int | str) -> pd.DataFrame:
        """Per-pair pooled values of one feature: columns ``pair_id, chosen, rejected, delta``."""
        c, r = self._column_values(self.column(feature))
        return pd.DataFrame(
            {"pair_id": self.data.df["pair_id"].to_numpy(), "chosen": c, "rejected": r, "delta": c - r}
        )

    def top_pairs(
        self, feature: int | str, *, by: str = "delta", n: int = 10, offset: int = 0
    ) -> pd.DataFrame:
        """Pairs where the feature fires most: sorted by ``by`` ∈ {"delta", "chosen", "rejected", "abs_delta"}.

        Returns ``position`` (row in ``session.data.df``), ``pair_id``, pooled values and Δ, with
        the prompt and both responses. With a topic filter (``session.set_topic_filter``) only
        that topic's pairs are ranked.
        """
        if by not in ("delta", "chosen", "rejected", "abs_delta"):
            raise ConfigError(f"by={by!r}; choose delta, chosen, rejected or abs_delta.")
        c, r = self._column_values(self.column(feature))
        order = self._top_order(feature, by, c, r, offset + n)[offset : offset + n]
        pair_ids = self.data.df["pair_id"].to_numpy()[order]
        out = pd.DataFrame(
            {"position": order, "pair_id": pair_ids, "chosen": c[order], "rejected": r[order]}
        ).assign(delta=c[order] - r[order])
        df = self.data.df.iloc[order]
        out["prompt"] = df["prompt"].to_numpy()
        out["chosen_text"] = df["chosen"].to_numpy()
        out["rejected_text"] = df["rejected"].to_numpy()
        return out.reset_index(drop=True)

    def _top_order(self, feature: int | str, by: str, c: np.ndarray, r: np.ndarray, k: int) -> np.ndarray:
        """Rows of the first ``k`` (or more) pairs by ``by``, cached per feature, order and topic filter.

        The drill-down asks for one page at a time: ranking all pairs on every click would scale
        with the dataset, so the top of each ranking is kept until the pooled matrix changes.
        """
        rows = self.filtered_positions()  # every pair unless a topic filter is set (audit/pair_edits.py)
        scope = None if len(rows) == len(self.data) else hash(rows.tobytes())
        if self._top_cache is None or self._top_cache[0] is not self.matrix:
            self._top_cache = (self.matrix, {})
        key, cache = (self.column(feature), by, scope), self._top_cache[1]
        hit = cache.get(key)
        if hit is None or len(hit) < min(k, len(rows)):
            value = {"abs_delta": np.abs(c - r), "delta": c - r, "chosen": c, "rejected": r}[by]
            hit = cache[key] = rows[top_k_order(value[rows], max(2 * k, 200))]
        return hit

    def token_activations(self, position: int, feature: int | str) -> dict[str, tuple[list[str], np.ndarray]]:
        """Per-token activation of an SAE feature in both responses of the pair at ``position``.

        Returns ``{"chosen": (tokens, values), "rejected": (tokens, values)}``. Concepts have no
        token-level activation: for them the values are all zero.
        """
        fid = self.feature_id(feature)
        row = self.data.df.iloc[int(position)]
        sides = ("chosen", "rejected")
        if ids.is_sae(fid) and self.uses_sae:
            from ..features.encode import token_activations

            read = token_activations(
                self.backbone,
                self.sae,
                self.data.messages(int(position)),
                [row[s] for s in sides],
                [ids.sae_index(fid)],
            )
            return {side: (toks, vals[:, 0]) for side, (toks, vals) in zip(sides, read, strict=True)}
        out = {}
        for side in sides:
            words = row[side].split(" ")
            toks = [w + (" " if k < len(words) - 1 else "") for k, w in enumerate(words)]
            out[side] = (toks, np.zeros(len(toks)))
        return out

    def truncation(self) -> Any:
        """What the audit's token window cut, as a :class:`prefaudit.features.encoded.Truncation`.

        Prompts keep their last ``max_prompt_tokens`` tokens and responses their first
        ``max_response_tokens``; the report lists, by ``pair_id``, the prompts and the chosen and
        rejected responses that were cut, with the limits. A concepts-only audit tokenises nothing
        and an audit not encoded yet has not tokenised anything: their counts are ``None``.

        >>> session.truncation().sentence()    # doctest: +SKIP
        '12 of 560 prompts kept only their last 384 tokens; 3 chosen and 5 rejected responses were cut at 256 tokens'
        """
        from ..features.encoded import Truncation

        meta = self.encoded.meta if self.encoded is not None else {}
        limits = {k: int(meta.get(k, self.config[k])) for k in ("max_prompt_tokens", "max_response_tokens")}
        if self.encoded is None:
            note = (
                "concepts-only audit: nothing was tokenised, so nothing was cut"
                if not self.uses_sae
                else "not encoded yet: nothing has been tokenised (call encode())"
            )
            return Truncation(**limits, n_pairs=len(self.data), note=note)
        return Truncation.of(self.encoded, self.data.df["pair_id"].to_numpy(), **limits)

    def measured_sae_fit(self) -> Any:
        """The :meth:`sae_fit` already measured (the default ``n=128, seed=0`` first, else the
        latest), or ``None``; never reads the model (the repr and the report's summary use it)."""
        cache = getattr(self, "_sae_fit_cache", None) or {}
        return cache.get((128, 0)) or next(reversed(cache.values()), None)

    def computed_groups(self) -> pd.DataFrame | None:
        """``groups()`` when already computed for the current features, else ``None`` (never clusters)."""
        state = getattr(self, "_groups_cache", None)
        return state.table if state is not None and state.encoded is self.encoded else None

    def group_score_matrices(self) -> tuple[Any, Any]:
        """All groups' per-pair scores at once, ``(chosen, rejected)`` sparse ``(n_pairs, n_groups)``
        (column k = ``group:k``; :meth:`group_scores` gives one group as a table)."""
        state = self._group_state()
        return state.chosen, state.rejected

    def topic_assignment(self) -> np.ndarray:
        """The topic of every pair (row order) under the current topics: ``topics()``'s last settings, else its defaults."""
        from .topics import _DEFAULT_TOPICS

        return self._prompt_topics(self._topics_current or _DEFAULT_TOPICS).assignment


def top_k_order(key: np.ndarray, k: int) -> np.ndarray:
    """``np.argsort(-key, kind="stable")[:k]`` in O(n + k log k): largest first, ties by position.

    ``np.partition`` finds the k-th value; the values beyond it and the first of its ties make the k.
    """
    k = min(int(k), len(key))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k >= len(key) // 2 or np.isnan(key).any():  # NaN order or most rows wanted: the full sort
        return np.argsort(-key, kind="stable")[:k]
    neg = -key
    kth = np.partition(neg, k - 1)[k - 1]
    better = np.flatnonzero(neg < kth)
    cand = np.concatenate([better, np.flatnonzero(neg == kth)[: k - len(better)]])
    return cand[np.lexsort((cand, neg[cand]))]
