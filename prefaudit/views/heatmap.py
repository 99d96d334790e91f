"""Topic heatmap: the strongest features' effect within each prompt topic; a click drills down.

Cells are ``d_z`` of a feature on one topic's pairs, from ``session.test(by="topic")`` (a ✱ marks
q < α, BH over every topic × feature test; grey: no non-zero Δ there). Clicking a cell sends two
intents: ``session.topics.set_filter(topic)`` and ``session.set_focus(feature)``; the drill-down
(which ranks pairs through ``session.space.top_pairs``, restricted by the filter) then shows that
feature on that topic's pairs. "all topics" clears the filter. The ringed cell is the current
focus × filter. Figures: :mod:`prefaudit.views.topic_figures`.

Example
-------
>>> session.topics()                     # choose the topics (defaults: auto k ≤ 8)   # doctest: +SKIP
>>> view = session.topic_heatmap()        # runs test(by="topic") if it has not run  # doctest: +SKIP
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import ipywidgets as w
import numpy as np

from .. import ids
from .base import SessionView
from .topic_figures import TopicGrid, heatmap_layout, heatmap_trace, row_ticks, topic_grid

#: Trace 1 rings the cell of the current focus × topic filter.
CURRENT_TRACE = 1


class TopicHeatmapView(SessionView):
    """Topic × feature heatmap of ``d_z``; click a cell to see that feature on that topic's pairs.

    Parameters
    ----------
    session : AuditSession
    n_features : int
        Rows: the features with a significant cell first, then by their largest |d_z| in a topic.
    features : sequence of feature ids, optional
        Show exactly these rows instead.
    alpha : float
        q threshold of the ✱ mark.
    compute : bool
        Run ``session.test(by="topic")`` now when no topic table is stored (else a button does).

    Attributes
    ----------
    figure : plotly.graph_objects.FigureWidget or None
        Trace 0 is the heatmap (x = topic column, y = feature row), trace 1 the current-cell ring.
    grid : TopicGrid or None
    """

    css_class = "prefaudit-heatmap"

    def __init__(
        self,
        session: Any,
        *,
        n_features: int = 12,
        features: Sequence[int | str] | None = None,
        alpha: float = ids.ALPHA,
        compute: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(session, **kwargs)
        self.n_features = int(n_features)
        self.features = None if features is None else [self.session.space.feature_id(f) for f in features]
        self.alpha = float(alpha)
        self.figure: Any = None
        self.grid: TopicGrid | None = None
        self.filter_line = w.HTML()
        self.filter_line.add_class("pa-heatmap-filter")
        self.clear_button = w.Button(description="all topics", tooltip="session.topics.set_filter(None)")
        self.clear_button.add_class("pa-heatmap-clear")
        self.clear_button.on_click(self.guard(lambda _b: self.session.topics.set_filter(None)))
        self.compute_button = w.Button(description="Test by topic", tooltip='session.test(by="topic")')
        self.compute_button.add_class("pa-heatmap-compute")
        self.compute_button.on_click(self.guard(self._compute))
        self.observe_session(self._on_current, "focus", "topic_filter")
        self.observe_session(self._on_labels, "labels")
        if self.session.topics.results("topic") is None and compute:
            self.session.test(by="topic")
        self.refresh()

    # ------------------------------------------------------------------ drawing
    def refresh(self) -> None:
        """Redraw from the stored topic table (after ``session.test(by="topic")`` ran again)."""
        long = self.session.topics.results("topic")
        footer = w.HBox([self.clear_button, self.filter_line], layout=w.Layout(align_items="center"))
        if long is None:
            if self.figure is not None:
                self.figure.close()
            self.figure, self.grid = None, None
            note = w.HTML("No per-topic tests yet: <code>session.test(by='topic')</code> runs them.")
            self.set_body(w.HBox([self.compute_button, note], layout=w.Layout(align_items="center")))
            return
        from .plotly_widget import FigureWidget  # plotly's, drawn from its first state (see there)

        if self.figure is not None:
            self.figure.close()

        self.grid = topic_grid(long, n_features=self.n_features, features=self.features, alpha=self.alpha)
        self._relabel()
        ring = {
            "type": "scatter",
            "mode": "markers",
            "x": [],
            "y": [],
            "hoverinfo": "skip",
            "showlegend": False,
            "marker": {"symbol": "square-open", "size": 24, "color": "#ff7f0e", "line": {"width": 3}},
        }
        # Data and layout go to the constructor (layout set later is missing from saved state).
        self.figure = FigureWidget(data=[heatmap_trace(self.grid), ring], layout=heatmap_layout(self.grid))
        self.figure.data[0].on_click(self.guard(self._on_click))
        self.set_body(self.figure, footer)
        self._on_current()

    def cell_at(self, row: int, col: int) -> tuple[str, int]:
        """(feature id, topic) of the cell in row ``row`` and column ``col``."""
        if self.grid is None:
            raise RuntimeError("The heatmap has no topic table yet.")
        return self.grid.cell(row, col)

    # ------------------------------------------------------------------ intents
    def _on_click(self, _trace: Any, points: Any, _state: Any) -> None:
        if not points.xs or self.grid is None:
            return
        fid, topic = self.cell_at(round(float(points.ys[0])), round(float(points.xs[0])))
        self.session.topics.set_filter(topic)
        self.session.set_focus(fid)

    def _compute(self, _button: Any = None) -> None:
        self.session.test(by="topic")
        self.refresh()

    # ------------------------------------------------------------------ state from the session
    def _on_current(self, _change: Any = None) -> None:
        topic, focus = self.session.topic_filter, self.session.focus
        grid = self.grid
        if grid is None:
            return
        if topic is None:
            self.filter_line.value = "drill-down: all pairs"
        else:
            j = grid.topics.index(topic) if topic in grid.topics else None
            words = grid.topic_labels[j] if j is not None else ""
            n = len(self.session.topics.filtered_positions())
            self.filter_line.value = (
                f"drill-down: topic {topic} · <span class='pa-heatmap-words'>{html.escape(words)}</span>"
                f" · <span class='pa-heatmap-count' data-count='{n}'>{n} pairs</span>"
            )
        row = grid.features.index(focus) if focus in grid.features else None
        col = grid.topics.index(topic) if topic in grid.topics else None
        hit = row is not None and col is not None
        with self.figure.batch_update():
            self.figure.data[CURRENT_TRACE].x = np.array([col] if hit else [], dtype=float)
            self.figure.data[CURRENT_TRACE].y = np.array([row] if hit else [], dtype=float)

    def _on_labels(self, _change: Any) -> None:
        if self.grid is not None and self.figure is not None:
            self._relabel()
            self.figure.layout.yaxis.ticktext = row_ticks(self.grid)

    def _relabel(self) -> None:
        assert self.grid is not None
        self.grid.feature_labels = [self.session.label(f) for f in self.grid.features]
