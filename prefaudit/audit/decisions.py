"""Decisions: the only methods that write a person's choices (selection, focus, weights, verdicts, labels, notes).

Views call these intents and redraw from the traits they assign; nothing else assigns those
traits (a saved session comes back through :meth:`prefaudit.audit.core.AuditCore.restore`). A
part owned by :class:`~prefaudit.audit.core.AuditCore` (``session.decisions``); the session's
verbs ``select_feature``, ``set_focus``, ``set_weight``, ``set_verdict``, ``set_label`` and
``set_note`` delegate to it.

Decisions may name a feature group (``group:<k>``) as well as a feature: it can be selected,
weighted (:mod:`prefaudit.audit.shaping` says what its weight means), given a verdict,
a label or a note. The focus (what the drill-down shows) is always a feature.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .. import ids
from ..errors import ConfigError
from ..shaping import VERDICTS

if TYPE_CHECKING:
    from .core import AuditCore


class Decisions:
    """Decisions a person makes about features (``session.decisions``); each validates, then assigns a trait."""

    def __init__(self, core: AuditCore) -> None:
        self.core = core

    def select(self, feature: int | str, *, focus: bool = True) -> None:
        """Add a feature or group to the selection (if new) and make a feature the drill-down's focus."""
        fid = self.core.space.decision_id(feature)
        if fid not in self.core.selection:
            self.core.selection = [*self.core.selection, fid]
        if focus and not ids.is_group(fid):
            self.core.focus = fid

    def set_selection(self, features: Iterable[int | str]) -> None:
        chosen = list(dict.fromkeys(self.core.space.decision_id(f) for f in features))
        self.core.selection = chosen
        features_only = [f for f in chosen if not ids.is_group(f)]
        if features_only and self.core.focus not in features_only:
            self.core.focus = features_only[0]

    def deselect(self, feature: int | str) -> None:
        fid = self.core.space.decision_id(feature)
        self.core.selection = [f for f in self.core.selection if f != fid]
        if self.core.focus == fid:
            self.core.focus = next((f for f in self.core.selection if not ids.is_group(f)), None)

    def set_focus(self, feature: int | str | None) -> None:
        self.core.focus = None if feature is None else self.core.space.feature_id(feature)

    def set_weight(self, feature: int | str, weight: float) -> None:
        """Reward weight (0 removes it; :mod:`prefaudit.shaping` units). Negative suppresses, positive amplifies.

        ``feature`` may be a group id: its score is weighted as one feature with its own margin
        scale (:mod:`prefaudit.audit.shaping`).
        """
        fid = self.core.space.decision_id(feature)
        weights = {k: v for k, v in self.core.weights.items() if k != fid}
        weights.update(self.checked_weights({fid: weight}))
        self.core.weights = weights

    def checked_weights(self, weights: dict[int | str, float]) -> dict[str, float]:
        """Feature or group id -> finite non-zero weight (zeros dropped; a non-finite weight is an error).

        The one weight check: ``set_weights``, ``predict``, the interventions and training use it.
        """
        new = {}
        for f, w in weights.items():
            fid, w = self.core.space.decision_id(f), float(w)
            if not math.isfinite(w):
                raise ConfigError(f"Weight for {fid} must be a finite number, got {w!r}.")
            if w != 0.0:
                new[fid] = w
        return new

    def set_weights(self, weights: dict[int | str, float]) -> None:
        self.core.weights = self.checked_weights(weights)

    def set_verdict(self, feature: int | str, verdict: str | None) -> None:
        """Record a person's verdict; a weight still at zero (or of the opposite sign) follows it.

        ``suppress`` sets weight −1 and ``amplify`` +1 unless a weight of that sign is already
        set; ``allow`` sets the weight to 0 (the preference is legitimate); ``None`` clears.
        """
        fid = self.core.space.decision_id(feature)
        if verdict is not None and verdict not in VERDICTS:
            raise ConfigError(f"Verdict {verdict!r} for {fid}; choose one of {', '.join(VERDICTS)} or None.")
        self.core.verdicts = {
            **{k: v for k, v in self.core.verdicts.items() if k != fid},
            **({fid: verdict} if verdict else {}),
        }
        w = self.core.weights.get(fid, 0.0)
        if verdict == "suppress" and not w < 0:
            self.set_weight(fid, -1.0)
        elif verdict == "amplify" and not w > 0:
            self.set_weight(fid, 1.0)
        elif verdict == "allow":
            self.set_weight(fid, 0.0)

    def set_label(self, feature: int | str, text: str) -> None:
        fid = self.core.space.decision_id(feature)
        labels = {k: v for k, v in self.core.labels.items() if k != fid}
        if text:
            labels[fid] = str(text)
        self.core.labels = labels
        if self.core.results is not None:
            self.core.results.loc[self.core.results["feature"] == fid, "label"] = self.core.label(fid)
            self.core.results_version += 1

    def set_note(self, feature: int | str, text: str) -> None:
        fid = self.core.space.decision_id(feature)
        notes = {k: v for k, v in self.core.notes.items() if k != fid}
        if text:
            notes[fid] = str(text)
        self.core.notes = notes
