"""``ablate``: decoder directions of suppressed features are projected out of the residual stream.

CAFT-style: during training, the directions are removed from the output of the audited layer
(``ShapedDPOTrainer``); the trained policy runs without the ablation. Ablated features are SAE
features with a negative weight or a ``"suppress"`` verdict (their decoder rows) and direction
concepts likewise (their direction); text concepts (regexes) have no direction in the model and
are listed in ``not_ablatable``. The prediction is the vanilla signal with the ablated features
set to 0 — an approximation: correlated features are not modelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import ids
from ..errors import ConfigError
from .base import Intervention, RowPlan
from .registry import register

if TYPE_CHECKING:
    from ..audit.protocol import AuditState
    from ..audit.shaping import Preview


def ablation_features(core: AuditState, weights: dict[str, float]) -> tuple[list[str], list[str]]:
    """(features with a direction to ablate, suppressed features without one), in a stable order."""
    suppressed = [f for f, w in weights.items() if w < 0]
    suppressed += [f for f, v in core.verdicts.items() if v == "suppress" and f not in suppressed]
    directional = {ids.concept_id(c.name) for c in core.concepts if getattr(c, "kind", "") == "direction"}
    ok = [f for f in suppressed if ids.is_sae(f) or f in directional]
    return ok, [f for f in suppressed if f not in ok]


def ablation_directions(core: AuditState, features: Sequence[str]) -> np.ndarray:
    """Residual-stream directions ``(n, d_model)`` of ``features``: SAE decoder rows or concept directions."""
    rows = []
    for f in features:
        if ids.is_sae(f):
            w = core.sae.decoder_directions([ids.sae_index(f)])
            rows.append(np.asarray(w.detach().float().cpu().numpy()[0], dtype=np.float64))
        else:
            rows.append(np.asarray(core.concept(f).direction, dtype=np.float64))
    return np.stack(rows) if rows else np.zeros((0, 0))


def training_ablation(core: AuditState, features: Sequence[str]) -> tuple[np.ndarray, int]:
    """(directions, layer) the trainer projects out, checked against the model's width."""
    backbone = core.backbone
    dirs = ablation_directions(core, features)
    if dirs.shape[1] != backbone.d_model:
        raise ConfigError(
            f"Ablation directions have {dirs.shape[1]} dimensions, the model {backbone.d_model}."
        )
    return dirs, backbone.layer


@register
class Ablate(Intervention):
    name = "ablate"

    def rows(
        self, core: AuditState, weights: dict[str, float], margins: np.ndarray, threshold: float
    ) -> RowPlan:
        ablate, skipped = ablation_features(core, weights)
        if not ablate:
            why = f" ({', '.join(skipped)} are text concepts without a direction)" if skipped else ""
            raise ConfigError(
                "intervention='ablate' needs at least one suppressed SAE feature or direction concept "
                f"(negative weight or 'suppress' verdict){why}."
            )
        plan = RowPlan.unchanged(len(margins))
        plan.ablate_features, plan.not_ablatable = ablate, skipped
        return plan

    def pair_weights(self, preview: Preview, threshold: float) -> np.ndarray:
        # Every pair as in plain DPO (the weights do not enter the loss) ...
        return np.ones(len(preview.margins))

    def zeroed(self, ablated: list[str]) -> list[str]:
        # ... but the ablated directions cannot be learned.
        return list(ablated)

    def summary(self, shaped: Any, head: str) -> str:
        skipped = (
            f" (no direction, skipped: {', '.join(shaped.not_ablatable)})" if shaped.not_ablatable else ""
        )
        return f"{head}; ablating {len(shaped.ablate_features)} direction(s){skipped}"
