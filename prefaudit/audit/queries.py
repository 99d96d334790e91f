"""Per-pair queries: what the drill-down, the report and the gallery ask of one feature.

Read-only; mixed into :class:`~prefaudit.audit.core.AuditCore`, which provides ``data``,
``matrix``, ``feature_id``, ``feature_ids``, ``backbone``, ``sae`` and ``uses_sae``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .. import ids
from ..errors import ConfigError


class QueriesMixin:
    """Values, top pairs and token activations of one feature."""

    data: Any
    _ids_index: dict[str, int]

    def column(self, feature: int | str) -> int:
        """Column of a feature in the pooled matrices (and row in ``results``)."""
        _ = self.feature_ids  # refreshes the index when features changed
        return self._ids_index[self.feature_id(feature)]

    def values(self, feature: int | str) -> pd.DataFrame:
        """Per-pair pooled values of one feature: columns ``pair_id, chosen, rejected, delta``."""
        c, r = self.matrix.column(self.column(feature))
        return pd.DataFrame(
            {"pair_id": self.data.df["pair_id"].to_numpy(), "chosen": c, "rejected": r, "delta": c - r}
        )

    def top_pairs(
        self, feature: int | str, *, by: str = "delta", n: int = 10, offset: int = 0
    ) -> pd.DataFrame:
        """Pairs where the feature fires most: sorted by ``by`` ∈ {"delta", "chosen", "rejected", "abs_delta"}.

        Returns ``position`` (row in ``session.data.df``), ``pair_id``, pooled values and Δ, with
        the prompt and both responses.
        """
        if by not in ("delta", "chosen", "rejected", "abs_delta"):
            raise ConfigError(f"by={by!r}; choose delta, chosen, rejected or abs_delta.")
        vals = self.values(feature)
        key = vals["delta"].abs() if by == "abs_delta" else vals[by]
        order = np.argsort(-key.to_numpy(), kind="stable")[offset : offset + n]
        out = vals.iloc[order].copy()
        out.insert(0, "position", order)
        df = self.data.df.iloc[order]
        out["prompt"] = df["prompt"].to_numpy()
        out["chosen_text"] = df["chosen"].to_numpy()
        out["rejected_text"] = df["rejected"].to_numpy()
        return out.reset_index(drop=True)

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
