"""Feature ids and the significance threshold: the one place that defines them.

Every feature of an audit has a string id: ``sae:<index>`` for an SAE latent and
``concept:<name>`` for a text or direction concept; a group of SAE features
(:mod:`prefaudit.features.groups`) is ``group:<k>``. People may also write ``17``, ``"17"`` or
``"length"``; :func:`normalize` turns any of those into an id (a bare string is a concept name;
a group id is refused there, a group is not a feature). Nothing else in prefaudit builds or
parses ids by hand.

Example
-------
>>> from prefaudit import ids
>>> ids.sae_id(12), ids.concept_id("length")
('sae:12', 'concept:length')
>>> ids.parse("sae:12"), ids.parse("concept:length"), ids.parse(ids.group_id(3))
(('sae', 12), ('concept', 'length'), ('group', 3))
>>> ids.normalize("17"), ids.normalize("flattery"), ids.normalize(3)
('sae:17', 'concept:flattery', 'sae:3')
"""

from __future__ import annotations

import numbers
from typing import Any

from .errors import ConfigError

SAE_PREFIX = "sae:"
CONCEPT_PREFIX = "concept:"
GROUP_PREFIX = "group:"

#: Features with Benjamini–Hochberg q below this are "significant" (tables, volcano, report, CLI).
ALPHA = 0.05


def sae_id(index: int) -> str:
    return f"{SAE_PREFIX}{int(index)}"


def concept_id(name: str) -> str:
    return f"{CONCEPT_PREFIX}{name}"


def group_id(k: int) -> str:
    return f"{GROUP_PREFIX}{int(k)}"


def is_sae(fid: str) -> bool:
    return isinstance(fid, str) and fid.startswith(SAE_PREFIX)


def is_concept(fid: str) -> bool:
    return isinstance(fid, str) and fid.startswith(CONCEPT_PREFIX)


def is_group(fid: str) -> bool:
    return isinstance(fid, str) and fid.startswith(GROUP_PREFIX)


def parse(fid: str) -> tuple[str, int | str]:
    """``"sae:12"`` -> ``("sae", 12)``; ``"concept:length"`` -> ``("concept", "length")``; ``"group:3"`` -> ``("group", 3)``."""
    if is_sae(fid) or is_group(fid):
        prefix = SAE_PREFIX if is_sae(fid) else GROUP_PREFIX
        rest = fid[len(prefix) :]
        if rest.isdigit():
            return prefix[:-1], int(rest)
    elif is_concept(fid) and len(fid) > len(CONCEPT_PREFIX):
        return "concept", fid[len(CONCEPT_PREFIX) :]
    raise ConfigError(f"{fid!r} is not an id (sae:<index>, concept:<name> or group:<k>).")


def sae_index(fid: str) -> int:
    """The SAE latent of an ``sae:`` id (a concept id is an error)."""
    kind, value = parse(fid)
    if kind != "sae":
        raise ConfigError(f"{fid!r} is a {kind}, not an SAE feature.")
    return int(value)


def concept_name(fid: str) -> str:
    """The name of a ``concept:`` id (an SAE id is an error)."""
    kind, value = parse(fid)
    if kind != "concept":
        raise ConfigError(f"{fid!r} is {'an SAE feature' if kind == 'sae' else 'a group'}, not a concept.")
    return str(value)


def normalize(feature: Any) -> str:
    """``17``, ``"17"``, ``"sae:17"``, ``"length"`` or ``"concept:length"`` -> an id (syntax only).

    Whether the feature exists is the session's question (``session.space.feature_id``). A
    ``group:<k>`` id names a group of features, not a feature: it is refused here, so that no
    per-feature query mistakes it for one (``session.groups.scores`` and ``session.groups.explained_by``
    take group ids).
    """
    if isinstance(feature, bool):
        raise ConfigError(f"A feature is an SAE index or a concept name, not {feature!r}.")
    if isinstance(feature, numbers.Integral):
        return sae_id(int(feature))
    if isinstance(feature, str) and is_group(feature):
        raise ConfigError(
            f"{feature!r} is a feature group, not a feature: ask session.groups(), "
            "session.groups.scores() or session.groups.explained_by() about it."
        )
    if isinstance(feature, str) and feature:
        if is_sae(feature) or is_concept(feature):
            parse(feature)
            return feature
        if feature.isdigit():
            return SAE_PREFIX + feature
        return CONCEPT_PREFIX + feature
    raise ConfigError(f"A feature is an SAE index or a concept name, not {feature!r}.")


def candidates(feature: str | int) -> list[str]:
    """Ids a loose name may mean, most specific first (``"12"`` -> ``["12", "concept:12", "sae:12"]``)."""
    text = str(feature)
    return [text, CONCEPT_PREFIX + text, SAE_PREFIX + text]
