"""Interventions: turn a session's shaping decisions into the dataset trl trains on.

One function, :func:`shape_pairs`, covers every intervention so that a vanilla run (``"none"``, or
all weights zero) goes through exactly the same code as a shaped one. Margins are those of the
shaping preview (``session.predict(weights).attrs["margins"]``): mᵢ = Σ_f wᶠ·Δᵢᶠ/sᶠ.

=============  ===========================================================================  =======  =========
intervention   what changes                                                                 margin   weight
=============  ===========================================================================  =======  =========
``margin``     mᵢ enters the Bradley–Terry logit: loss −log σ(β·hᵢ − mᵢ)                    mᵢ       1
``reweight``   pair i is sampled with probability ∝ ωᵢ = σ(mᵢ) / mean σ(m)                   0        ωᵢ
``filter``     pairs with mᵢ ≤ −τ are dropped (reported in ``dropped``)                     0        1
``flip``       pairs with mᵢ ≤ −τ have chosen and rejected swapped (``flipped``)           0        1
``ablate``     decoder directions of suppressed features are projected out of the          0        1
               residual stream at the audited layer during training (CAFT-style)
``none``       plain DPO                                                                    0        1
=============  ===========================================================================  =======  =========

**Dominated pairs** (filter, flip): mᵢ ≤ −τ, with τ = ``threshold`` (default
:data:`prefaudit.shaping.DOMINANCE_THRESHOLD` = 1). At that margin the pair's gradient weight σ(mᵢ)
is at most 0.27 (vanilla 0.5): the weighted features explain the preference against the label,
so the shaping, not the data, decides the pair. With suppressing weights (wᶠ < 0) these are the
pairs whose chosen response carries clearly more of a suppressed feature.

**Ablated features**: SAE features with a negative weight or a ``"suppress"`` verdict (their
decoder rows), and direction concepts likewise (their direction). Text concepts (regexes) have no
direction in the model and are listed in ``not_ablatable``.

Rows use trl's format. The prompt is the conversation (``session.data.messages(i)``) and the
responses are assistant messages when the tokenizer has a chat template — the audit reads the
responses in that chat context and verification generates in it, so DPO must train in it too.
Without a template the prompt is the same plain-text transcript the audit reads
(``Backbone.render_prompt``) and responses are plain strings.

Example
-------
>>> shaped = shape_pairs(session, "margin", weights={"concept:flattery": -2.0})  # doctest: +SKIP
>>> print(shaped.summary())                                                       # doctest: +SKIP
margin: 160 pairs, 1 weighted feature, 37 with |m| >= 1.0
>>> shaped.dataset.column_names                                                   # doctest: +SKIP
['prompt', 'chosen', 'rejected', 'pair_id', 'margin', 'weight']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .shaping import DOMINANCE_THRESHOLD, gradient_weights

INTERVENTIONS = ("margin", "reweight", "filter", "flip", "ablate", "none")


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

    def summary(self) -> str:
        """One line a person can read: what was trained on and what the intervention changed."""
        n = len(self.positions)
        head = f"{self.intervention}: {n} pairs, {len(self.weights)} weighted feature{'s' * (len(self.weights) != 1)}"
        if self.intervention == "margin":
            return f"{head}, {int(np.sum(np.abs(self.margins) >= self.threshold))} with |m| >= {self.threshold:g}"
        if self.intervention == "reweight":
            w = self.sample_weights
            return f"{head}, sampling weights {w.min():.2f}..{w.max():.2f} (mean 1)" if n else head
        if self.intervention == "filter":
            return f"{head}; dropped {len(self.dropped)} with m <= -{self.threshold:g}"
        if self.intervention == "flip":
            return f"{head}; flipped {len(self.flipped)} with m <= -{self.threshold:g}"
        if self.intervention == "ablate":
            skipped = (
                f" (no direction, skipped: {', '.join(self.not_ablatable)})" if self.not_ablatable else ""
            )
            return f"{head}; ablating {len(self.ablate_features)} direction(s){skipped}"
        return head

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


def check_intervention(intervention: str) -> str:
    if intervention not in INTERVENTIONS:
        raise ConfigError(f"intervention={intervention!r}; choose one of {', '.join(INTERVENTIONS)}.")
    return intervention


def resolve_weights(session: Any, weights: dict[Any, float] | None) -> dict[str, float]:
    """Feature id -> finite non-zero weight (``None``: the session's current weights)."""
    return session.checked_weights(session.weights if weights is None else weights)


def pair_margins(session: Any, weights: dict[str, float]) -> np.ndarray:
    """mᵢ for every pair of the session (zeros, without encoding anything, when no weight is set)."""
    if not weights:
        return np.zeros(len(session.data))
    return np.asarray(session.predict(weights).attrs["margins"], dtype=np.float64)


def dominated(margins: np.ndarray, threshold: float = DOMINANCE_THRESHOLD) -> np.ndarray:
    """Mask of pairs the shaping dominates in the suppressing direction: mᵢ ≤ −τ."""
    if not threshold > 0:
        raise ConfigError(f"threshold must be > 0 (a margin in logit units), got {threshold!r}.")
    return np.asarray(margins) <= -float(threshold)


def ablation_features(session: Any, weights: dict[str, float]) -> tuple[list[str], list[str]]:
    """(features with a direction to ablate, suppressed features without one), in a stable order."""
    from .session import CONCEPT_PREFIX, SAE_PREFIX

    suppressed = [f for f, w in weights.items() if w < 0]
    suppressed += [f for f, v in session.verdicts.items() if v == "suppress" and f not in suppressed]
    directional = {CONCEPT_PREFIX + c.name for c in session.concepts if getattr(c, "kind", "") == "direction"}
    ok = [f for f in suppressed if f.startswith(SAE_PREFIX) or f in directional]
    return ok, [f for f in suppressed if f not in ok]


def ablation_directions(session: Any, features: Sequence[str]) -> np.ndarray:
    """Residual-stream directions ``(n, d_model)`` of ``features``: SAE decoder rows or concept directions."""
    from .session import CONCEPT_PREFIX, SAE_PREFIX

    rows = []
    by_name = {CONCEPT_PREFIX + c.name: c for c in session.concepts}
    for f in features:
        if f.startswith(SAE_PREFIX):
            w = session.sae.decoder_directions([int(f[len(SAE_PREFIX) :])])
            rows.append(np.asarray(w.detach().float().cpu().numpy()[0], dtype=np.float64))
        else:
            rows.append(np.asarray(by_name[f].direction, dtype=np.float64))
    return np.stack(rows) if rows else np.zeros((0, 0))


def _use_chat(session: Any, tokenizer: Any, conversational: bool | None) -> bool:
    if conversational is not None:
        return bool(conversational)
    tok = tokenizer if tokenizer is not None else session.backbone.tokenizer
    return bool(getattr(tok, "chat_template", None))


def _rows(session: Any, positions: np.ndarray, swap: np.ndarray, chat: bool) -> list[dict[str, Any]]:
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
    session: Any,
    intervention: str = "margin",
    *,
    weights: dict[Any, float] | None = None,
    positions: Sequence[int] | None = None,
    threshold: float = DOMINANCE_THRESHOLD,
    conversational: bool | None = None,
    tokenizer: Any = None,
) -> ShapedPairs:
    """Build the training set for ``intervention`` from the session's pairs and weights.

    Parameters
    ----------
    session : AuditSession
    intervention : {"margin", "reweight", "filter", "flip", "ablate", "none"}
    weights : dict, optional
        Feature -> weight (standardised units). Default: ``session.weights``. Ignored for ``"none"``.
    positions : sequence of int, optional
        Rows of ``session.data.df`` to train on (default: all). Margins are standardised over
        all pairs either way, exactly as in the preview.
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

    check_intervention(intervention)
    n = len(session.data)
    pos = np.arange(n) if positions is None else np.asarray(list(positions), dtype=np.int64)
    if pos.size and (pos.min() < 0 or pos.max() >= n):
        raise ConfigError(f"positions must be rows 0..{n - 1} of the session's pairs.")
    if len(np.unique(pos)) != len(pos):
        raise ConfigError("positions must not repeat a pair.")
    w = {} if intervention == "none" else resolve_weights(session, weights)
    m_all = pair_margins(session, w)
    margins = m_all[pos]
    swap = np.zeros(len(pos), dtype=bool)
    keep = np.ones(len(pos), dtype=bool)
    ablate, skipped = [], []
    if intervention in ("filter", "flip"):
        mask = dominated(margins, threshold)
        if intervention == "filter":
            keep = ~mask
        else:
            swap = mask
    elif intervention == "ablate":
        ablate, skipped = ablation_features(session, w)
        if not ablate:
            why = f" ({', '.join(skipped)} are text concepts without a direction)" if skipped else ""
            raise ConfigError(
                "intervention='ablate' needs at least one suppressed SAE feature or direction concept "
                f"(negative weight or 'suppress' verdict){why}."
            )
    pair_ids = session.data.df["pair_id"].to_numpy()
    dropped = [int(x) for x in pair_ids[pos[~keep]]]
    flipped = [int(x) for x in pair_ids[pos[swap]]]
    pos, margins, swap = pos[keep], margins[keep], swap[keep]
    if len(pos) == 0:
        raise ConfigError(f"{intervention}: no pairs left to train on (all {len(dropped)} were dropped).")
    chat = _use_chat(session, tokenizer, conversational)
    rows = _rows(session, pos, swap, chat)
    loss_margin = margins if intervention == "margin" else np.zeros(len(pos))
    if intervention == "reweight":
        g = gradient_weights(margins)
        weight = g / g.mean()
    else:
        weight = np.ones(len(pos))
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
        ablate_features=ablate,
        not_ablatable=skipped,
        conversational=chat,
    )
    ds = Dataset.from_list(rows)
    # The record travels with the dataset (and with save_to_disk / exports).
    ds.info.description = json.dumps(
        {"prefaudit": {k: v for k, v in shaped.to_dict().items() if k != "pair_ids"}}
    )
    shaped.dataset = ds
    return shaped


def shaped_dataset(session: Any, intervention: str = "margin", **kwargs: Any) -> Any:
    """The ``datasets.Dataset`` of :func:`shape_pairs` (``session.shaped_pairs`` calls this).

    Example
    -------
    >>> ds = shaped_dataset(session, "reweight", weights={"concept:flattery": -1})  # doctest: +SKIP
    >>> sum(ds["weight"]) / len(ds)                                                  # doctest: +SKIP
    1.0
    """
    return shape_pairs(session, intervention, **kwargs).dataset


def export_jsonl(dataset: Any, path: str | Path) -> Path:
    """Write a shaped dataset as JSON lines (one pair per line; messages stay lists of dicts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in dataset:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def export_parquet(dataset: Any, path: str | Path) -> Path:
    """Write a shaped dataset as Parquet (``datasets.Dataset.to_parquet``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(path))
    return path
