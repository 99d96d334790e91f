"""``AuditState``: what the stages above the core may ask of a session — the type of every ``session`` parameter.

Interventions, views, training, verification and the report take the session they serve as a
parameter; this protocol names what they may use: the state (data, features, results, the
decisions as traits), the parts that compute from it and a few verbs. It is a
:class:`typing.Protocol`, so :class:`~prefaudit.audit.core.AuditCore` (and the
:class:`~prefaudit.session.AuditSession` facade) satisfy it without inheriting from it, and a
stage never imports the facade above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from ..features.encoded import EncodedFeatures
    from ..features.matrix import FeatureMatrix
    from ..pairs import PreferencePairs
    from .decisions import Decisions
    from .drivers import Drivers
    from .fit import LensFit
    from .groups import Groups
    from .pair_edits import PairEdits
    from .shaping import Shaping
    from .space import FeatureSpace
    from .topics import Topics
    from .versions import Versions


class AuditState(Protocol):
    """A session as the stages above the core see it (:class:`~prefaudit.audit.core.AuditCore`)."""

    # state
    data: PreferencePairs
    config: dict[str, Any]
    concepts: list[Any]
    encoded: EncodedFeatures | None
    results: pd.DataFrame | None
    auto_labels: dict[str, str]
    runs: list[Any]
    cache_dir: Path | None
    versions: Versions
    # decisions (traits: views observe them)
    selection: list[str]
    focus: str | None
    weights: dict[str, float]
    verdicts: dict[str, str]
    labels: dict[str, str]
    notes: dict[str, str]
    pair_edits: dict[Any, str]
    topic_filter: int | None
    results_version: int
    status: str
    # parts
    space: FeatureSpace
    groups: Groups
    topics: Topics
    shaping: Shaping
    drivers: Drivers
    edits: PairEdits
    lens_fit: LensFit
    decisions: Decisions

    @property
    def uses_sae(self) -> bool: ...

    @property
    def backbone(self) -> Any: ...

    @property
    def sae(self) -> Any: ...

    @property
    def tokenizer(self) -> Any: ...

    @property
    def feature_ids(self) -> list[str]: ...

    @property
    def matrix(self) -> FeatureMatrix: ...

    def encode(self, *, progress: bool = True, share_prompt: bool = True) -> EncodedFeatures | None: ...

    def test(self, test: str = "wilcoxon", **kwargs: Any) -> pd.DataFrame: ...

    def significant(self, q: float = ...) -> pd.DataFrame: ...

    def require_results(self) -> pd.DataFrame: ...

    def label(self, feature: int | str) -> str: ...

    def concept(self, feature: int | str) -> Any: ...

    def stage_cache(self, name: str) -> dict[str, Any]: ...
