"""Feature sources: SAE features (sae-lens) and text concepts, pooled per response."""

from __future__ import annotations

from .concepts import DirectionConcept, TextConcept, builtin_concepts, concept_matrix, make_concept
from .encoded import EncodedFeatures, SidePooled

__all__ = [
    "DirectionConcept",
    "EncodedFeatures",
    "SidePooled",
    "TextConcept",
    "builtin_concepts",
    "concept_matrix",
    "make_concept",
]
