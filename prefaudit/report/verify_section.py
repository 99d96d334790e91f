"""The report's section on trained runs: did each policy's generations move where the audit predicted?

For every run of the session that was verified (``run.verification``): the figure that leads the
verify view (predicted against observed concept shift in the policy's own generations, identity
and fitted line, 95% intervals, outliers named), its one-sentence reading, the agreement rows of
every channel and level with the label-only baselines, the planted concepts' rates and the drift.
Nothing is computed here: the section renders the :class:`~prefaudit.verify.VerifyResult` objects.

Example
-------
>>> html = verify_html(session)          # "" when no run was verified   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from ..views.verify_view import agreement_html, concept_shift_figure, drift_html, planted_html, shift_sentence
from .sections import esc


def verified_runs(session: Any) -> list[Any]:
    """The session's runs that carry a verification, in the order they were started."""
    return [
        r.verification for r in getattr(session, "runs", []) if getattr(r, "verification", None) is not None
    ]


def run_html(result: Any) -> str:
    """One run: figure, sentence, agreement, planted concepts and drift."""
    return (
        f"<div class='pa-run'><h3>{esc(result.run_name)} ({esc(result.intervention)})</h3>"
        f"{concept_shift_figure(result)}<p>{esc(shift_sentence(result))}</p>"
        f"{agreement_html(result.agreement)}{planted_html(result)}{drift_html(result)}</div>"
    )


def verify_html(session: Any) -> str:
    """The section (an ``<h2>`` and one block per verified run); empty when no run was verified."""
    results = verified_runs(session)
    if not results:
        return ""
    return (
        "<h2>What DPO learned</h2><p class='small'>Each trained policy against the audit's prediction: "
        "the shift of every concept in the policy's own generations on held-out prompts, and what its "
        "implicit reward learned beyond the labels.</p>" + "".join(run_html(r) for r in results)
    )
