"""Read generations the way the audit reads responses: same model, SAE, pooling and concepts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

Message = dict[str, str]


def observed_delta(
    session: Any, prompts: Sequence[Sequence[Message]], trained: Sequence[str], base: Sequence[str]
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Pooled features ``(n, n_features)`` of trained and base generations, in ``session.feature_ids`` order.

    SAE features are read through the session's backbone and SAE at the audited layer with the
    session's pooling (:func:`prefaudit.features.encode.encode_shard`); concepts from the texts
    (direction concepts from the mean activation).
    """
    from ..features.concepts import DirectionConcept, concept_values

    n = len(prompts)
    mean_act: tuple[np.ndarray, np.ndarray] | None = None
    blocks_t: list[Any] = []
    blocks_b: list[Any] = []
    if session.uses_sae:
        from ..features.encode import encode_shard

        enc, _ = encode_shard(
            session.backbone,
            session.sae,
            list(prompts),
            list(trained),
            list(base),
            pooling=session.config["pooling"],
            batch_size=session.config["batch_size"],
        )
        blocks_t.append(enc.chosen.values)
        blocks_b.append(enc.rejected.values)
        mean_act = (enc.chosen.mean_act, enc.rejected.mean_act)
    c_t = np.zeros((n, len(session.concepts)))
    c_b = np.zeros((n, len(session.concepts)))
    for j, concept in enumerate(session.concepts):
        if isinstance(concept, DirectionConcept) and mean_act is None:
            acts_t = session.backbone.read_responses(prompts, trained)
            acts_b = session.backbone.read_responses(prompts, base)
            mean_act = (
                np.stack([a.mean(0).numpy() if len(a) else np.zeros(a.shape[1]) for a in acts_t]),
                np.stack([a.mean(0).numpy() if len(a) else np.zeros(a.shape[1]) for a in acts_b]),
            )
        c_t[:, j] = concept_values(concept, list(trained), mean_act[0] if mean_act else None)
        c_b[:, j] = concept_values(concept, list(base), mean_act[1] if mean_act else None)
    blocks_t.append(sp.csr_matrix(c_t))
    blocks_b.append(sp.csr_matrix(c_b))
    return sp.hstack(blocks_t, format="csr"), sp.hstack(blocks_b, format="csr")
