"""Names of prefaudit 0.1's ``AuditSession`` that moved into its parts, kept one release with a warning.

The session keeps the verbs a user needs (``docs/ARCHITECTURE.md`` lists them); everything else
lives on the part that owns it — ``session.space``, ``session.groups``, ``session.topics``,
``session.shaping``, ``session.drivers``, ``session.edits``, ``session.lens_fit``,
``session.decisions``. An old name still answers, through the part, and says where it went.

>>> MOVED["group_scores"], MOVED["test_by_topic"]
('groups.scores', 'topics.test')
"""

from __future__ import annotations

import warnings
from typing import Any

#: old name -> "part.attribute" that now answers it.
MOVED: dict[str, str] = {
    # the feature space
    "feature_id": "space.feature_id",
    "decision_id": "space.decision_id",
    "column": "space.column",
    "values": "space.values",
    "top_pairs": "space.top_pairs",
    "token_activations": "space.token_activations",
    "truncation": "space.truncation",
    "lengths": "space.lengths",
    "delta_matrix": "space.delta",
    "concept_values": "space.concept_values",
    # groups
    "group_scores": "groups.scores",
    "group_score_matrices": "groups.score_matrices",
    "group_of": "groups.of",
    "group_members": "groups.members",
    "group_label": "groups.label",
    "group_coefficients": "groups.coefficients",
    "group_deltas": "groups.deltas",
    "explained_by": "groups.explained_by",
    "computed_groups": "groups.computed",
    # topics
    "topic_labels": "topics.labels",
    "topic_assignment": "topics.assignment",
    "test_by": "topics.test",
    "test_by_topic": "topics.test",
    "results_by": "topics.results",
    "set_topic_filter": "topics.set_filter",
    "filtered_positions": "topics.filtered_positions",
    # shaping and drivers
    "margin_weights": "shaping.margin_weights",
    "predict_rows": "shaping.rows",
    "weighted_features": "shaping.weighted_features",
    "signal_without": "drivers.signal_without",
    # pair edits
    "pair_edit_signs": "edits.signs",
    "pair_edits_table": "edits.table",
    "pair_edit_reasons": "edits.reasons",
    "pair_edit_preview": "edits.preview",
    "export_pairs": "edits.export",
    "restore_pairs": "edits.restore",
    "clear_pair_edits": "edits.clear",
    # decisions
    "set_selection": "decisions.set_selection",
    "deselect_feature": "decisions.deselect",
    "set_weights": "decisions.set_weights",
    "checked_weights": "decisions.checked_weights",
    # the lens fit
    "measured_sae_fit": "lens_fit.measured",
}

#: Old names whose value moved elsewhere than a part's attribute: old name -> (where, how to read it).
MOVED_VALUES: dict[str, tuple[str, Any]] = {
    "results_by_topic": ("topics.results('topic')", lambda s: s.topics.results("topic")),
    "shaped_pairs": ("prefaudit.interventions.shaped_dataset(session, ...)", lambda s: _shaped_pairs(s)),
    "sae_id": ("prefaudit.ids.sae_id", lambda s: _sae_id),
    "pairs": ("drilldown", lambda s: s.drilldown),  # it opened a view; the name said data
}


def _shaped_pairs(session: Any) -> Any:
    from .interventions import shaped_dataset

    return lambda intervention="margin", **kw: shaped_dataset(session, intervention, **kw)


def _sae_id(index: int) -> str:
    from .ids import sae_id

    return sae_id(index)


def moved_attribute(session: Any, name: str) -> Any:
    """What ``session.<name>`` was in 0.1, with a ``DeprecationWarning`` naming the new place.

    Raises ``AttributeError`` for any other name (the normal lookup already failed).
    """
    if name in MOVED_VALUES:
        where, read = MOVED_VALUES[name]
        _warn(name, where if where.startswith("prefaudit") else f"session.{where}")
        return read(session)
    target = MOVED.get(name)
    if target is None:
        raise AttributeError(f"{type(session).__name__!r} object has no attribute {name!r}")
    part_name, attr = target.split(".")
    part = session.__dict__.get(part_name)  # not getattr: a half-built session must not recurse
    if part is None:
        raise AttributeError(f"{type(session).__name__!r} object has no attribute {name!r}")
    _warn(name, f"session.{target}")
    return getattr(part, attr)


def _warn(name: str, target: str) -> None:
    warnings.warn(
        f"session.{name} moved to {target}; the old name goes in the next release.",
        DeprecationWarning,
        stacklevel=3,
    )
