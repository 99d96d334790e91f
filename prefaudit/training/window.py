"""The audit read again in the training window: exactly the tokens a run trains on.

The audit reads every response whole (prompt kept from its end, up to the backbone's limits);
a run sees what its plan keeps (:func:`prefaudit.training.tokens.window_cut` on trl's own
tokenisation). This module re-encodes pairs in that window — the same model, layer, SAE and
pooling, fed trl's token ids — so that the prediction (``session.predict(config=...)``,
:mod:`prefaudit.training.prediction`) and verification describe the trained text, not a longer one. Concepts are evaluated on the kept
response tokens decoded back to text. Results are kept in the session's stage cache (``core.stage_cache``: emptied when the features change).

Example
-------
>>> m = window_matrix(session, {"max_length": 64, "max_prompt_length": 32}, [0, 1, 2])   # doctest: +SKIP
>>> m.shape                                                                              # doctest: +SKIP
(3, 4110)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ..features.concepts import concept_values
from ..features.encode import encode_batch, length_batches
from ..features.matrix import FeatureMatrix
from .tokens import trl_token_ids, window_cut

if TYPE_CHECKING:
    from ..audit.protocol import AuditState


def window_token_ids(
    core: AuditState, window: dict[str, int], positions: Sequence[int]
) -> list[tuple[list[int], ...]]:
    """(prompt, chosen, rejected) token ids of the pairs at ``positions`` as the run's window keeps them.

    Cached per session: verification's implicit rewards and :func:`window_matrix` read the same
    held-out pairs, and tokenising them once is enough.
    """
    from ..interventions import shape_pairs

    pos = [int(i) for i in positions]
    key = json.dumps(["ids", window, pos])
    cache = core.stage_cache("training.window")
    if key not in cache:
        rows = shape_pairs(core, "none", positions=pos).dataset
        tok = core.backbone.tokenizer
        cache[key] = [
            tuple(window_cut(*trl_token_ids(row, tok), window["max_length"], window["max_prompt_length"]))
            for row in rows
        ]
    return cache[key]


def _side_matrix(pooled: list[tuple[np.ndarray, ...]], d_sae: int) -> sp.csr_matrix:
    indptr = np.zeros(len(pooled) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(p[0]) for p in pooled])
    indices = np.concatenate([p[0] for p in pooled]) if pooled else np.zeros(0, np.int32)
    data = np.concatenate([p[1] for p in pooled]) if pooled else np.zeros(0, np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(pooled), d_sae))


def window_matrix(core: AuditState, window: dict[str, int], positions: Sequence[int]) -> FeatureMatrix:
    """Pooled features ``(len(positions), n_features)`` of those pairs read in the training window.

    Columns are the audit's (``core.feature_ids``): SAE features from the window's tokens, then
    concepts on the decoded kept response text (direction concepts on its mean activation).
    """
    if core.uses_sae and core.encoded is None:
        core.encode()  # the columns are the audit's: its SAE features must be known first
    pos = [int(i) for i in positions]
    key = json.dumps([window, pos, core.config["pooling"], [c.name for c in core.concepts]])
    cache = core.stage_cache("training.window")
    if key in cache:
        return cache[key]
    ids = window_token_ids(core, window, pos)
    n = len(pos)
    backbone, sae = core.backbone, core.sae
    pooled: list[Any] = [None] * (2 * n)
    if core.uses_sae and n:
        p_len = [len(x[0]) for x in ids]
        r_len = [(len(x[1]), len(x[2])) for x in ids]
        budget = core.config.get("batch_tokens") or backbone.default_batch_tokens
        batches = length_batches(
            p_len, r_len, core.config["batch_size"], batch_tokens=budget, packed=backbone.packs_pairs
        )
        for idx in batches:
            out, _ = encode_batch(
                backbone,
                sae,
                [ids[i][0] for i in idx],
                [(ids[i][1], ids[i][2]) for i in idx],
                pooling=core.config["pooling"],
            )
            for k, i in enumerate(idx):
                pooled[2 * i], pooled[2 * i + 1] = out[2 * k], out[2 * k + 1]
    texts = [[backbone.tokenizer.decode(x[s], skip_special_tokens=True).strip() for x in ids] for s in (1, 2)]
    sides = []
    for s in (0, 1):
        mine = pooled[s::2]
        mean_act = np.stack([p[3] for p in mine]) if core.uses_sae and n else None
        concepts = np.zeros((n, len(core.concepts)))
        for j, concept in enumerate(core.concepts):
            needs = getattr(concept, "kind", "") == "direction"
            if needs and mean_act is None:
                mean_act = np.stack(
                    [
                        a.mean(0).numpy()
                        for a in backbone.read_responses([core.data.messages(i) for i in pos], texts[s])
                    ]
                )
            concepts[:, j] = concept_values(concept, texts[s], mean_act if needs else None)
        blocks = [_side_matrix(mine, sae.d_sae)] if core.uses_sae else []
        sides.append(sp.hstack([*blocks, sp.csr_matrix(concepts)], format="csr"))
    matrix = FeatureMatrix(sides[0], sides[1])
    cache[key] = matrix
    return matrix
