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
