"""Pooled SAE activations of a preference dataset: the input of the statistics.

Everything is stored sparse (SAE codes are sparse). For each non-zero pooled value we keep the
token that attained the maximum activation and its position in the response, which is enough to
label features by their top tokens and to show a context snippet without re-running the model.

Saved as ``.npz`` of plain arrays (no pickle); :meth:`EncodedFeatures.load` refuses pickles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

SIDES = ("chosen", "rejected")


@dataclass
class SidePooled:
    """Pooled activations of one side (chosen or rejected) of every pair.

    Attributes
    ----------
    values : scipy.sparse.csr_matrix, shape (n_pairs, d_sae), float32
    top_token : numpy.ndarray[int32], aligned with ``values.data``
        Id of the token with the largest activation of that feature in that response.
    top_pos : numpy.ndarray[int32], aligned with ``values.data``
        Its position in the response (0-based token index).
    mean_act : numpy.ndarray, shape (n_pairs, d_model), float32
        Mean layer activation over the response tokens (for direction concepts).
    n_tokens : numpy.ndarray[int32], shape (n_pairs,)
    truncated : numpy.ndarray[bool], shape (n_pairs,)
    """

    values: sp.csr_matrix
    top_token: np.ndarray
    top_pos: np.ndarray
    mean_act: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        v = self.values
        return {
            f"{prefix}_data": v.data.astype(np.float32),
            f"{prefix}_indices": v.indices.astype(np.int32),
            f"{prefix}_indptr": v.indptr.astype(np.int64),
            f"{prefix}_shape": np.asarray(v.shape, dtype=np.int64),
            f"{prefix}_top_token": self.top_token.astype(np.int32),
            f"{prefix}_top_pos": self.top_pos.astype(np.int32),
            f"{prefix}_mean_act": self.mean_act.astype(np.float32),
            f"{prefix}_n_tokens": self.n_tokens.astype(np.int32),
            f"{prefix}_truncated": self.truncated.astype(bool),
        }

    @classmethod
    def from_arrays(cls, arrays: Any, prefix: str) -> SidePooled:
        shape = tuple(int(x) for x in arrays[f"{prefix}_shape"])
        values = sp.csr_matrix(
            (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]), shape=shape
        )
        return cls(
            values=values,
            top_token=np.asarray(arrays[f"{prefix}_top_token"]),
            top_pos=np.asarray(arrays[f"{prefix}_top_pos"]),
            mean_act=np.asarray(arrays[f"{prefix}_mean_act"]),
            n_tokens=np.asarray(arrays[f"{prefix}_n_tokens"]),
            truncated=np.asarray(arrays[f"{prefix}_truncated"]),
        )

    @classmethod
    def concat(cls, parts: list[SidePooled]) -> SidePooled:
        return cls(
            values=sp.vstack([p.values for p in parts], format="csr"),
            top_token=np.concatenate([p.top_token for p in parts]),
            top_pos=np.concatenate([p.top_pos for p in parts]),
            mean_act=np.concatenate([p.mean_act for p in parts]),
            n_tokens=np.concatenate([p.n_tokens for p in parts]),
            truncated=np.concatenate([p.truncated for p in parts]),
        )


@dataclass
class EncodedFeatures:
    """Pooled SAE features of both sides of every pair, in the order of ``pairs.df``."""

    chosen: SidePooled
    rejected: SidePooled
    pooling: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_pairs(self) -> int:
        return int(self.chosen.values.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.chosen.values.shape[1])

    def side(self, name: str) -> SidePooled:
        return self.chosen if name == "chosen" else self.rejected

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Response lengths in tokens (after truncation), the regressor of the length control."""
        return self.chosen.n_tokens.astype(np.float64), self.rejected.n_tokens.astype(np.float64)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {**self.chosen.to_arrays("chosen"), **self.rejected.to_arrays("rejected")}
        out["pooling"] = np.asarray(self.pooling)
        return out

    def save(self, path: str | Path) -> None:
        np.savez(Path(path), **self.to_arrays())

    @classmethod
    def from_arrays(cls, arrays: Any, meta: dict[str, Any] | None = None) -> EncodedFeatures:
        return cls(
            chosen=SidePooled.from_arrays(arrays, "chosen"),
            rejected=SidePooled.from_arrays(arrays, "rejected"),
            pooling=str(arrays["pooling"]),
            meta=dict(meta or {}),
        )

    @classmethod
    def load(cls, path: str | Path, meta: dict[str, Any] | None = None) -> EncodedFeatures:
        with np.load(Path(path), allow_pickle=False) as arrays:
            return cls.from_arrays(arrays, meta)

    @classmethod
    def concat(cls, parts: list[EncodedFeatures], meta: dict[str, Any] | None = None) -> EncodedFeatures:
        return cls(
            chosen=SidePooled.concat([p.chosen for p in parts]),
            rejected=SidePooled.concat([p.rejected for p in parts]),
            pooling=parts[0].pooling,
            meta=dict(meta or {}),
        )
