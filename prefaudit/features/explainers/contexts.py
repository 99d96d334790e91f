"""The built-in explainer: the distinctive-context label of :mod:`prefaudit.features.labels`."""

from __future__ import annotations

from prefaudit.features.labels import ConceptContexts

from . import Explanation, register_explainer


class ContextsExplainer:
    """Says what the built-in label says; the distinctive n-grams are its evidence."""

    name = "contexts"

    def explain(self, contexts: ConceptContexts) -> Explanation | None:
        if contexts.label_kind == "no context":
            return None
        evidence = tuple(
            f"{g.text} ({g.n_top} of {len(contexts.top)} top contexts)" for g in contexts.distinctive[:5]
        )
        return Explanation(contexts.label, f"contexts ({contexts.label_kind})", None, evidence)


register_explainer("contexts", ContextsExplainer)
