"""Pooled SAE activations of a preference dataset: the input of the statistics.

Everything is stored sparse (SAE codes are sparse). For each non-zero pooled value we keep the
token that attained the maximum activation and its position in the response, which is enough to
label features by their top tokens and to show a context snippet without re-running the model.

Saved as ``.npz`` of plain arrays (no pickle); :meth:`EncodedFeatures.load` refuses pickles.
Many shards merge into one memory-mapped store (:mod:`prefaudit.features.store`):
:meth:`EncodedFeatures.open` maps it without reading the values into RAM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .store import STORE_DIR, build_store, read_store

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
        Tokens read (after the cut at the audit's ``max_response_tokens``).
    truncated : numpy.ndarray[bool], shape (n_pairs,)
        Whether the response was cut (it had more than ``max_response_tokens`` tokens).
    full_length : numpy.ndarray[int32], shape (n_pairs,), or None
        Tokens of the whole response, before the cut (``== n_tokens`` where not cut). ``None``
        where it was not recorded (shards and sessions written before prefaudit recorded it);
        :meth:`full_lengths` then falls back to ``n_tokens``.
    by_column : scipy.sparse.csc_matrix, or None
        The same values column-major, where a feature store provides them (memory-mapped), so
        that :meth:`column` reads only one feature's entries; ``None`` otherwise.
    """

    values: sp.csr_matrix
    top_token: np.ndarray
    top_pos: np.ndarray
    mean_act: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray
    full_length: np.ndarray | None = None
    by_column: sp.csc_matrix | None = field(default=None, repr=False, compare=False)

    def column(self, j: int) -> np.ndarray:
        """Dense float64 values of feature ``j`` over all pairs.

        From :attr:`by_column` this reads that feature's entries only; without it, the CSR
        values are scanned once (no dense matrix either way).
        """
        if self.by_column is not None:
            m = self.by_column
            lo, hi = int(m.indptr[j]), int(m.indptr[j + 1])
            out = np.zeros(m.shape[0], dtype=np.float64)
            out[m.indices[lo:hi]] = m.data[lo:hi]
            return out
        return self.values[:, [j]].toarray().ravel().astype(np.float64)

    def full_lengths(self) -> np.ndarray:
        """Tokens of each whole response (before the cut); ``n_tokens`` where not recorded."""
        return self.n_tokens if self.full_length is None else self.full_length

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        v = self.values
        # copy=False: arrays of a memory-mapped store are passed on as they are, not read into RAM.
        full = (
            {}
            if self.full_length is None
            else {f"{prefix}_full_length": self.full_length.astype(np.int32, copy=False)}
        )
        return {
            f"{prefix}_data": v.data.astype(np.float32, copy=False),
            f"{prefix}_indices": v.indices.astype(np.int32, copy=False),
            f"{prefix}_indptr": v.indptr.astype(np.int64, copy=False),
            f"{prefix}_shape": np.asarray(v.shape, dtype=np.int64),
            f"{prefix}_top_token": self.top_token.astype(np.int32, copy=False),
            f"{prefix}_top_pos": self.top_pos.astype(np.int32, copy=False),
            f"{prefix}_mean_act": self.mean_act.astype(np.float32, copy=False),
            f"{prefix}_n_tokens": self.n_tokens.astype(np.int32, copy=False),
            f"{prefix}_truncated": self.truncated.astype(bool, copy=False),
            **full,
        }

    @classmethod
    def from_arrays(cls, arrays: Any, prefix: str) -> SidePooled:
        shape = tuple(int(x) for x in arrays[f"{prefix}_shape"])
        # scipy wraps the three arrays without copying them (memory-mapped ones stay mapped).
        values = sp.csr_matrix(
            (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]), shape=shape
        )
        by_column = None
        if f"{prefix}_csc_data" in arrays:
            by_column = sp.csc_matrix(
                (
                    arrays[f"{prefix}_csc_data"],
                    arrays[f"{prefix}_csc_indices"],
                    arrays[f"{prefix}_csc_indptr"],
                ),
                shape=shape,
            )
        return cls(
            values=values,
            top_token=np.asarray(arrays[f"{prefix}_top_token"]),
            top_pos=np.asarray(arrays[f"{prefix}_top_pos"]),
            mean_act=np.asarray(arrays[f"{prefix}_mean_act"]),
            n_tokens=np.asarray(arrays[f"{prefix}_n_tokens"]),
            truncated=np.asarray(arrays[f"{prefix}_truncated"]),
            full_length=_optional(arrays, f"{prefix}_full_length"),
            by_column=by_column,
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
            full_length=_concat_optional([p.full_length for p in parts]),
        )


