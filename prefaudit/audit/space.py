"""``FeatureSpace``: the audit's features — their ids and columns, pooled values, and per-pair reads.

A part owned by :class:`~prefaudit.audit.core.AuditCore` (``session.space``). It holds what is
derived from the pooled features: the id ↔ column index, each text concept's values, the
:class:`~prefaudit.features.matrix.FeatureMatrix` (Δ, sd and margin scale cached on it) and the
drill-down's rankings. All of it lives in :class:`~prefaudit.audit.versions.Memo` caches that
empty themselves when the data or the features change.

Example
-------
>>> session.space.feature_id(17)                 # doctest: +SKIP
'sae:17'
>>> session.space.top_pairs("concept:length", n=3)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import ids
from ..errors import ConfigError
from ..features.concepts import DirectionConcept, concept_values
from ..features.matrix import FeatureMatrix
from . import ranking
from .versions import Memo

if TYPE_CHECKING:
    from .core import AuditCore

#: What :meth:`FeatureSpace.top_pairs` may rank by.
RANK_BY = ("delta", "chosen", "rejected", "abs_delta")


class FeatureSpace:
    """Feature ids, pooled values and the per-pair queries of one audit."""

    def __init__(self, core: AuditCore) -> None:
        self.core = core
        self._index = Memo(core.versions, "features")  # "ids" -> (ids, {id: column})
        self._concepts = Memo(core.versions, "data", "features")  # concept name -> (chosen, rejected)
        self._matrix = Memo(core.versions, "data", "features")  # "matrix" -> FeatureMatrix
        self._rankings = Memo(core.versions, "data", "features", "topics")  # (column, by, scope) -> rows

    # ------------------------------------------------------------------ ids
    def _ids(self) -> tuple[list[str], dict[str, int]]:
        def build() -> tuple[list[str], dict[str, int]]:
            core = self.core
            d_sae = core.encoded.d_sae if core.encoded is not None else 0
            fids = [ids.sae_id(i) for i in range(d_sae)] + [ids.concept_id(c.name) for c in core.concepts]
            return fids, {f: j for j, f in enumerate(fids)}

        return self._index.get("ids", build)

    @property
    def feature_ids(self) -> list[str]:
        """All feature ids in table order: SAE features, then concepts."""
        return self._ids()[0]

    def feature_id(self, feature: int | str) -> str:
        """Normalise ``17``, ``"17"``, ``"sae:17"``, ``"length"`` or ``"concept:length"`` to an id that exists."""
        core = self.core
        fid = ids.normalize(feature)
        kind, value = ids.parse(fid)
        if kind == "concept":
            if value not in {c.name for c in core.concepts}:
                names = ", ".join(c.name for c in core.concepts)
                raise ConfigError(f"Unknown concept {fid!r}. Known concepts: {names}.")
        else:
            d_sae = (
                core.encoded.d_sae if core.encoded is not None else (core.sae.d_sae if core.uses_sae else 0)
            )
            if not 0 <= int(value) < d_sae:
                raise ConfigError(f"Unknown SAE feature {fid!r}: the SAE has features 0..{d_sae - 1}.")
        return fid

    def decision_id(self, feature: int | str) -> str:
        """A feature id (:meth:`feature_id`) or the id of a group that exists (``group:<k>``): what decisions name."""
        if isinstance(feature, str) and ids.is_group(feature):
            return ids.group_id(self.core.groups.index(feature))
        return self.feature_id(feature)

    def column(self, feature: int | str) -> int:
        """Column of a feature in the pooled matrices (and row in ``results``)."""
        return self._ids()[1][self.feature_id(feature)]

    def columns(self, fids: list[str]) -> np.ndarray:
        """Columns of feature ids already normalised (no checks: the shaping preview's hot path)."""
        index = self._ids()[1]
        return np.array([index[f] for f in fids], dtype=int)

    # ------------------------------------------------------------------ values
    def concept_values(self) -> tuple[np.ndarray, np.ndarray]:
        """Concept values ``(n_pairs, n_concepts)`` for chosen and rejected, in ``core.concepts`` order."""
        core = self.core
        n = len(core.data)
        chosen = np.zeros((n, len(core.concepts)))
        rejected = np.zeros((n, len(core.concepts)))
        for j, concept in enumerate(core.concepts):
            chosen[:, j], rejected[:, j] = self._concepts.get(concept.name, lambda c=concept: self._read(c))
        return chosen, rejected

    def _read(self, concept: Any) -> tuple[np.ndarray, np.ndarray]:
        core = self.core
        mean_act: tuple[Any, Any] = (None, None)
        if isinstance(concept, DirectionConcept):
            if core.encoded is None:
                core.encode()
            mean_act = (core.encoded.chosen.mean_act, core.encoded.rejected.mean_act)
        c, r = (
            concept_values(concept, core.data.df[side].tolist(), act)
            for side, act in zip(("chosen", "rejected"), mean_act, strict=True)
        )
        return c, r

    def restore_concept_values(self, values: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Put back saved concept values (a restore: the texts are not read again)."""
        for name, (c, r) in values.items():
            self._concepts.put(name, (np.asarray(c), np.asarray(r)))

    @property
    def matrix(self) -> FeatureMatrix:
        """Pooled values of every feature (encodes first if needed); Δ and sd cached on it."""

        def build() -> FeatureMatrix:
            core = self.core
            c_con, r_con = self.concept_values()
            if core.uses_sae and core.encoded is None:
                core.encode()
            return FeatureMatrix.from_parts(core.encoded if core.uses_sae else None, c_con, r_con)

        return self._matrix.get("matrix", build)

    @property
    def matrix_built(self) -> bool:
        """Whether the pooled matrix exists (a drill-down click at 260k pairs must not build it)."""
        return self._matrix.peek("matrix") is not None

    def delta(self) -> sp.csc_matrix:
        """Δ = chosen − rejected, ``(n_pairs, n_features)`` CSC, columns in ``feature_ids`` order."""
        return self.matrix.delta

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Response lengths for the length control: tokens when encoded, else words.

        Tokens are those of the **whole** response, before the cut at ``max_response_tokens``
        (a cut response is longer than what was read; :meth:`truncation` says which).
        """
        core = self.core
        if core.encoded is not None:
            return core.encoded.full_lengths()
        words = [
            np.array([len(s.split()) for s in core.data.df[side]], dtype=np.float64)
            for side in ("chosen", "rejected")
        ]
        return words[0], words[1]

    def column_values(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Dense (chosen, rejected) of column ``j``; an SAE latent is read from the encoded store
        while the full matrix is not built yet."""
        enc = self.core.encoded if self.core.uses_sae else None
        if not self.matrix_built and enc is not None and j < enc.d_sae:
            return enc.chosen.column(j), enc.rejected.column(j)
        return self.matrix.column(j)

    def values(self, feature: int | str) -> pd.DataFrame:
        """Per-pair pooled values of one feature: columns ``pair_id, chosen, rejected, delta``."""
        c, r = self.column_values(self.column(feature))
        return pd.DataFrame(
            {"pair_id": self.core.data.df["pair_id"].to_numpy(), "chosen": c, "rejected": r, "delta": c - r}
        )

    # ------------------------------------------------------------------ drill-down
    def top_pairs(
        self, feature: int | str, *, by: str = "delta", n: int = 10, offset: int = 0
    ) -> pd.DataFrame:
        """Pairs where the feature fires most: sorted by ``by`` ∈ {"delta", "chosen", "rejected", "abs_delta"}.

        Returns ``position`` (row in ``session.data.df``), ``pair_id``, pooled values and Δ, with
        the prompt and both responses. With a topic filter (``session.topics.set_filter``)
        only that topic's pairs are ranked.
        """
        if by not in RANK_BY:
            raise ConfigError(f"by={by!r}; choose delta, chosen, rejected or abs_delta.")
        j = self.column(feature)
        c, r = self.column_values(j)
        order = self._top_order(j, by, c, r, offset + n)[offset : offset + n]
        df = self.core.data.df
        out = pd.DataFrame(
            {
                "position": order,
                "pair_id": df["pair_id"].to_numpy()[order],
                "chosen": c[order],
                "rejected": r[order],
            }
        ).assign(delta=c[order] - r[order])
        rows = df.iloc[order]
        out["prompt"] = rows["prompt"].to_numpy()
        out["chosen_text"] = rows["chosen"].to_numpy()
        out["rejected_text"] = rows["rejected"].to_numpy()
        return out.reset_index(drop=True)

    def _top_order(self, j: int, by: str, c: np.ndarray, r: np.ndarray, k: int) -> np.ndarray:
        """Rows of the first ``k`` (or more) pairs by ``by``, cached per column, order and topic filter.

        The drill-down asks for one page at a time: ranking all pairs on every click would scale
        with the dataset, so the top of each ranking is kept until the features change.
        """
        rows = self.core.topics.filtered_positions()
        scope = None if len(rows) == len(self.core.data) else hash(rows.tobytes())
        key = (j, by, scope)
        hit = self._rankings.peek(key)
        if hit is None or len(hit) < min(k, len(rows)):
            value = {"abs_delta": np.abs(c - r), "delta": c - r, "chosen": c, "rejected": r}[by]
            hit = rows[ranking.top_k_order(value[rows], max(2 * k, 200))]
            self._rankings.put(key, hit)
        return hit

    def token_activations(self, position: int, feature: int | str) -> dict[str, tuple[list[str], np.ndarray]]:
        """Per-token activation of an SAE feature in both responses of the pair at ``position``.

        Returns ``{"chosen": (tokens, values), "rejected": (tokens, values)}``. Concepts have no
        token-level activation: for them the values are all zero.
        """
        core = self.core
        fid = self.feature_id(feature)
        row = core.data.df.iloc[int(position)]
        sides = ("chosen", "rejected")
        if ids.is_sae(fid) and core.uses_sae:
            from ..features.encode import token_activations

            read = token_activations(
                core.backbone,
                core.sae,
                core.data.messages(int(position)),
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

        core = self.core
        meta = core.encoded.meta if core.encoded is not None else {}
        limits = {k: int(meta.get(k, core.config[k])) for k in ("max_prompt_tokens", "max_response_tokens")}
        if core.encoded is None:
            note = (
                "concepts-only audit: nothing was tokenised, so nothing was cut"
                if not core.uses_sae
                else "not encoded yet: nothing has been tokenised (call encode())"
            )
            return Truncation(**limits, n_pairs=len(core.data), note=note)
        return Truncation.of(core.encoded, core.data.df["pair_id"].to_numpy(), **limits)
