"""The common flow of every intervention: weights → margins → the intervention's rows → trl rows.

Rows use trl's format. The prompt is the conversation (``session.data.messages(i)``) and the
responses are assistant messages when the tokenizer has a chat template — the audit reads the
responses in that chat context and verification generates in it, so DPO must train in it too.
Without a template the prompt is the same plain-text transcript the audit reads
(``Backbone.render_prompt``) and responses are plain strings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..shaping import DOMINANCE_THRESHOLD
from .registry import get

if TYPE_CHECKING:
    from ..audit.protocol import AuditState


def resolve_weights(session: AuditState, weights: dict[Any, float] | None) -> dict[str, float]:
    """Feature id -> finite non-zero weight (``None``: the session's current weights)."""
    return session.decisions.checked_weights(session.weights if weights is None else weights)


def session_margins(session: AuditState, weights: dict[str, float]) -> np.ndarray:
    """mᵢ for every pair of the session (zeros, without encoding anything, when no weight is set)."""
    if not weights:
        return np.zeros(len(session.data))
    return np.asarray(session.shaping.margins(weights), dtype=np.float64)


@dataclass
class ShapedPairs:
    """The shaped training set and the bookkeeping of what the intervention did.

    Attributes
    ----------
    dataset : datasets.Dataset
        ``prompt``, ``chosen``, ``rejected`` (trl format), ``pair_id``, ``margin``, ``weight``.
    intervention : str
    weights : dict[str, float]
        Feature id -> weight used for the margins (empty for a vanilla run).
    positions : ndarray[int]
        Rows of ``session.data.df`` in the dataset, in dataset order (after filtering).
    margins : ndarray, shape (len(positions),)
        The shaping margin mᵢ of each row (whatever the intervention; only ``margin`` trains on it).
    pair_ids : ndarray[int]
        ``pair_id`` of each row.
    sample_weights : ndarray
        The ``weight`` column: sampling weight ωᵢ (mean 1; all ones except for ``reweight``).
    dropped, flipped : list[int]
        ``pair_id`` of the pairs dropped (filter) or swapped (flip).
    threshold : float
        τ of the dominance rule (filter, flip).
    ablate_features : list[str]
        Features whose directions are ablated (ablate).
    not_ablatable : list[str]
        Suppressed features without a direction (text concepts), left out of the ablation.
    conversational : bool
        Whether rows are chat messages (else plain text).
    """

    dataset: Any
    intervention: str
    weights: dict[str, float]
    positions: np.ndarray
    margins: np.ndarray
    pair_ids: np.ndarray
    sample_weights: np.ndarray
    dropped: list[int] = field(default_factory=list)
    flipped: list[int] = field(default_factory=list)
    threshold: float = DOMINANCE_THRESHOLD
    ablate_features: list[str] = field(default_factory=list)
    not_ablatable: list[str] = field(default_factory=list)
    conversational: bool = True

    @property
    def margin_in_loss(self) -> bool:
        """Whether training adds the margins to the loss (only ``margin`` does)."""
        return get(self.intervention).margin_in_loss

    def summary(self) -> str:
        """One line a person can read: what was trained on and what the intervention changed."""
        n = len(self.positions)
        head = f"{self.intervention}: {n} pairs, {len(self.weights)} weighted feature{'s' * (len(self.weights) != 1)}"
        return get(self.intervention).summary(self, head)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (no dataset) for run records and exports."""
        return {
            "intervention": self.intervention,
            "weights": dict(self.weights),
            "n_pairs": len(self.positions),
            "pair_ids": [int(x) for x in self.pair_ids],
            "dropped": [int(x) for x in self.dropped],
            "flipped": [int(x) for x in self.flipped],
            "threshold": float(self.threshold),
            "ablate_features": list(self.ablate_features),
            "not_ablatable": list(self.not_ablatable),
            "conversational": bool(self.conversational),
            "summary": self.summary(),
        }


def _use_chat(session: AuditState, tokenizer: Any, conversational: bool | None) -> bool:
    if conversational is not None:
        return bool(conversational)
    tok = tokenizer if tokenizer is not None else session.backbone.tokenizer
    return bool(getattr(tok, "chat_template", None))


def _rows(session: AuditState, positions: np.ndarray, swap: np.ndarray, chat: bool) -> list[dict[str, Any]]:
    df = session.data.df
    rows = []
    for k, i in enumerate(positions):
        chosen, rejected = df["chosen"].iloc[i], df["rejected"].iloc[i]
        if swap[k]:
            chosen, rejected = rejected, chosen
        messages = session.data.messages(int(i))
        if chat:
            prompt: Any = messages
            chosen = [{"role": "assistant", "content": chosen}]
            rejected = [{"role": "assistant", "content": rejected}]
        else:
            prompt = session.backbone.render_prompt(messages)
        rows.append(
            {"prompt": prompt, "chosen": chosen, "rejected": rejected, "pair_id": int(df["pair_id"].iloc[i])}
        )
    return rows


def shape_pairs(
    session: AuditState,
    intervention: str = "margin",
    *,
    weights: dict[Any, float] | None = None,
    positions: Sequence[int] | None = None,
    threshold: float = DOMINANCE_THRESHOLD,
    conversational: bool | None = None,
    tokenizer: Any = None,
    margins: Any = None,
) -> ShapedPairs:
    """Build the training set for ``intervention`` from the session's pairs and weights.

    Parameters
    ----------
    session : AuditSession
    intervention : {"margin", "reweight", "filter", "flip", "ablate", "none"}
    weights : dict, optional
        Feature -> weight (:mod:`prefaudit.shaping` units). Default: ``session.weights``. Ignored for ``"none"``.
    positions : sequence of int, optional
        Rows of ``session.data.df`` to train on (default: all).
    margins : array, optional
        mᵢ of each position (a run passes those of its pairs read in its training window,
        :func:`prefaudit.training.plan.shape_training_set`); default: the preview's margins.
    threshold : float
        τ for filter and flip: pairs with mᵢ ≤ −τ are dropped or flipped.
    conversational : bool, optional
        Force chat-message rows (``True``) or plain text (``False``); default: chat when the
        tokenizer has a chat template.

    Returns
    -------
    ShapedPairs

    Example
    -------
    >>> shaped = shape_pairs(session, "filter", weights={"concept:flattery": -2})   # doctest: +SKIP
    >>> shaped.dropped[:3]                                                          # doctest: +SKIP
    [4, 17, 21]
    """
    from datasets import Dataset

    kind = get(intervention)
    n = len(session.data)
    pos = np.arange(n) if positions is None else np.asarray(list(positions), dtype=np.int64)
    if pos.size and (pos.min() < 0 or pos.max() >= n):
        raise ConfigError(f"positions must be rows 0..{n - 1} of the session's pairs.")
    if len(np.unique(pos)) != len(pos):
        raise ConfigError("positions must not repeat a pair.")
    w = {} if intervention == "none" else resolve_weights(session, weights)
    if margins is None or not w:
        margins = session_margins(session, w)[pos]
    else:
        margins = np.asarray(margins, dtype=np.float64)
        if margins.shape != (len(pos),):
            raise ConfigError(f"margins has shape {margins.shape}; expected ({len(pos)},), one per position.")
    plan = kind.rows(session, w, margins, threshold)
    keep, swap = plan.keep, plan.swap
    pair_ids = session.data.df["pair_id"].to_numpy()
    dropped = [int(x) for x in pair_ids[pos[~keep]]]
    flipped = [int(x) for x in pair_ids[pos[swap]]]
    pos, margins, swap = pos[keep], margins[keep], swap[keep]
    loss_margin, weight = plan.loss_margin[keep], plan.sample_weight[keep]
    if len(pos) == 0:
        raise ConfigError(f"{intervention}: no pairs left to train on (all {len(dropped)} were dropped).")
    chat = _use_chat(session, tokenizer, conversational)
    rows = _rows(session, pos, swap, chat)
    for r, m, om in zip(rows, loss_margin, weight, strict=True):
        r["margin"], r["weight"] = float(m), float(om)
    shaped = ShapedPairs(
        dataset=None,
        intervention=intervention,
        weights=w,
        positions=pos,
        margins=margins,
        pair_ids=pair_ids[pos],
        sample_weights=weight,
        dropped=dropped,
        flipped=flipped,
        threshold=float(threshold),
        ablate_features=plan.ablate_features,
        not_ablatable=plan.not_ablatable,
        conversational=chat,
    )
    ds = Dataset.from_list(rows)
    # The record travels with the dataset (and with save_to_disk / exports).
    ds.info.description = json.dumps(
        {"prefaudit": {k: v for k, v in shaped.to_dict().items() if k != "pair_ids"}}
    )
    shaped.dataset = ds
    return shaped


def shaped_dataset(session: AuditState, intervention: str = "margin", **kwargs: Any) -> Any:
    """The ``datasets.Dataset`` of :func:`shape_pairs` (what trl trains on).

    Example
    -------
    >>> ds = shaped_dataset(session, "reweight", weights={"concept:flattery": -1})  # doctest: +SKIP
    >>> sum(ds["weight"]) / len(ds)                                                  # doctest: +SKIP
    1.0
    """
    return shape_pairs(session, intervention, **kwargs).dataset
