"""Standalone HTML report of an audit: opens offline, loads nothing from the network.

Contents: what was audited, how well the SAE reconstructs this data (a warning below explained
variance 0.7), the volcano (a static plotly figure with plotly.js inlined), the strongest
features in both directions, feature groups (with their controlled effects), prompt topics and
the effects that live in some topics only, the pairs that drive the strongest signals, example
snippets (top pairs of the top features with the peak token marked), and the person's decisions
(weights with their predicted effect, verdicts, notes). Groups, topics and the fit are computed
when the session has not yet (``compute=``), else said to be skipped and why. All dataset text
is escaped with :func:`html.escape`.

The report needs no notebook: it draws with the pure :mod:`prefaudit.views.figures` and never
imports a widget module (nor ipywidgets / anywidget).

=====================  ==============================================================
``document``           :func:`write_report`: the page, its stylesheet and its layout
``sections``           the parts: feature tables, example snippets, decisions, volcano
``concepts``           groups, topics, drivers, fit: gathered (or computed) once, and as JSON
``concept_sections``   their HTML
=====================  ==============================================================

Example
-------
>>> session.test()                               # doctest: +SKIP
>>> session.report("audit.html")                 # doctest: +SKIP
PosixPath('audit.html')
"""

from __future__ import annotations

from .document import write_report

__all__ = ["write_report"]