def _optional(arrays: Any, key: str) -> np.ndarray | None:
    return np.asarray(arrays[key]) if key in arrays else None


def _concat_optional(parts: list[np.ndarray | None]) -> np.ndarray | None:
    # One part without the array (an old shard) makes the whole unknown rather than misaligned.
    return None if any(p is None for p in parts) else np.concatenate(parts)


@dataclass
class EncodedFeatures:
    """Pooled SAE features of both sides of every pair, in the order of ``pairs.df``.

    ``prompt_length`` (int32, tokens of the rendered prompt before the cut; an empty prompt counts
    the one stand-in token the model reads) and ``prompt_cut`` (bool, the prompt kept only its last
    ``max_prompt_tokens`` tokens) are ``None`` where not recorded (before prefaudit recorded them).
    """

    chosen: SidePooled
    rejected: SidePooled
    pooling: str
    meta: dict[str, Any] = field(default_factory=dict)
    prompt_length: np.ndarray | None = None
    prompt_cut: np.ndarray | None = None

    @property
    def n_pairs(self) -> int:
        return int(self.chosen.values.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.chosen.values.shape[1])

    def side(self, name: str) -> SidePooled:
        return self.chosen if name == "chosen" else self.rejected

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Response lengths in tokens read (after truncation)."""
        return self.chosen.n_tokens.astype(np.float64), self.rejected.n_tokens.astype(np.float64)

    @property
    def full_lengths_recorded(self) -> bool:
        """Whether the lengths before the cut were recorded (not for data encoded before they were)."""
        return self.chosen.full_length is not None and self.rejected.full_length is not None

    def full_lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Whole response lengths in tokens (before the cut), the regressor of the length control.

        Falls back to the tokens read where the full lengths were not recorded
        (:attr:`full_lengths_recorded`); those are equal for every response that was not cut.
        """
        return (
            self.chosen.full_lengths().astype(np.float64),
            self.rejected.full_lengths().astype(np.float64),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {**self.chosen.to_arrays("chosen"), **self.rejected.to_arrays("rejected")}
        if self.prompt_length is not None and self.prompt_cut is not None:
            out["prompt_length"] = self.prompt_length.astype(np.int32)
            out["prompt_cut"] = self.prompt_cut.astype(bool)
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
            prompt_length=_optional(arrays, "prompt_length"),
            prompt_cut=_optional(arrays, "prompt_cut"),
        )

    @classmethod
    def load(cls, path: str | Path, meta: dict[str, Any] | None = None) -> EncodedFeatures:
        """Read an ``.npz`` (into RAM), or open a feature store folder memory-mapped (:meth:`open`)."""
        if Path(path).is_dir():
            return cls.open(path, meta)
        with np.load(Path(path), allow_pickle=False) as arrays:
            return cls.from_arrays(arrays, meta)

    @classmethod
    def open(cls, folder: str | Path, meta: dict[str, Any] | None = None) -> EncodedFeatures:
        """Map a feature store (:mod:`prefaudit.features.store`) read-only; nothing is read yet.

        The values are ``scipy.sparse.csr_matrix`` over the mapped arrays; each side also carries
        them column-major (:attr:`SidePooled.by_column`). ``meta["store"]`` is the folder.
        """
        arrays, _info = read_store(folder)
        return cls.from_arrays(arrays, {**(meta or {}), "store": str(folder)})

    @classmethod
    def from_shards(
        cls, shards: list[str | Path], folder: str | Path, meta: dict[str, Any] | None = None
    ) -> EncodedFeatures:
        """Merge ``.npz`` shards (in order) into a store under ``folder`` once, then :meth:`open` it.

        ``folder`` is the encode cache folder that holds the shards; the store goes into its
        ``store-v1`` subfolder and is built only when missing, damaged (a cut file) or merged
        from other shards than these (:func:`~prefaudit.features.store.store_problem`); a store
        replaced is named in a warning. Memory holds one shard at a time while merging.

        >>> enc = EncodedFeatures.from_shards(sorted(folder.glob("shard-*.npz")), folder)  # doctest: +SKIP
        """
        store = build_store(shards, Path(folder) / STORE_DIR)
        return cls.open(store, meta)

    @classmethod
    def concat(cls, parts: list[EncodedFeatures], meta: dict[str, Any] | None = None) -> EncodedFeatures:
        return cls(
            chosen=SidePooled.concat([p.chosen for p in parts]),
            rejected=SidePooled.concat([p.rejected for p in parts]),
            pooling=parts[0].pooling,
            meta=dict(meta or {}),
            prompt_length=_concat_optional([p.prompt_length for p in parts]),
            prompt_cut=_concat_optional([p.prompt_cut for p in parts]),
        )


