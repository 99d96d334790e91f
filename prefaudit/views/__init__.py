"""Notebook views of an :class:`~prefaudit.session.AuditSession`.

Every view observes the session and sends intents up to it; none holds state of its own, so a
view displayed twice, or several views of one session, always agree.

========================  ==============================================================
``session.volcano()``     :class:`VolcanoView` — effect size vs −log10 q; click / lasso /
                          search select features
``session.drilldown(f)``      :class:`PairsView` — top pairs of the focused (or pinned) feature,
                          tokens shaded by activation
``session.shaper()``      :class:`ShaperView` — weight sliders, verdicts, notes, live preview
``session.topic_heatmap()`` :class:`TopicHeatmapView` — d_z of the strongest features per
                          prompt topic; a click drills down on that topic's pairs
``session.drivers_view()`` :class:`DriversView` — the pairs that drive a feature's signal,
                          exclude / flip / restore / export, what-if preview
``session.dashboard()``   :class:`Dashboard` — all of them, linked, under the lens fit
========================  ==============================================================

New views subclass :class:`SessionView` (``prefaudit/views/base.py``).

DOM hooks (stable: browser tests and user CSS rely on them)
-----------------------------------------------------------
Volcano
    root ``.prefaudit-volcano``; search box ``.pa-search`` (the ipywidgets Text: type into
    ``.pa-search input`` and press Enter); several matches fill ``.pa-search-matches``; the
    plotly figure inside it (traces 0–2 are the features; clicking a point selects it).
Drill-down
    root ``.prefaudit-pairs``; inside: ``.pa-feature`` (the feature id, text),
    ``select.pa-sort`` (values ``abs_delta``, ``delta``, ``chosen``, ``rejected``),
    ``button.pa-prev`` / ``button.pa-next``, ``button.pa-pin``, ``.pa-page``, ``.pa-legend``
    (``data-kind`` = ``sae`` | ``regex`` | ``none``), pair cards ``.pa-pair[data-pair-id]`` each
    with ``.pa-prompt`` and ``.pa-side.pa-chosen`` / ``.pa-side.pa-rejected`` holding the text;
    token spans ``.pa-tok[data-act]`` (activation, or 1/0 for a regex match); the higher side
    shows ``.pa-higher``; long texts have ``button.pa-more``. ``.pa-pairs[data-version]``
    changes on every page load.
Shaper
    root ``.prefaudit-shaper``; rows ``.pa-weight-row[data-feature="<id>"]`` each containing the
    ipywidgets slider (``.pa-weight``, drag its ``.noUi-handle``), the verdict toggle
    (``.pa-verdict`` buttons allow / suppress / amplify), the note (``.pa-note input``) and
    ``.pa-remove``; the add box ``.pa-add input``; the preview root ``.pa-preview`` whose
    ``data-version`` increments on every redraw (``data-model-version`` mirrors Python's
    counter), with ``.pa-dominated[data-count]`` (pairs with margin ≤ −τ) and, when margins hit
    the cap, ``.pa-capped[data-count]``.
Topic heatmap
    root ``.prefaudit-heatmap``; the plotly figure inside it (trace 0 the heatmap, x = topic
    column, y = feature row; clicking a cell sets the topic filter and the focus; trace 1 rings
    the current cell); ``.pa-heatmap-filter`` says which pairs the drill-down shows (with
    ``.pa-heatmap-words`` and ``.pa-heatmap-count[data-count]``); ``button.pa-heatmap-clear``
    clears the filter; without a topic table, ``button.pa-heatmap-compute`` runs the tests.
Drivers
    root ``.prefaudit-drivers``; ``.pa-drivers-k input`` (how many drivers), buttons
    ``.pa-drivers-exclude`` / ``-flip`` / ``-restore`` / ``-export`` (acting on exactly the
    listed pairs), ``.pa-drivers-path input`` (export file), ``.pa-drivers-preview-line``
    (``data-signal``, ``data-excluded``, ``data-flipped``), table rows
    ``tr.pa-driver[data-pair-id][data-edit]``, ``.pa-drivers-edits[data-count]``,
    ``.pa-drivers-said`` (what the last button did).
Dashboard
    root ``.prefaudit-dashboard`` containing the roots above, and ``button.pa-plan-button``
    which fills ``.pa-plan`` with the training plan's counts (``.pa-plan-summary``) for a run with
    the default config and the current weights. The header ``.pa-lens`` shows the SAE's fit
    (``.pa-lens-fit[data-ev]``; ``.pa-lens-warning`` below EV 0.7; ``.pa-lens-none`` for a
    concepts-only audit; ``button.pa-lens-button`` when not measured). ``button.pa-heatmap-button``
    builds the heatmap when the per-topic tests have not run.
Run panel
    root ``.prefaudit-run-panel``; the training plan's counts line ``.pa-run-plan`` (trained,
    held out, dropped by length, not sampled, responses and prompts cut), ``.pa-run-metrics``
    (the metrics table) and ``button.pa-run-stop``.
Errors
    a failing callback shows ``.pa-error`` (message and traceback) at the top of its view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Dashboard",
    "DriversView",
    "PairsView",
    "SessionView",
    "ShaperView",
    "TopicHeatmapView",
    "VolcanoView",
]

# Public name -> submodule that defines it. Every view imports ipywidgets (and plotly or
# anywidget): load it on first use, not with the package, so that the pure
# ``prefaudit.views.figures`` (used by the static report) imports without a widget library.
_LAZY = {
    "SessionView": "base",
    "VolcanoView": "volcano",
    "PairsView": "drilldown",
    "ShaperView": "shaper",
    "Dashboard": "dashboard",
    "TopicHeatmapView": "heatmap",
    "DriversView": "drivers_view",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'prefaudit.views' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from .base import SessionView
    from .dashboard import Dashboard
    from .drilldown import PairsView
    from .drivers_view import DriversView
    from .heatmap import TopicHeatmapView
    from .shaper import ShaperView
    from .volcano import VolcanoView
