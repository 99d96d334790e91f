"""Interventions: turn a session's shaping decisions into the dataset trl trains on.

One function, :func:`shape_pairs`, covers every intervention (each one a module of this
package behind :class:`~prefaudit.interventions.base.Intervention`, found through the registry) so that a vanilla run (``"none"``, or
all weights zero) goes through exactly the same code as a shaped one. Margins are those of the
shaping preview (``session.shaping.margins(weights)``): mᵢ = clip(Σ_f wᶠ·Δᵢᶠ/sᶠ, ±4)
(:mod:`prefaudit.shaping`).

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
margin: 160 pairs, 1 weighted feature, 37 with m <= -1
>>> shaped.dataset.column_names                                                   # doctest: +SKIP
['prompt', 'chosen', 'rejected', 'pair_id', 'margin', 'weight']
"""

from __future__ import annotations

from typing import Any

from .base import Intervention, RowPlan, dominated
from .registry import get, names, register
from .shaped import ShapedPairs, resolve_weights, session_margins, shape_pairs, shaped_dataset

__all__ = [
    "INTERVENTIONS",
    "Intervention",
    "RowPlan",
    "ShapedPairs",
    "ablation_directions",
    "ablation_features",
    "check_intervention",
    "dominated",
    "get",
    "names",
    "register",
    "resolve_weights",
    "session_margins",
    "shape_pairs",
    "shaped_dataset",
]

#: The built-in interventions (``names()`` also lists any registered later).
INTERVENTIONS = names()


def check_intervention(intervention: str) -> str:
    get(intervention)
    return intervention


def __getattr__(name: str) -> Any:
    if name in ("ablation_directions", "ablation_features", "training_ablation"):
        from . import ablate

        return getattr(ablate, name)
    raise AttributeError(f"module 'prefaudit.interventions' has no attribute {name!r}")