@dataclass(frozen=True)
class Truncation:
    """What the audit's token window cut: prompts keep their last ``max_prompt_tokens`` tokens,
    responses their first ``max_response_tokens``.

    ``prompts``, ``chosen`` and ``rejected`` are the ``pair_id`` of the pairs whose prompt, chosen
    or rejected response was cut; ``None`` where that is unknown (a concepts-only audit tokenises
    nothing; an audit not encoded yet; prompts of data encoded before prefaudit recorded them).
    ``note`` says why a count is unknown.

    Example
    -------
    >>> t = Truncation(384, 256, 560, prompts=(3, 9), chosen=(), rejected=(4,))
    >>> t.sentence()
    '2 of 560 prompts kept only their last 384 tokens; 0 chosen and 1 rejected responses were cut at 256 tokens'
    """

    max_prompt_tokens: int
    max_response_tokens: int
    n_pairs: int
    prompts: tuple[int, ...] | None = None
    chosen: tuple[int, ...] | None = None
    rejected: tuple[int, ...] | None = None
    note: str = ""

    @classmethod
    def of(
        cls, encoded: EncodedFeatures, pair_ids: Any, *, max_prompt_tokens: int, max_response_tokens: int
    ) -> Truncation:
        """The cuts recorded in ``encoded``; ``pair_ids`` is the ``pair_id`` column in pair order."""
        ids = np.asarray(pair_ids)

        def cut(mask: np.ndarray | None) -> tuple[int, ...] | None:
            return None if mask is None else tuple(ids[np.asarray(mask, dtype=bool)].tolist())

        notes = []
        if encoded.prompt_cut is None:
            notes.append("prompt cuts were not recorded (encoded before prefaudit recorded them)")
        if not encoded.full_lengths_recorded:
            notes.append(
                "full response lengths were not recorded: the length control uses the tokens read, "
                "which differ only for the responses that were cut"
            )
        return cls(
            max_prompt_tokens=int(max_prompt_tokens),
            max_response_tokens=int(max_response_tokens),
            n_pairs=encoded.n_pairs,
            prompts=cut(encoded.prompt_cut),
            chosen=cut(encoded.chosen.truncated),
            rejected=cut(encoded.rejected.truncated),
            note="; ".join(notes),
        )

    @property
    def n_prompts_cut(self) -> int | None:
        return None if self.prompts is None else len(self.prompts)

    @property
    def n_chosen_cut(self) -> int | None:
        return None if self.chosen is None else len(self.chosen)

    @property
    def n_rejected_cut(self) -> int | None:
        return None if self.rejected is None else len(self.rejected)

    @property
    def n_responses_cut(self) -> int | None:
        if self.chosen is None or self.rejected is None:
            return None
        return len(self.chosen) + len(self.rejected)

    def counts(self) -> dict[str, Any]:
        """The counts and the limits as plain JSON values (``None``: unknown)."""
        return {
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_response_tokens": self.max_response_tokens,
            "n_pairs": self.n_pairs,
            "prompts_cut": self.n_prompts_cut,
            "chosen_cut": self.n_chosen_cut,
            "rejected_cut": self.n_rejected_cut,
            "note": self.note,
        }

    def to_dict(self) -> dict[str, Any]:
        """:meth:`counts`, the sentence and the cut pairs' ids (``pair_ids``: prompt, chosen, rejected)."""
        ids = {k: None if v is None else list(v) for k, v in self.pair_ids().items()}
        return {**self.counts(), "sentence": self.sentence(), "pair_ids": ids}

    def pair_ids(self) -> dict[str, tuple[int, ...] | None]:
        return {"prompt": self.prompts, "chosen": self.chosen, "rejected": self.rejected}

    def sentence(self) -> str:
        """One line for people, e.g. ``12 of 560 prompts kept only their last 384 tokens; ...``."""
        if self.prompts is None and self.chosen is None and self.rejected is None:
            return self.note or "nothing was tokenised"
        if self.prompts is None:
            head = "prompt cuts unknown"
        else:
            head = f"{len(self.prompts)} of {self.n_pairs} prompts kept only their last {self.max_prompt_tokens} tokens"
        if self.chosen is None or self.rejected is None:
            return f"{head}; response cuts unknown"
        return (
            f"{head}; {len(self.chosen)} chosen and {len(self.rejected)} rejected responses were cut "
            f"at {self.max_response_tokens} tokens"
        )

    def __str__(self) -> str:
        s = self.sentence()
        return s if not self.note or s == self.note else f"{s} ({self.note})"
